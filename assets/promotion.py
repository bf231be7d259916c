"""The one promotion gate as every domain's promotion asset runs it: each version awaiting the
gate decided on the scores the gate computes itself, logged, and shown in the UI."""

from collections.abc import Callable

from dagster import AssetExecutionContext

from assets.metadata import promotion_metadata
from ml.lifecycle.promotion import gate_pending_versions
from ml.lifecycle.registry import ModelVersion, Registry


def run_promotion_gate(
    context: AssetExecutionContext,
    registry: Registry,
    model_name: str,
    test_version: str,
    metric: str,
    margin: float,
    rescore: Callable[[ModelVersion], float],
    score_label: str,
    *,
    higher_is_better: bool = True,
) -> dict[str, object]:
    """Gate `model_name`'s pending versions on `test_version`; the promotion asset's metadata."""
    outcomes = gate_pending_versions(
        registry,
        model_name,
        test_version,
        metric,
        margin,
        rescore,
        higher_is_better=higher_is_better,
        via=f"{context.asset_key.to_user_string()}, dagster run {context.run.run_id}",
    )
    for outcome in outcomes:
        context.log.info(
            f"v{outcome.version} → {outcome.decision.alias}: {outcome.decision.reason}"
        )
    champion = registry.champion(model_name)
    return promotion_metadata(
        outcomes, champion, registry.champion_history(model_name), score_label
    )
