"""Request classifiers on the lineage graph: the frozen test version, the TF-IDF baseline and the
fine-tuned transformer (each logged to MLflow and registered as a version of
`request_classifier`), and the promotion gate that alone moves the `champion` alias."""

import hashlib
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import polars as pl
from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field, field_validator

from assets.metadata import counts_table, picture, promotion_metadata
from assets.requests import GROUP, OWNERS
from assets.resources import DUCKDB_POOL, REGISTRY_POOL, ModelRegistry, RequestIntake, Warehouse
from ml.lifecycle.promotion import check_margin, gate_pending_versions
from ml.lifecycle.pyfunc import INTENT_CLASSIFIER_ENTRY
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registration import Candidate, ModelCard, register_candidate
from ml.lifecycle.registry import ModelVersion, Registry
from ml.metrics import ClassificationScores, measure_latency, score_classification
from ml.plots import confusion_figure
from ml.requests.classifiers import (
    IntentClassifier,
    LabeledTexts,
    check_training_data,
    train_baseline,
)
from ml.requests.train_transformer import fine_tune_with_torchrun
from ml.requests.training import TransformerConfig, config_params, fine_tune

TEST_SETS_TABLE = "request_test_sets"
METRIC = "test_f1_macro"


# --- the frozen test version -----------------------------------------------------------------


class TestSetConfig(Config):
    cut_new_version: bool = False
    """Freeze the labeled test split as it is now into a new test version (a recorded act)."""
    reason: str = ""
    """Why a new test version is cut; required with cut_new_version."""


def _test_versions(warehouse: Warehouse) -> pl.DataFrame:
    return warehouse.query_if_exists(
        TEST_SETS_TABLE,
        f"select test_version, count(*) as rows, min(frozen_at) as frozen_at, "
        f"any_value(reason) as reason from {TEST_SETS_TABLE} group by 1 order by 1",
        None,
        {"test_version": pl.Int64, "rows": pl.Int64, "frozen_at": pl.Datetime, "reason": pl.Utf8},
    )


def frozen_test_set(warehouse: Warehouse) -> tuple[int, LabeledTexts]:
    """The latest frozen test version and its rows: the one every model is compared on."""
    versions = _test_versions(warehouse)
    if versions.is_empty():
        raise ValueError(
            f"no frozen test version yet ({TEST_SETS_TABLE} is empty): materialize "
            "request_test_set first"
        )
    version = int(versions["test_version"].max())
    rows = warehouse.query(
        f"select text, intent from {TEST_SETS_TABLE} where test_version = ? order by request_id",
        [version],
    )
    if rows.filter(pl.col("intent").is_not_null()).is_empty():
        raise ValueError(
            f"{TEST_SETS_TABLE}: test_version {version} holds no labeled row; models cannot be "
            "compared on an empty frozen test (cut a new test version with labels)"
        )
    return version, LabeledTexts(rows["text"].to_list(), rows["intent"].to_list())


@asset(
    deps=["request_splits"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "The frozen, versioned test set: the labeled test split as it was when the version was "
        "cut. Every model is compared on the same test version; new labels never change it. A "
        "new version is cut only on request (cut_new_version, with a reason)."
    ),
)
def request_test_set(
    context: AssetExecutionContext, config: TestSetConfig, warehouse: Warehouse
) -> MaterializeResult:
    labeled = warehouse.query(
        "select request_id, text, intent from request_splits "
        "where split = 'test' and intent is not null order by request_id"
    )
    versions = _test_versions(warehouse)
    if versions.is_empty() or config.cut_new_version:
        if config.cut_new_version and not config.reason.strip():
            raise ValueError("cutting a new test version is a recorded act: give a reason")
        if labeled.is_empty():
            raise ValueError(
                "no labeled request in the test split of request_splits: nothing to freeze"
            )
        version = 1 if versions.is_empty() else int(versions["test_version"].max()) + 1
        frozen = labeled.with_columns(
            pl.lit(version, pl.Int64).alias("test_version"),
            pl.lit(datetime.now(UTC)).alias("frozen_at"),
            pl.lit(config.reason.strip() or "first test version").alias("reason"),
        )
        warehouse.replace_rows(TEST_SETS_TABLE, frozen, "test_version = ?", [version])
        context.log.info(f"froze test version {version} with {frozen.height} rows")
        versions = _test_versions(warehouse)
    version = int(versions["test_version"].max())
    frozen_ids = warehouse.query(
        f"select request_id, intent from {TEST_SETS_TABLE} where test_version = ?", [version]
    )
    not_frozen = labeled.join(frozen_ids, on="request_id", how="anti").height
    per_intent = frozen_ids.group_by("intent").len().sort("len", descending=True)
    return MaterializeResult(
        metadata={
            "test_version": version,
            "dagster/row_count": frozen_ids.height,
            "labeled_test_rows_not_in_this_version": not_frozen,
            "versions": MetadataValue.md(
                "| version | rows | frozen at | reason |\n|---|---|---|---|\n"
                + "\n".join(
                    f"| {row['test_version']} | {row['rows']} | {row['frozen_at']} | "
                    f"{row['reason']} |"
                    for row in versions.iter_rows(named=True)
                )
            ),
            "per_intent": counts_table(
                dict(zip(per_intent["intent"], per_intent["len"], strict=True)), "intent"
            ),
        }
    )


# --- training data and the shared evaluation / registration ----------------------------------


@dataclass(frozen=True)
class RequestTrainingData:
    train: LabeledTexts
    validation: LabeledTexts
    test: LabeledTexts
    test_version: int
    dataset_version: str
    """Which labels the model saw: the labeled-data version and a hash of (request, intent)."""
    classes: tuple[str, ...]
    taxonomy: str
    annotated_rows: int


def _split(frame: pl.DataFrame, split: str, limit: int | None) -> LabeledTexts:
    """One split's rows; capped at `limit` rows taken round-robin over intents, so a small
    subset still covers every intent it can."""
    part = frame.filter(pl.col("split") == split)
    if limit:
        part = (
            part.with_columns(pl.int_range(pl.len()).over("intent").alias("_rank"))
            .sort("_rank", "request_id")
            .head(limit)
        )
    return LabeledTexts(part["text"].to_list(), part["intent"].to_list())


def load_training_data(
    warehouse: Warehouse,
    intake: RequestIntake,
    max_train: int | None = None,
    max_validation: int | None = None,
) -> RequestTrainingData:
    """Source-labeled and annotation-labeled requests of the train and validation splits (in a
    fixed pseudo-random order: request ids are hashes), and the frozen test version."""
    taxonomy = intake.taxonomy()
    labeled = warehouse.query(
        "select request_id, text, intent, split, label_source, label_version "
        "from request_splits where intent is not null and split in ('train', 'validation') "
        "order by request_id"
    )
    test_version, test = frozen_test_set(warehouse)
    train = _split(labeled, "train", max_train)
    validation = _split(labeled, "validation", max_validation)
    check_training_data(train, validation, test, taxonomy.intents)
    digest = hashlib.sha256(
        "\n".join(
            f"{r}\t{i}" for r, i in zip(labeled["request_id"], labeled["intent"], strict=True)
        ).encode()
    ).hexdigest()[:12]
    label_version = labeled["label_version"].max()
    return RequestTrainingData(
        train=train,
        validation=validation,
        test=test,
        test_version=test_version,
        dataset_version=f"labels-v{label_version or 0}-{digest}",
        classes=taxonomy.intents,
        taxonomy=taxonomy.label,
        annotated_rows=int((labeled["label_source"] == "annotation").sum()),
    )


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
            input_example=pd.DataFrame({"text": data.test.texts[:3]}),
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
        model = registry.load(REQUEST_CLASSIFIER, version.version)
        predicted = model.predict(pd.DataFrame({"text": test.texts}))
        classes = model.metadata.metadata["classes"]
        return score_classification(
            test.intents, np.array(predicted["probabilities"].tolist()), classes
        ).f1_macro

    outcomes = gate_pending_versions(
        registry,
        REQUEST_CLASSIFIER,
        str(test_version),
        METRIC,
        config.margin,
        rescore,
        via=f"request_classifier_promotion, dagster run {context.run.run_id}",
    )
    champion = registry.champion(REQUEST_CLASSIFIER)
    for o in outcomes:
        context.log.info(f"v{o.version} → {o.decision.alias}: {o.decision.reason}")
    return MaterializeResult(
        metadata={
            "test_version": test_version,
            **promotion_metadata(
                outcomes, champion, registry.champion_history(REQUEST_CLASSIFIER), "test F1-macro"
            ),
        }
    )
