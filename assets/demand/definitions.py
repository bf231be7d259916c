"""Everything the demand domain brings to the code location, for the deployment's source (its
frequency fixes the partitions; a live feed gets an ingest schedule)."""

from dagster import Definitions

from assets.demand import forecasting, forecasts, intake, jobs, roi, schedules
from ml.data.sources import DemandSource


def demand_definitions(source: DemandSource) -> Definitions:
    return Definitions(
        assets=[
            *intake.build_demand_assets(source),
            intake.calendar_days,
            forecasting.demand_backtests,
            forecasting.demand_forecaster,
            forecasting.demand_forecaster_promotion,
            roi.demand_forecaster_roi,
            forecasts.demand_forecasts,
            forecasts.demand_forecast_errors,
        ],
        jobs=[jobs.demand_ingest_job, jobs.demand_models_job, jobs.demand_forecast_job],
        schedules=[
            *schedules.build_demand_schedules(source),
            schedules.demand_forecast_schedule,
            schedules.monthly_demand_retraining_schedule,
        ],
    )
