"""Serving on the lineage graph: the Bento of the current champions, rebuilt whenever a champion
changes (the promotion gates, a rollback), and pointed at for `bentoml serve`."""

from pathlib import Path

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from assets.defects.models import defect_classifier_promotion
from assets.demand.forecasting import demand_forecaster_promotion
from assets.requests.models import request_classifier_promotion
from assets.resources import BentoStore, ModelRegistry
from assets.serving import GROUP, OWNERS
from ml.lifecycle.registered_models import SERVED_MODELS, challenger_versions, champion_versions
from serving.package import bento_version, record_current_bento


@asset(
    deps=[request_classifier_promotion, demand_forecaster_promotion, defect_classifier_promotion],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"bentoml", "mlflow"},
    description=(
        "The versioned Bento serving the MLflow champion of each model (POST /classify, POST "
        "/forecast, POST /inspect) and, beside it, its challenger for shadow and canary "
        "traffic, each imported into the BentoML model store with its MLflow version in the "
        "tag. Its version names the model versions (rc<v>[c<challenger>]-df<v>-dc<v>): after a "
        "rollback the earlier Bento is served again. `make serve` follows it, switching only "
        "after a smoke test."
    ),
)
def champion_bento(
    context: AssetExecutionContext,
    model_registry: ModelRegistry,
    bento_store: BentoStore,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    versions = champion_versions(registry)
    if not any(versions.values()):
        raise ValueError(
            f"no champion to serve: none of {list(SERVED_MODELS)} holds `champion` yet "
            "(run request_models_job or demand_models_job)"
        )
    challengers = {m: v for m, v in challenger_versions(registry).items() if versions.get(m)}
    packaged = bento_store.package(registry.tracking_uri, versions, challengers)
    record_current_bento(Path(bento_store.home), packaged, bento_store.publish_uri)
    action = "built" if packaged["built"] else "reused (these champions were packaged before)"
    context.log.info(f"{packaged['bento']}: {action}")
    return MaterializeResult(
        metadata={
            "bento": packaged["bento"],
            "action": action,
            "bento_path": MetadataValue.path(str(packaged["path"])),
            "models": MetadataValue.json(packaged["models"]),
            **{f"{model}_version": version or "none" for model, version in versions.items()},
            **{f"{model}_challenger": version or "none" for model, version in challengers.items()},
            "serve": MetadataValue.md(
                f"`bentoml serve {packaged['bento']}` (BENTOML_HOME={bento_store.home}), or "
                "`make serve`, which follows the current champion Bento"
            ),
            "containerize": MetadataValue.md(f"`bentoml containerize {packaged['bento']}`"),
            **(
                {"archive": MetadataValue.path(str(packaged["archive"]))}
                if "archive" in packaged
                else {}
            ),
        },
        data_version=DataVersion(bento_version(versions, challengers)),
    )
