"""Jobs of monitoring: an hour of traffic (requests, inspected images) profiled and scored,
and the demand champion's realized error."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from assets.monitoring.dashboards import PAGES
from assets.monitoring.drift import (
    demand_forecast_drift,
    drift_report,
    monitoring_windows,
    serving_profiles,
)
from assets.monitoring.image_drift import defect_image_drift

monitoring_job = define_asset_job(
    "monitoring_job",
    selection=AssetSelection.assets(serving_profiles, drift_report),
    partitions_def=monitoring_windows,
    description="Profile one hour of served traffic with whylogs and score its drift.",
)

defect_monitoring_job = define_asset_job(
    "defect_monitoring_job",
    selection=AssetSelection.assets(defect_image_drift),
    description="Measure one hour of inspected images, profile them with whylogs, score drift.",
)


demand_drift_job = define_asset_job(
    "demand_drift_job",
    selection=AssetSelection.assets("demand_forecast_errors", demand_forecast_drift),
    description="Realized forecast error of the demand champion against its threshold.",
)

dashboards_job = define_asset_job(
    "dashboards_job",
    selection=AssetSelection.assets(*PAGES),
    description="Refresh each domain's monitoring page: traffic, errors, latency, drift, ROI.",
)

model_roi_job = define_asset_job(
    "model_roi_job",
    selection=AssetSelection.assets(
        "request_classifier_roi", "defect_classifier_roi", "demand_forecaster_roi"
    ),
    description="Price every domain's models again (after the business case changed, say).",
)
