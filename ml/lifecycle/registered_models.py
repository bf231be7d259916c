"""The registered models of this deployment, named once, and which version of each is champion.

One registered model per domain; every candidate, baselines included, is a version of it."""

from __future__ import annotations

from ml.lifecycle.aliases import CHALLENGER
from ml.lifecycle.registry import ModelVersion, Registry

REQUEST_CLASSIFIER = "request_classifier"
DEMAND_FORECASTER = "demand_forecaster"
DEFECT_CLASSIFIER = "defect_classifier"
SERVED_MODELS = (REQUEST_CLASSIFIER, DEMAND_FORECASTER, DEFECT_CLASSIFIER)
"""What the champion Bento serves, in the order its version names them."""


def champion_versions(registry: Registry) -> dict[str, str]:
    """{model: MLflow version holding `champion`} ('' where a model has none yet)."""
    return {
        model: (champion.version if (champion := registry.champion(model)) else "")
        for model in SERVED_MODELS
    }


def challenger_versions(registry: Registry) -> dict[str, str]:
    """{model: MLflow version holding `challenger`} ('' where a model has none): the Bento
    serves each beside its champion, for shadow and canary traffic."""
    return {
        model: (found.version if (found := registry.by_alias(model, CHALLENGER)) else "")
        for model in SERVED_MODELS
    }


def latest_of_kind(
    registry: Registry,
    model_name: str,
    kind: str,
    test_version: str | int,
    dataset_version: str | None = None,
) -> ModelVersion | None:
    """The latest `kind` version of `model_name` scored on this test version (and trained on
    this dataset version, when given): what a candidate is reported against."""
    found = [
        v
        for v in registry.versions(model_name)
        if v.tags.get("kind") == kind
        and v.tags.get("test_version") == str(test_version)
        and dataset_version in (None, v.tags.get("dataset_version"))
    ]
    return found[-1] if found else None
