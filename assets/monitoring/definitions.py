"""Everything monitoring brings to the code location."""

from dagster import Definitions

from assets.monitoring import dashboards, drift, image_drift, jobs, retention, schedules, sensors

definitions = Definitions(
    assets=[
        drift.prediction_logs,
        drift.reference_profiles,
        drift.serving_profiles,
        drift.drift_report,
        drift.demand_forecast_drift,
        image_drift.defect_image_reference,
        image_drift.defect_image_drift,
        dashboards.request_dashboard,
        dashboards.defect_dashboard,
        dashboards.demand_dashboard,
    ],
    jobs=[
        jobs.monitoring_job,
        jobs.defect_monitoring_job,
        jobs.demand_drift_job,
        retention.retention_job,
        jobs.dashboards_job,
        jobs.model_roi_job,
    ],
    schedules=[
        schedules.monitoring_schedule,
        schedules.defect_monitoring_schedule,
        schedules.demand_drift_schedule,
        retention.retention_schedule,
        schedules.dashboards_schedule,
    ],
    sensors=[sensors.drift_sensor, sensors.defect_drift_sensor, sensors.demand_drift_sensor],
)
