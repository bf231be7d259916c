"""Schedules: the platform's clock."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets.monitoring import window_partition_key
from ml.data.sources import DemandSource
from ml.monitoring.prediction_log import WINDOW
from orchestration.jobs import (
    demand_drift_job,
    demand_forecast_job,
    demand_models_job,
    labeled_requests_job,
    lineage_snapshot_job,
    monitoring_job,
    request_retraining_job,
)


def build_demand_schedules(
    source: DemandSource, demand_ingest_job: UnresolvedAssetJobDefinition
) -> list[ScheduleDefinition]:
    """A live feed is ingested as each period closes; a historical file has nothing to wait for."""
    if source.end is not None:
        return []
    return [build_schedule_from_partitioned_job(demand_ingest_job, name="demand_ingest_schedule")]


labeled_requests_schedule = ScheduleDefinition(
    name="labeled_requests_schedule",
    job=labeled_requests_job,
    cron_schedule="0 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly: reviews finished in Label Studio become labels (a new version if any).",
)

demand_forecast_schedule = ScheduleDefinition(
    name="demand_forecast_schedule",
    job=demand_forecast_job,
    cron_schedule="0 6 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Daily at 06:00: fresh forecasts from the current demand champion, and the realized "
        "error of earlier forecasts whose actuals have arrived."
    ),
)


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

monthly_request_retraining_schedule = ScheduleDefinition(
    name="monthly_request_retraining_schedule",
    job=request_retraining_job,
    cron_schedule="0 3 1 * *",
    default_status=DefaultScheduleStatus.RUNNING,
    tags={"mlops/trigger": "monthly schedule"},
    description="Monthly: retrain the request classifiers on the current labels, gate, package.",
)

monthly_demand_retraining_schedule = ScheduleDefinition(
    name="monthly_demand_retraining_schedule",
    job=demand_models_job,
    cron_schedule="0 4 1 * *",
    default_status=DefaultScheduleStatus.RUNNING,
    tags={"mlops/trigger": "monthly schedule"},
    description="Monthly: backtest and refit the demand forecasters, gate, forecast.",
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
