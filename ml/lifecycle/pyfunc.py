"""The MLflow pyfunc face of each model: what the registry stores and what serving loads.

Loading runs `load_context` over the version's files: go through `Registry.load` (or the
service's verified load), which checks every file's sha256 first. The classifier's files hold no
pickle (skops, safetensors); the demand forecaster's global model is a darts pickle, so its
digest is what makes it safe to load.

Artifacts stored encrypted are decrypted with the deployment's keys (MLOPS_ENCRYPTION_KEYS) into
a private temporary folder that is removed as soon as `load_context` returns. Every loader has
read its files by then (skops, darts' torch.load or pickle, parquet, JSON, the tokenizer) except
transformers 5, which memory-maps `model.safetensors` and pages the weights in from it for the
model's lifetime: removing the folder unlinks the file's name only, the mapping keeps its data
readable (POSIX) until the model is freed or the process ends, killed or not, so no decrypted
file is left behind by name."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from ml.requests.classifiers import IntentClassifier, load_classifier
from ml.security.encryption import at_rest_cipher, decrypted_folder

ENTRY_POINTS = Path(__file__).parent / "pyfunc_entry_points"
"""MLflow models-from-code: each file sets one model class (no pickled Python objects)."""
INTENT_CLASSIFIER_ENTRY = ENTRY_POINTS / "intent_classifier.py"
DEMAND_FORECASTER_ENTRY = ENTRY_POINTS / "demand_forecaster.py"
DEFECT_CLASSIFIER_ENTRY = ENTRY_POINTS / "defect_classifier.py"

TEXT_COLUMN = "text"
SERVING_PACKAGES = (
    "darts",
    "efficientnet-lite-pytorch",
    "lightgbm",
    "mlflow",
    "numpy",
    "pandas",
    "pillow",
    "polars",
    "pytorch-lightning",
    "safetensors",
    "scikit-learn",
    "skops",
    "torch",
    "transformers",
)


def pip_requirements() -> list[str]:
    """What a model server installs to load any version: the versions trained with (stated
    here, so MLflow need not guess them by importing the model in a subprocess)."""
    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def texts_of(model_input: object) -> list[str]:
    """Texts from a frame with a `text` column, a Series, or a list of strings."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise ValueError(f"input frame needs a {TEXT_COLUMN!r} column")
        return model_input[TEXT_COLUMN].astype(str).tolist()
    if isinstance(model_input, pd.Series):
        return model_input.astype(str).tolist()
    if isinstance(model_input, (list, tuple, np.ndarray)):
        return [str(text) for text in model_input]
    raise TypeError(f"expected texts as a frame, series or list, got {type(model_input).__name__}")


def intent_frame(classifier: IntentClassifier, texts: list[str]) -> pd.DataFrame:
    """One row per text: the intent, its probability, and probabilities over the taxonomy
    (in the order of the model's `classes` metadata)."""
    probabilities = classifier.predict_proba(texts)
    best = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "intent": [classifier.classes[i] for i in best],
            "confidence": probabilities.max(axis=1).astype(float),
            "probabilities": [row.astype(float).tolist() for row in probabilities],
        }
    )


class IntentClassifierModel(mlflow.pyfunc.PythonModel):
    """Texts in; intent, confidence and calibrated probabilities over the taxonomy out."""

    def load_context(self, context) -> None:
        stored = Path(context.artifacts["classifier"])
        with decrypted_folder(at_rest_cipher(), stored) as folder:
            self.classifier = load_classifier(folder)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return intent_frame(self.classifier, texts_of(model_input))


class DefectClassifierModel(mlflow.pyfunc.PythonModel):
    """Encoded cell images in (a frame with an `image` column: bytes or base64 text); per image
    the calibrated defect probability, the label at the version's threshold, and the threshold."""

    def load_context(self, context) -> None:
        from ml.defects.classifiers import load_defect_classifier

        stored = Path(context.artifacts["classifier"])
        with decrypted_folder(at_rest_cipher(), stored) as folder:
            self.classifier = load_defect_classifier(folder)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from ml.defects.images import images_of

        return defect_frame(self.classifier, images_of(model_input))


def defect_frame(classifier, images: list[np.ndarray]) -> pd.DataFrame:
    """One row per image: `label`, `defect_probability` and the `threshold` that decided."""
    from ml.defects.classifiers import CLASSES

    probability = classifier.defect_probability(images) if images else np.zeros(0)
    return pd.DataFrame(
        {
            "label": [CLASSES[int(p >= classifier.threshold)] for p in probability],
            "defect_probability": probability.astype(float),
            "threshold": np.full(len(probability), float(classifier.threshold)),
        }
    )


class DemandForecasterModel(mlflow.pyfunc.PythonModel):
    """Rows of (store, item), optionally one per future period with planned `price`, `deal`,
    `feature`; param `horizon`. Out: P10/P50/P90 per series and period, and what was assumed."""

    def load_context(self, context) -> None:
        from ml.demand.forecaster import DemandForecaster

        stored = Path(context.artifacts["forecaster"])
        with decrypted_folder(at_rest_cipher(), stored) as folder:
            self.forecaster = DemandForecaster.load(folder)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        import polars as pl

        horizon = int((params or {}).get("horizon") or self.forecaster.settings.horizon)
        frame = pl.from_pandas(model_input.astype({"store": str, "item": str}))
        series = list(dict.fromkeys(zip(frame["store"], frame["item"], strict=True)))
        planned = None
        if "period_start" in frame.columns and frame["period_start"].is_not_null().any():
            planned = frame.filter(pl.col("period_start").is_not_null()).with_columns(
                pl.col("period_start").cast(pl.Date)
            )
        forecast = self.forecaster.forecast(series, horizon, planned)
        return forecast.to_pandas()


def demand_forecaster_signature(default_horizon: int) -> ModelSignature:
    """Series ids are required; planned covariates per period are optional columns."""
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(DataType.string, "store"),
                ColSpec(DataType.string, "item"),
                ColSpec(DataType.datetime, "period_start", required=False),
                ColSpec(DataType.double, "price", required=False),
                ColSpec(DataType.double, "deal", required=False),
                ColSpec(DataType.double, "feature", required=False),
            ]
        ),
        outputs=Schema(
            [
                ColSpec(DataType.string, "store"),
                ColSpec(DataType.string, "item"),
                ColSpec(DataType.datetime, "period_start"),
                ColSpec(DataType.double, "p10"),
                ColSpec(DataType.double, "p50"),
                ColSpec(DataType.double, "p90"),
                ColSpec(DataType.string, "model"),
                ColSpec(DataType.string, "assumed"),
            ]
        ),
        params=ParamSchema([ParamSpec("horizon", DataType.long, default_horizon)]),
    )
