"""Schedules of the demand domain."""

from dagster import (
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
)

from assets.demand.jobs import demand_forecast_job, demand_ingest_job, demand_models_job
from ml.data.sources import DemandSource


def build_demand_schedules(source: DemandSource) -> list[ScheduleDefinition]:
    """A live feed is ingested as each period closes; a historical file has nothing to wait for."""
    if source.end is not None:
        return []
    return [build_schedule_from_partitioned_job(demand_ingest_job, name="demand_ingest_schedule")]


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


monthly_demand_retraining_schedule = ScheduleDefinition(
    name="monthly_demand_retraining_schedule",
    job=demand_models_job,
    cron_schedule="0 4 1 * *",
    default_status=DefaultScheduleStatus.RUNNING,
    tags={"mlops/trigger": "monthly schedule"},
    description="Monthly: backtest and refit the demand forecasters, gate, forecast.",
)
