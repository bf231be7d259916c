"""Schedules: the platform's clock."""

from dagster import DefaultScheduleStatus, ScheduleDefinition, build_schedule_from_partitioned_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ml.sources import DemandSource
from orchestration.jobs import demand_forecast_job, labeled_requests_job


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
