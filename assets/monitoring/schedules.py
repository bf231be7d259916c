"""Schedules of monitoring: the hourly drift checks and the daily demand error."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from assets.monitoring.drift import reference_pointer, window_partition_key
from assets.monitoring.image_drift import IMAGES
from assets.monitoring.jobs import (
    dashboards_job,
    defect_monitoring_job,
    demand_drift_job,
    monitoring_job,
)
from assets.resources import Monitoring
from ml.data import objects
from ml.monitoring.prediction_log import WINDOW


@schedule(
    job=monitoring_job,
    cron_schedule="5 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly, five minutes past: profile the hour that just ended and score its drift.",
)
def monitoring_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    key = window_partition_key(context.scheduled_execution_time - WINDOW)
    return RunRequest(run_key=key, partition_key=key)


@schedule(
    job=defect_monitoring_job,
    cron_schedule="10 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly, ten minutes past: measure the images inspected in the hour that just ended "
        "and score their drift (skipped until defect_image_reference exists)."
    ),
)
def defect_monitoring_schedule(
    context: ScheduleEvaluationContext, monitoring: Monitoring
) -> RunRequest | SkipReason:
    if not objects.exists(reference_pointer(monitoring, IMAGES)):
        return SkipReason("no image reference yet: materialize defect_image_reference")
    key = window_partition_key(context.scheduled_execution_time - WINDOW)
    return RunRequest(run_key=key, partition_key=key)


demand_drift_schedule = ScheduleDefinition(
    name="demand_drift_schedule",
    job=demand_drift_job,
    cron_schedule="30 6 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily at 06:30, after the forecasts: the champion's realized error as drift.",
)


dashboards_schedule = ScheduleDefinition(
    name="dashboards_schedule",
    job=dashboards_job,
    cron_schedule="20 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly, twenty past (after the drift checks): refresh the monitoring pages.",
)
