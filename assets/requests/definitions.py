"""Everything the request domain brings to the code location."""

from dagster import Definitions

from assets.requests import (
    annotation,
    datasets,
    erasure,
    intake,
    jobs,
    labels,
    lineage,
    models,
    roi,
    schedules,
    sensors,
)

definitions = Definitions(
    assets=[
        intake.raw_requests,
        intake.validate_requests,
        annotation.annotation_candidates,
        annotation.annotation_batch,
        annotation.annotated_batch,
        labels.labeled_requests,
        datasets.request_test_set,
        lineage.lineage_snapshot,
        models.request_baseline,
        models.request_tuned_linear,
        models.request_classifier,
        models.request_ensemble,
        models.request_classifier_promotion,
        roi.request_classifier_roi,
    ],
    jobs=[
        jobs.request_ingest_job,
        jobs.annotation_candidates_job,
        jobs.annotation_batch_job,
        jobs.annotated_batch_job,
        jobs.labeled_requests_job,
        jobs.request_models_job,
        jobs.request_retraining_job,
        jobs.lineage_snapshot_job,
        erasure.erasure_job,
    ],
    schedules=[
        schedules.labeled_requests_schedule,
        schedules.monthly_request_retraining_schedule,
        schedules.lineage_snapshot_schedule,
    ],
    sensors=[
        sensors.request_drop_sensor,
        sensors.annotation_batch_sensor,
        sensors.annotation_complete_sensor,
    ],
)
