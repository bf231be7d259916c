"""Everything the defect-inspection domain brings to the code location."""

from dagster import Definitions

from assets.defects import intake, jobs, models, sensors

definitions = Definitions(
    assets=[
        intake.raw_defect_images,
        intake.validate_defect_images,
        models.defect_test_set,
        models.defect_baseline,
        models.defect_cnn,
        models.defect_classifier_promotion,
    ],
    jobs=[jobs.defect_ingest_job, jobs.defect_training_job],
    sensors=[sensors.defect_drop_sensor],
)
