"""Jobs of monitoring: an hour of traffic profiled and scored, and the demand champion's
realized error."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from assets.monitoring.drift import (
    demand_forecast_drift,
    drift_report,
    monitoring_windows,
    serving_profiles,
)

monitoring_job = define_asset_job(
    "monitoring_job",
    selection=AssetSelection.assets(serving_profiles, drift_report),
    partitions_def=monitoring_windows,
    description="Profile one hour of served traffic with whylogs and score its drift.",
)


demand_drift_job = define_asset_job(
    "demand_drift_job",
    selection=AssetSelection.assets("demand_forecast_errors", demand_forecast_drift),
    description="Realized forecast error of the demand champion against its threshold.",
)
