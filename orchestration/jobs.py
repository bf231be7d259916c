"""Jobs: the named selections a person, a schedule or a sensor launches."""

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    Config,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)

from assets.annotation import (
    annotated_batch,
    annotation_batch,
    annotation_candidates,
    labeled_requests,
)
from assets.demand import calendar_days
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
    monitoring_windows,
    reference_profiles,
    serving_profiles,
)
from assets.request_models import (
    request_baseline,
    request_classifier,
    request_classifier_promotion,
    request_test_set,
)
from assets.resources import REGISTRY_POOL, ModelRegistry
from assets.serving import champion_bento
from assets.warehouse_models import warehouse_dbt_models
from ml.lifecycle.registered_models import DEMAND_FORECASTER, REQUEST_CLASSIFIER

request_ingest_job = define_asset_job(
    "request_ingest_job",
    selection=AssetSelection.assets("raw_requests", "validated_requests", "quarantine_requests"),
    description="Read one request drop and validate it (one partition per dropped file).",
)

warehouse_job = define_asset_job(
    "warehouse_job",
    selection=AssetSelection.assets(calendar_days, warehouse_dbt_models),
    description="The calendar and every dbt model and test over the validated data.",
)


demand_ingest_job = define_asset_job(
    "demand_ingest_job",
    selection=AssetSelection.assets("raw_demand", "validated_demand", "quarantine_demand"),
    description="Read the demand source for the selected periods and validate them.",
)

annotation_candidates_job = define_asset_job(
    "annotation_candidates_job",
    selection=AssetSelection.assets(annotation_candidates),
    description="Pick the next batch of unlabeled requests for annotation.",
)

annotation_batch_job = define_asset_job(
    "annotation_batch_job",
    selection=AssetSelection.assets(annotation_batch),
    description="Create a batch's tasks in Label Studio.",
)

annotated_batch_job = define_asset_job(
    "annotated_batch_job",
    selection=AssetSelection.assets(annotated_batch),
    description="Collect a completed batch's annotations and gate it on Cohen's kappa.",
)

labeled_requests_job = define_asset_job(
    "labeled_requests_job",
    selection=AssetSelection.assets(labeled_requests),
    description="Merge accepted batches and finished reviews into a new labeled-data version.",
)

request_models_job = define_asset_job(
    "request_models_job",
    selection=AssetSelection.assets(
        request_test_set,
        lineage_snapshot,
        request_baseline,
        request_classifier,
        request_classifier_promotion,
    ),
    description=(
        "Snapshot the lineage tables, train the baseline and the transformer on the current "
        "labels, register both in MLflow, and let the promotion gate decide the champion."
    ),
)

demand_models_job = define_asset_job(
    "demand_models_job",
    selection=AssetSelection.assets(
        demand_backtests,
        demand_forecaster,
        demand_forecaster_promotion,
        demand_forecasts,
        demand_forecast_errors,
    ),
    description=(
        "Backtest every forecasting model, register the best and the best baseline, gate the "
        "champion, forecast with it and score earlier forecasts against arrived actuals."
    ),
)

demand_forecast_job = define_asset_job(
    "demand_forecast_job",
    selection=AssetSelection.assets(demand_forecasts, demand_forecast_errors),
    description="Fresh forecasts from the current champion, and the realized error so far.",
)

PROMOTION_ASSETS = {
    REQUEST_CLASSIFIER: request_classifier_promotion.key,
    DEMAND_FORECASTER: demand_forecaster_promotion.key,
}
"""Where a rollback is shown in the Dagster UI: the promotion asset of each registered model."""


class RollbackConfig(Config):
    model_name: str = REQUEST_CLASSIFIER
    reason: str = "manual rollback"


@op(
    description="Move `champion` back to the version that held it before the current one.",
    pool=REGISTRY_POOL,
)
def rollback_champion(
    context: OpExecutionContext, config: RollbackConfig, model_registry: ModelRegistry
) -> None:
    registry = model_registry.registry()
    registry.ping()
    rolled_back, restored = registry.rollback(
        config.model_name, config.reason, via=f"rollback_champion_job, dagster run {context.run_id}"
    )
    context.log.info(f"{config.model_name}: champion v{rolled_back} → v{restored}")
    context.log_event(
        AssetObservation(
            asset_key=PROMOTION_ASSETS.get(config.model_name, AssetKey(config.model_name)),
            metadata={
                "champion_version": restored,
                "rolled_back_version": rolled_back,
                "reason": config.reason,
            },
        )
    )


@job(description="Roll a model's `champion` alias back to the previous champion (MLflow registry).")
def rollback_champion_job() -> None:
    rollback_champion()


champion_bento_job = define_asset_job(
    "champion_bento_job",
    selection=AssetSelection.assets(champion_bento, reference_profiles),
    description="Package the current champions as a Bento and rebuild the reference profile.",
)

monitoring_job = define_asset_job(
    "monitoring_job",
    selection=AssetSelection.assets(serving_profiles, drift_report),
    partitions_def=monitoring_windows,
    description="Profile one hour of served traffic with whylogs and score its drift.",
)

demand_drift_job = define_asset_job(
    "demand_drift_job",
    selection=AssetSelection.assets(demand_forecast_errors, demand_forecast_drift),
    description="Realized forecast error of the demand champion against its threshold.",
)

request_retraining_job = define_asset_job(
    "request_retraining_job",
    selection=AssetSelection.assets(
        calendar_days,
        warehouse_dbt_models,
        annotation_candidates,
        request_test_set,
        lineage_snapshot,
        request_baseline,
        request_classifier,
        request_classifier_promotion,
        champion_bento,
        reference_profiles,
    ),
    description=(
        "The flywheel's retraining run: rebuild the warehouse (drifted traffic included), queue "
        "re-annotation candidates (drifted traffic first), snapshot the lineage tables, retrain "
        "both classifiers on the current labels, gate them, and package the champions."
    ),
)

lineage_snapshot_job = define_asset_job(
    "lineage_snapshot_job",
    selection=AssetSelection.assets(lineage_snapshot),
    description=(
        "Copy the tables nothing can rebuild (test versions, label versions, split assignments, "
        "annotation history) to a snapshot folder under the data home."
    ),
)
