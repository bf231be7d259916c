"""Jobs that move or package the champions: the rollback and the champion Bento."""

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

from assets.metadata import alias_history
from assets.resources import REGISTRY_POOL, ModelRegistry
from assets.serving.bento import champion_bento
from ml.lifecycle.registered_models import DEMAND_FORECASTER, REQUEST_CLASSIFIER

PROMOTION_ASSETS = {
    REQUEST_CLASSIFIER: AssetKey("request_classifier_promotion"),
    DEMAND_FORECASTER: AssetKey("demand_forecaster_promotion"),
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
                "alias_history": alias_history(registry, config.model_name),
            },
        )
    )


@job(description="Roll a model's `champion` alias back to the previous champion (MLflow registry).")
def rollback_champion_job() -> None:
    rollback_champion()


champion_bento_job = define_asset_job(
    "champion_bento_job",
    selection=AssetSelection.assets(champion_bento, "reference_profiles"),
    description="Package the current champions as a Bento and rebuild the reference profile.",
)
