"""Schedules of monitoring: the hourly drift check and the daily demand error."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from assets.monitoring.drift import window_partition_key
from assets.monitoring.jobs import demand_drift_job, monitoring_job
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


demand_drift_schedule = ScheduleDefinition(
    name="demand_drift_schedule",
    job=demand_drift_job,
    cron_schedule="30 6 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily at 06:30, after the forecasts: the champion's realized error as drift.",
)
