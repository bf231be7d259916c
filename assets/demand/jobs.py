"""Jobs of the demand domain: ingest, models, forecasts."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from assets.demand.forecasting import (
    demand_backtests,
    demand_forecaster,
    demand_forecaster_promotion,
)
from assets.demand.forecasts import demand_forecast_errors, demand_forecasts
from assets.demand.intake import STORE_ATTRIBUTES_TABLE
from assets.demand.roi import demand_forecaster_roi

demand_ingest_job = define_asset_job(
    "demand_ingest_job",
    selection=AssetSelection.assets("raw_demand", "validated_demand", "quarantine_demand"),
    description="Read the demand source for the selected periods and validate them.",
)


demand_models_job = define_asset_job(
    "demand_models_job",
    selection=AssetSelection.assets(
        STORE_ATTRIBUTES_TABLE,
        demand_backtests,
        demand_forecaster,
        demand_forecaster_promotion,
        demand_forecaster_roi,
        demand_forecasts,
        demand_forecast_errors,
    ),
    description=(
        "Read the store attributes, backtest every forecasting model, register the best and "
        "the best baseline, gate the champion, forecast with it and score earlier forecasts "
        "against arrived actuals."
    ),
)


demand_forecast_job = define_asset_job(
    "demand_forecast_job",
    selection=AssetSelection.assets(demand_forecasts, demand_forecast_errors),
    description="Fresh forecasts from the current champion, and the realized error so far.",
)
