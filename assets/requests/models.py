"""Request classifiers on the lineage graph: the frozen test version, the TF-IDF baseline and the
fine-tuned transformer (each logged to MLflow and registered as a version of
`request_classifier`), and the promotion gate that alone moves the `champion` alias."""

from dataclasses import fields

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field, field_validator

from assets.metadata import picture
from assets.promotion import run_promotion_gate
from assets.requests import GROUP, OWNERS
from assets.requests.datasets import (
    RequestTrainingData,
    frozen_test_set,
    load_training_data,
    request_test_set,
)
from assets.resources import REGISTRY_POOL, ModelRegistry, RequestIntake, Warehouse
from ml.lifecycle.model_card import ModelCard
from ml.lifecycle.promotion import check_margin
from ml.lifecycle.pyfunc import INTENT_CLASSIFIER_ENTRY
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registration import Candidate, register_candidate
from ml.lifecycle.registry import ModelVersion, Registry
from ml.metrics import ClassificationScores, measure_latency, score_classification
from ml.plots import confusion_figure
from ml.requests.classifiers import (
    IntentClassifier,
    registered_f1_macro,
    train_baseline,
)
from ml.requests.train_transformer import fine_tune_with_torchrun
from ml.requests.training import TransformerConfig, config_params, fine_tune

METRIC = "test_f1_macro"

EXAMPLE_TEXTS = (
    "where is my new card?",
    "I was charged twice for the same payment",
    "how do I change my address?",
)
"""The model's input example: written here, never a customer's text."""


def _baseline_of(registry: Registry, test_version: int) -> ModelVersion | None:
    """The latest baseline version scored on this test version."""
    candidates = [
        v
        for v in registry.versions(REQUEST_CLASSIFIER)
        if v.tags.get("kind") == "baseline" and v.tags.get("test_version") == str(test_version)
    ]
    return candidates[-1] if candidates else None


def _metrics_table(rows: dict[str, ClassificationScores | None]) -> MetadataValue:
    lines = ["| model / split | F1-macro | accuracy | ECE |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {s.f1_macro:.4f} | {s.accuracy:.4f} | {s.expected_calibration_error:.4f} |"
        for name, s in rows.items()
        if s is not None
    ]
    return MetadataValue.md("\n".join(lines))


def evaluate_and_register(
    context: AssetExecutionContext,
    registry: Registry,
    data: RequestTrainingData,
    classifier: IntentClassifier,
    kind: str,
    params: dict[str, object],
    epoch_metrics: list[dict[str, float]] = (),
) -> MaterializeResult:
    """Score on validation and the frozen test, time it, log everything a reviewer wants to
    MLflow and register the model as a new version (no alias moves: that is the gate's)."""
    test = score_classification(
        data.test.intents, classifier.predict_proba(data.test.texts), data.classes
    )
    validation = (
        score_classification(
            data.validation.intents, classifier.predict_proba(data.validation.texts), data.classes
        )
        if len(data.validation)
        else None
    )
    latency = measure_latency(classifier.predict_proba, data.test.texts[:64])
    baseline = None if kind == "baseline" else _baseline_of(registry, data.test_version)
    baseline_metrics = (
        {
            key: value
            for key in ("test_f1_macro", "test_accuracy", "test_ece")
            if (value := baseline.metric(key)) is not None
        }
        if baseline
        else None
    )
    metrics = {
        **test.as_metrics("test"),
        **(validation.as_metrics("validation") if validation else {}),
        **latency.as_metrics(),
    }
    data_summary = {
        "taxonomy": data.taxonomy,
        "dataset version": data.dataset_version,
        "training rows": len(data.train),
        "of which annotated": data.annotated_rows,
        "validation rows": len(data.validation),
        "test version": f"{data.test_version} ({len(data.test)} rows)",
    }
    figure = confusion_figure(
        test.confusion, data.classes, f"{kind}: test confusion", "true", "predicted"
    )

    version, card = register_candidate(
        registry,
        Candidate(
            model_name=REQUEST_CLASSIFIER,
            kind=kind,
            role="baseline" if kind == "baseline" else "candidate",
            run_name=f"{kind}-{context.run.run_id[:8]}",
            card=ModelCard(
                f"{REQUEST_CLASSIFIER}: {kind}",
                f"Intent classifier over {len(data.classes)} intents ({data.taxonomy}); "
                "probabilities calibrated by temperature scaling on the validation split.",
                data_summary,
                {k: v for k, v in metrics.items() if k.startswith("test_")},
                baseline_metrics,
                [
                    "Scored on the frozen test version only; labels there are as annotated then.",
                    "Texts longer than the model's maximum length are truncated.",
                    "Intents with few training examples score worst (see the per-class report).",
                ],
            ),
            entry_point=INTENT_CLASSIFIER_ENTRY,
            artifacts={"classifier": classifier.save},
            input_example=pd.DataFrame({"text": list(EXAMPLE_TEXTS)}),
            params={**params, "train_rows": len(data.train)},
            metrics=metrics,
            tagged_scores=test.as_metrics("test"),
            run_tags={
                "dataset_version": data.dataset_version,
                "test_version": str(data.test_version),
                "taxonomy": data.taxonomy,
                "dagster_run_id": context.run.run_id,
            },
            version_tags={
                "dataset_version": data.dataset_version,
                "test_version": str(data.test_version),
            },
            epoch_metrics=epoch_metrics,
            report={
                "confusion_matrix.png": figure,
                "per_class_report.md": test.report_markdown(),
            },
            model_metadata={"classes": list(data.classes), "taxonomy": data.taxonomy, "kind": kind},
        ),
    )
    return MaterializeResult(
        metadata={
            "model_version": version.version,
            "mlflow_run_id": version.run_id,
            "test_version": data.test_version,
            "dataset_version": data.dataset_version,
            "test_f1_macro": test.f1_macro,
            "test_accuracy": test.accuracy,
            "test_ece": test.expected_calibration_error,
            "baseline_test_f1_macro": (
                baseline_metrics.get("test_f1_macro") if baseline_metrics else test.f1_macro
            ),
            **{key: float(value) for key, value in latency.as_metrics().items()},
            "scores": _metrics_table({"test": test, "validation": validation}),
            "per_class_f1": MetadataValue.md(test.report_markdown()),
            "confusion_matrix": picture(figure, f"{kind}: confusion on the frozen test"),
            "model_card": MetadataValue.md(card),
        }
    )


# --- the two candidates ----------------------------------------------------------------------


class BaselineConfig(Config):
    svm_c: float = 0.5
    """Inverse regularization strength of the linear SVM (tuned on banking77's validation)."""


@asset(
    deps=["request_splits", request_test_set, "lineage_snapshot"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "scikitlearn", "mlflow"},
    description=(
        "TF-IDF (words and characters) + linear SVM, calibrated on the validation split: the "
        "baseline every request classifier is reported against. Logged to MLflow and "
        "registered as a version of request_classifier."
    ),
)
def request_baseline(
    context: AssetExecutionContext,
    config: BaselineConfig,
    warehouse: Warehouse,
    request_intake: RequestIntake,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    data = load_training_data(warehouse, request_intake)
    classifier = train_baseline(data.train, data.validation, data.classes, config.svm_c)
    return evaluate_and_register(
        context, registry, data, classifier, "baseline", {"svm_c": config.svm_c}
    )


class TransformerTrainingConfig(Config):
    checkpoint: str = Field(
        default="",
        description="A local model folder or a Hugging Face hub id (downloads only then); "
        "'' = all-MiniLM-L6-v2 shipped offline.",
    )
    epochs: int = TransformerConfig.epochs
    batch_size: int = TransformerConfig.batch_size
    gradient_accumulation: int = TransformerConfig.gradient_accumulation
    learning_rate: float = TransformerConfig.learning_rate
    max_length: int = TransformerConfig.max_length
    patience: int = TransformerConfig.patience
    seed: int = TransformerConfig.seed
    max_train_samples: int | None = Field(
        default=None, description="Train on the first N training rows only (CPU runs)."
    )
    max_validation_samples: int | None = None
    processes: int = Field(
        default=1,
        description="Training processes: 1 = in this run's process; N > 1 = torchrun with DDP, "
        "one process per GPU (gloo on CPU).",
    )

    def transformer_config(self) -> TransformerConfig:
        names = {f.name for f in fields(TransformerConfig)}
        return TransformerConfig(
            **{key: value for key, value in self.model_dump().items() if key in names}
        )


@asset(
    deps=["request_splits", request_test_set, "lineage_snapshot", "request_baseline"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "pytorch", "mlflow"},
    description=(
        "A transformer fine-tuned on the labeled requests (GPU when present, bf16 autocast, "
        "length-bucketed batches, early stopping on validation F1-macro), reported against "
        "the baseline, logged to MLflow and registered as a version of request_classifier."
    ),
)
def request_classifier(
    context: AssetExecutionContext,
    config: TransformerTrainingConfig,
    warehouse: Warehouse,
    request_intake: RequestIntake,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    data = load_training_data(
        warehouse, request_intake, config.max_train_samples, config.max_validation_samples
    )
    settings = config.transformer_config()

    def on_epoch(record) -> None:
        context.log.info(
            f"epoch {record.epoch}: loss {record.train_loss:.4f}, validation F1-macro "
            f"{record.validation_f1_macro:.4f}, {record.samples_per_second:.1f} samples/s"
        )

    if config.processes > 1:
        result = fine_tune_with_torchrun(
            data.train, data.validation, data.classes, settings, config.processes
        )
        for record in result.history:
            on_epoch(record)
    else:
        result = fine_tune(data.train, data.validation, data.classes, settings, on_epoch)
    epochs = [
        {
            "train_loss": r.train_loss,
            "validation_f1_macro_epoch": r.validation_f1_macro,
            "validation_accuracy_epoch": r.validation_accuracy,
            "samples_per_second": r.samples_per_second,
        }
        for r in result.history
    ]
    outcome = evaluate_and_register(
        context,
        registry,
        data,
        result.classifier,
        "transformer",
        {
            **config_params(settings),
            **result.params(),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
        },
        epochs,
    )
    outcome.metadata.update(
        {
            "device": result.device,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "train_samples_per_second": float(
                np.mean([r.samples_per_second for r in result.history])
            ),
        }
    )
    return outcome


# --- the promotion gate ----------------------------------------------------------------------


class PromotionConfig(Config):
    margin: float = 0.005
    """A candidate must beat the champion's test F1-macro by at least this much."""

    _margin_bound = field_validator("margin")(check_margin)


@asset(
    deps=[request_baseline, request_classifier],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "mlflow"},
    pool=REGISTRY_POOL,
    description=(
        "The promotion gate: each new version of request_classifier becomes `champion` only if "
        "it never loses to the baseline and beats the champion by the margin, on the gate's "
        "own scores of the loaded (digest-verified) versions on the frozen test version; "
        "otherwise it is the `challenger`, with the score and reason tagged on the version."
    ),
)
def request_classifier_promotion(
    context: AssetExecutionContext,
    config: PromotionConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    test_version, test = frozen_test_set(warehouse)

    def rescore(version: ModelVersion) -> float:
        context.log.info(f"scoring v{version.version} on test version {test_version}")
        return registered_f1_macro(registry, REQUEST_CLASSIFIER, version.version, test)

    gate = run_promotion_gate(
        context,
        registry,
        REQUEST_CLASSIFIER,
        str(test_version),
        METRIC,
        config.margin,
        rescore,
        "test F1-macro",
    )
    return MaterializeResult(metadata={"test_version": test_version, **gate})
