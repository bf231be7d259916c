"""Request classifiers on the lineage graph: the frozen test version, the TF-IDF baseline and the
fine-tuned transformer (each logged to MLflow and registered as a version of
`request_classifier`), and the promotion gate that alone moves the `champion` alias."""

import time
from collections.abc import Sequence
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
from assets.resources import GPU_STEP, REGISTRY_POOL, ModelRegistry, RequestIntake, Warehouse
from ml.lifecycle.economics import OWN_TRAINING
from ml.lifecycle.model_card import ModelCard
from ml.lifecycle.promotion import check_margin
from ml.lifecycle.pyfunc import INTENT_CLASSIFIER_ENTRY
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER, latest_of_kind
from ml.lifecycle.registration import Candidate, lineage_tags, register_candidate, role_of
from ml.lifecycle.registry import ModelVersion, Registry, Trial
from ml.metrics import ClassificationScores, measure_latency, score_classification
from ml.plots import confusion_figure
from ml.requests.classifiers import (
    LINEAR_SEARCH,
    IntentClassifier,
    LinearSettings,
    fit_ensemble,
    registered_f1_macro,
    search_linear,
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


def _latest_of(
    registry: Registry, kind: str, test_version: int, dataset_version: str | None = None
) -> ModelVersion | None:
    return latest_of_kind(registry, REQUEST_CLASSIFIER, kind, test_version, dataset_version)


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
    training_seconds: float,
    epoch_metrics: list[dict[str, float]] = (),
    trials: Sequence[Trial] = (),
    own_training_seconds: float | None = None,
) -> MaterializeResult:
    """Score on validation and the frozen test, time it, log everything a reviewer wants to
    MLflow and register the model as a new version (no alias moves: that is the gate's).
    `training_seconds`: what producing the model cost, wall time (a search's every trial);
    `own_training_seconds`: for a model built from other versions (the ensemble), what it took
    beyond them (what pricing adds, the members being priced as versions of their own)."""
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
    baseline = None if kind == "baseline" else _latest_of(registry, "baseline", data.test_version)
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
        "training_seconds": training_seconds,
        **({} if own_training_seconds is None else {OWN_TRAINING: own_training_seconds}),
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

    run_tags, version_tags = lineage_tags(
        data.dataset_version, data.test_version, context.run.run_id
    )
    version, card = register_candidate(
        registry,
        Candidate(
            model_name=REQUEST_CLASSIFIER,
            kind=kind,
            role=role_of(kind),
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
                {
                    "The closest intents (most often mistaken for each other on the test)": (
                        test.confusions_markdown()
                    ),
                    "F1 per intent on the test, worst first": test.report_markdown(),
                },
            ),
            entry_point=INTENT_CLASSIFIER_ENTRY,
            artifacts={"classifier": classifier.save},
            input_example=pd.DataFrame({"text": list(EXAMPLE_TEXTS)}),
            params={**params, "train_rows": len(data.train)},
            metrics=metrics,
            tagged_scores=test.as_metrics("test"),
            run_tags={**run_tags, "taxonomy": data.taxonomy},
            version_tags=version_tags,
            epoch_metrics=epoch_metrics,
            trials=trials,
            report={
                "confusion_matrix.png": figure,
                "per_class_report.md": test.report_markdown(),
                "closest_intents.md": test.confusions_markdown(),
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
            "training_seconds": training_seconds,
            "scores": _metrics_table({"test": test, "validation": validation}),
            "per_class_f1": MetadataValue.md(test.report_markdown()),
            "closest_intents": MetadataValue.md(test.confusions_markdown()),
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
    started = time.perf_counter()
    classifier = train_baseline(data.train, data.validation, data.classes, config.svm_c)
    return evaluate_and_register(
        context,
        registry,
        data,
        classifier,
        "baseline",
        {"svm_c": config.svm_c},
        time.perf_counter() - started,
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
    progress_bar: bool = Field(
        default=False,
        description="A progress bar with the time left on the terminal that runs the job "
        "(make demo-real; in-process runs).",
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
    op_tags=GPU_STEP,
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

    started = time.perf_counter()
    if config.processes > 1:
        result = fine_tune_with_torchrun(
            data.train, data.validation, data.classes, settings, config.processes
        )
        for record in result.history:
            on_epoch(record)
    else:
        result = fine_tune(
            data.train, data.validation, data.classes, settings, on_epoch, config.progress_bar
        )
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
        time.perf_counter() - started,
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


# --- the stronger classical model and the ensemble ---------------------------------------------


def _ngrams(text: str) -> tuple[int, int]:
    low, high = (int(n) for n in text.split("-"))
    return low, high


class LinearSearchConfig(Config):
    """The grid searched on the validation split (every combination is one child run)."""

    svm_c: list[float] = Field(default_factory=lambda: sorted({s.c for s in LINEAR_SEARCH}))
    word_ngrams: list[str] = Field(
        default_factory=lambda: sorted(
            {f"{a}-{b}" for a, b in (s.word_ngrams for s in LINEAR_SEARCH)}
        )
    )
    char_ngrams: list[str] = Field(
        default_factory=lambda: sorted(
            {f"{a}-{b}" for a, b in (s.char_ngrams for s in LINEAR_SEARCH)}
        )
    )

    @field_validator("word_ngrams", "char_ngrams")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                low, high = _ngrams(text)
            except ValueError:
                raise ValueError(f"{text!r}: expected an n-gram range like '1-3'") from None
            if not 1 <= low <= high:
                raise ValueError(f"{text!r}: expected 1 ≤ low ≤ high")
        return value

    def grid(self) -> list[LinearSettings]:
        return [
            LinearSettings(c, _ngrams(words), _ngrams(chars))
            for c in self.svm_c
            for words in self.word_ngrams
            for chars in self.char_ngrams
        ]


@asset(
    deps=["request_splits", request_test_set, "lineage_snapshot", "request_baseline"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "scikitlearn", "mlflow"},
    description=(
        "TF-IDF (words and characters) + linear SVM with its regularization and n-gram ranges "
        "searched on the validation split (each setting a child run in MLflow; the test split "
        "is scored once, for the chosen one), calibrated, registered as a version of "
        "request_classifier."
    ),
)
def request_tuned_linear(
    context: AssetExecutionContext,
    config: LinearSearchConfig,
    warehouse: Warehouse,
    request_intake: RequestIntake,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    data = load_training_data(warehouse, request_intake)
    grid = config.grid()

    def on_trial(n: int, settings: LinearSettings, f1: float) -> None:
        context.log.info(f"trial {n}/{len(grid)} {settings.params()}: validation F1 {f1:.4f}")

    started = time.perf_counter()
    searched = search_linear(data.train, data.validation, data.classes, grid, on_trial)
    seconds = time.perf_counter() - started
    trials = [
        Trial(f"trial-{n}", settings.params(), {"validation_f1_macro": f1})
        for n, (settings, f1) in enumerate(searched.trials, start=1)
    ]
    outcome = evaluate_and_register(
        context,
        registry,
        data,
        searched.classifier,
        "tuned_linear",
        {**searched.settings.params(), "search_trials": len(trials)},
        seconds,
        trials=trials,
    )
    lines = ["| C | word n-grams | char n-grams | validation F1-macro |", "|---|---|---|---|"]
    lines += [
        f"| {s.c:g} | {s.params()['word_ngrams']} | {s.params()['char_ngrams']} | {f1:.4f} |"
        for s, f1 in searched.trials
    ]
    outcome.metadata["search"] = MetadataValue.md("\n".join(lines))
    return outcome


class EnsembleConfig(Config):
    linear_weight: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The tuned linear model's weight (the transformer gets the rest); None: "
        "the weight with the best validation F1-macro.",
    )


@asset(
    deps=[request_tuned_linear, "request_classifier"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "mlflow"},
    description=(
        "The weighted mean of the calibrated probabilities of this dataset's tuned linear "
        "model and fine-tuned transformer (loaded from the registry, digests verified), the "
        "weight chosen on the validation split and the mean calibrated again: registered as "
        "one version of request_classifier, served like any other. When one member alone is "
        "best on validation, nothing is registered (it would be that member again)."
    ),
)
def request_ensemble(
    context: AssetExecutionContext,
    config: EnsembleConfig,
    warehouse: Warehouse,
    request_intake: RequestIntake,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    data = load_training_data(warehouse, request_intake)
    members = {
        kind: _latest_of(registry, kind, data.test_version, data.dataset_version)
        for kind in ("tuned_linear", "transformer")
    }
    if missing := [kind for kind, version in members.items() if version is None]:
        raise ValueError(
            f"no {' or '.join(missing)} version trained on {data.dataset_version} and scored on "
            f"test version {data.test_version}: materialize request_tuned_linear and "
            "request_classifier first"
        )
    linear, transformer = (
        registry.load(REQUEST_CLASSIFIER, members[kind].version).unwrap_python_model().classifier
        for kind in ("tuned_linear", "transformer")
    )
    started = time.perf_counter()
    ensemble, tried = fit_ensemble(linear, transformer, data.validation, config.linear_weight)
    fit_seconds = time.perf_counter() - started
    members_seconds = sum(
        registry.client.get_run(version.run_id).data.metrics.get("training_seconds", 0.0)
        for version in members.values()
    )
    weight = ensemble.weights[0]
    members_text = (
        f"tuned_linear v{members['tuned_linear'].version} × {weight:.1f} + transformer "
        f"v{members['transformer'].version} × {1 - weight:.1f}"
    )
    search = MetadataValue.md(
        "\n".join(
            ["| weight of the linear model | validation F1-macro |", "|---|---|"]
            + [f"| {w:.1f} | {f1:.4f} |" for w, f1 in sorted(tried.items())]
        )
    )
    if weight in (0.0, 1.0):
        alone = "tuned_linear" if weight == 1.0 else "transformer"
        context.log.info(f"the {alone} alone is best on validation: no ensemble registered")
        return MaterializeResult(
            metadata={
                "registered": f"no: the {alone} alone is best on validation",
                "weights": search,
            }
        )
    trials = [
        Trial(f"weight-{w:.1f}", {"linear_weight": w}, {"validation_f1_macro": f1})
        for w, f1 in sorted(tried.items())
    ]
    outcome = evaluate_and_register(
        context,
        registry,
        data,
        ensemble,
        "ensemble",
        {
            "linear_weight": weight,
            "tuned_linear_version": members["tuned_linear"].version,
            "transformer_version": members["transformer"].version,
            "ensemble_fit_seconds": round(fit_seconds, 1),
        },
        members_seconds + fit_seconds,
        trials=trials,
        own_training_seconds=fit_seconds,
    )
    outcome.metadata.update({"registered": f"yes: {members_text}", "weights": search})
    return outcome


# --- the promotion gate ----------------------------------------------------------------------


class PromotionConfig(Config):
    margin: float = 0.005
    """A candidate must beat the champion's test F1-macro by at least this much."""

    _margin_bound = field_validator("margin")(check_margin)


@asset(
    deps=[request_baseline, request_classifier, request_tuned_linear, request_ensemble],
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
