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
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, DEMAND_FORECASTER, REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry

PROMOTION_ASSETS = {
    REQUEST_CLASSIFIER: AssetKey("request_classifier_promotion"),
    DEMAND_FORECASTER: AssetKey("demand_forecaster_promotion"),
    DEFECT_CLASSIFIER: AssetKey("defect_classifier_promotion"),
}
"""Where a rollback is shown in the Dagster UI: the promotion asset of each registered model."""


def alias_observation(
    registry: Registry, model_name: str, metadata: dict[str, object]
) -> AssetObservation:
    """An alias move (rollback, pin, release step) shown on the model's promotion asset, with
    the alias history from the audit record."""
    return AssetObservation(
        asset_key=PROMOTION_ASSETS.get(model_name, AssetKey(model_name)),
        metadata={**metadata, "alias_history": alias_history(registry, model_name)},
    )


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
        alias_observation(
            registry,
            config.model_name,
            {
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
    selection=AssetSelection.assets(champion_bento, "reference_profiles"),
    description="Package the current champions as a Bento and rebuild the reference profile.",
)
