"""Everything the defect-inspection domain brings to the code location."""

from dagster import Definitions

from assets.defects import annotation, intake, jobs, models, roi, sensors

definitions = Definitions(
    assets=[
        intake.raw_defect_images,
        intake.validate_defect_images,
        models.defect_test_set,
        models.defect_baseline,
        models.defect_cnn,
        models.defect_classifier_promotion,
        roi.defect_classifier_roi,
        annotation.defect_annotation_candidates,
        annotation.defect_annotation_batch,
        annotation.defect_annotated_batch,
        annotation.labeled_defect_images,
    ],
    jobs=[
        jobs.defect_ingest_job,
        jobs.defect_training_job,
        jobs.defect_annotation_candidates_job,
        jobs.defect_annotation_batch_job,
        jobs.defect_annotated_batch_job,
        jobs.labeled_defect_images_job,
        jobs.defect_retraining_job,
    ],
    sensors=[
        sensors.defect_drop_sensor,
        sensors.defect_annotation_batch_sensor,
        sensors.defect_annotation_complete_sensor,
    ],
)
