"""Schedules of the request domain."""

from dagster import (
    DefaultScheduleStatus,
    ScheduleDefinition,
)

from assets.requests.jobs import labeled_requests_job, lineage_snapshot_job, request_retraining_job

labeled_requests_schedule = ScheduleDefinition(
    name="labeled_requests_schedule",
    job=labeled_requests_job,
    cron_schedule="0 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly: reviews finished in Label Studio become labels (a new version if any).",
)


monthly_request_retraining_schedule = ScheduleDefinition(
    name="monthly_request_retraining_schedule",
    job=request_retraining_job,
    cron_schedule="0 3 1 * *",
    default_status=DefaultScheduleStatus.RUNNING,
    tags={"mlops/trigger": "monthly schedule"},
    description="Monthly: retrain the request classifiers on the current labels, gate, package.",
)


lineage_snapshot_schedule = ScheduleDefinition(
    name="lineage_snapshot_schedule",
    job=lineage_snapshot_job,
    cron_schedule="30 2 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    tags={"mlops/trigger": "daily schedule"},
    description=(
        "Daily at 02:30: snapshot the lineage tables (test versions, label versions, split "
        "assignments, annotation history) to Parquet under the data home."
    ),
)
