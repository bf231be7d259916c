"""The registered models of this deployment, named once, and which version of each is champion.

One registered model per domain; every candidate, baselines included, is a version of it."""

from __future__ import annotations

from ml.lifecycle.aliases import CHALLENGER
from ml.lifecycle.registry import Registry

REQUEST_CLASSIFIER = "request_classifier"
DEMAND_FORECASTER = "demand_forecaster"
SERVED_MODELS = (REQUEST_CLASSIFIER, DEMAND_FORECASTER)
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
