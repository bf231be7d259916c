"""The one code location: assets of every domain, their checks, jobs, schedules, sensors and
resources, merged here and nowhere else."""

from dagster import Definitions

from assets.annotation import (
    annotated_batch,
    annotation_batch,
    annotation_candidates,
    labeled_requests,
)
from assets.demand import build_demand_assets, calendar_days
from assets.forecasting import (
    demand_backtests,
    demand_forecast_errors,
    demand_forecaster,
    demand_forecaster_promotion,
    demand_forecasts,
)
from assets.lineage import lineage_snapshot
from assets.monitoring import (
    demand_forecast_drift,
    drift_report,
    prediction_logs,
    reference_profiles,
    serving_profiles,
)
from assets.request_models import (
    request_baseline,
    request_classifier,
    request_classifier_promotion,
    request_test_set,
)
from assets.requests import raw_requests, validate_requests
from assets.resources import build_resources
from assets.serving import champion_bento
from assets.warehouse_models import warehouse_dbt_models
from ml.data.sources import DemandSource, demand_source_of
from ml.settings import Settings
from orchestration.jobs import (
    annotated_batch_job,
    annotation_batch_job,
    annotation_candidates_job,
    champion_bento_job,
    demand_drift_job,
    demand_forecast_job,
    demand_ingest_job,
    demand_models_job,
    labeled_requests_job,
    lineage_snapshot_job,
    monitoring_job,
    request_ingest_job,
    request_models_job,
    request_retraining_job,
    rollback_champion_job,
    warehouse_job,
)
from orchestration.schedules import (
    build_demand_schedules,
    demand_drift_schedule,
    demand_forecast_schedule,
    labeled_requests_schedule,
    lineage_snapshot_schedule,
    monitoring_schedule,
    monthly_demand_retraining_schedule,
    monthly_request_retraining_schedule,
)
from orchestration.sensors import (
    annotation_batch_sensor,
    annotation_complete_sensor,
    champion_change_sensor,
    demand_drift_sensor,
    drift_sensor,
    request_drop_sensor,
    warehouse_automation_sensor,
)


def build_definitions(settings: Settings, demand_source: DemandSource) -> Definitions:
    return Definitions(
        assets=[
            raw_requests,
            validate_requests,
            *build_demand_assets(demand_source),
            calendar_days,
            warehouse_dbt_models,
            annotation_candidates,
            annotation_batch,
            annotated_batch,
            labeled_requests,
            request_test_set,
            lineage_snapshot,
            request_baseline,
            request_classifier,
            request_classifier_promotion,
            demand_backtests,
            demand_forecaster,
            demand_forecaster_promotion,
            demand_forecasts,
            demand_forecast_errors,
            champion_bento,
            prediction_logs,
            reference_profiles,
            serving_profiles,
            drift_report,
            demand_forecast_drift,
        ],
        jobs=[
            request_ingest_job,
            demand_forecast_job,
            demand_ingest_job,
            demand_models_job,
            warehouse_job,
            annotation_candidates_job,
            annotation_batch_job,
            annotated_batch_job,
            labeled_requests_job,
            request_models_job,
            rollback_champion_job,
            champion_bento_job,
            monitoring_job,
            demand_drift_job,
            request_retraining_job,
            lineage_snapshot_job,
        ],
        schedules=[
            *build_demand_schedules(demand_source, demand_ingest_job),
            labeled_requests_schedule,
            demand_forecast_schedule,
            monitoring_schedule,
            demand_drift_schedule,
            monthly_request_retraining_schedule,
            monthly_demand_retraining_schedule,
            lineage_snapshot_schedule,
        ],
        sensors=[
            request_drop_sensor,
            warehouse_automation_sensor,
            annotation_batch_sensor,
            annotation_complete_sensor,
            champion_change_sensor,
            drift_sensor,
            demand_drift_sensor,
        ],
        resources=build_resources(settings),
    )


_settings = Settings.from_env()
defs = build_definitions(_settings, demand_source_of(_settings))
