"""What request classifiers learn from and are compared on: the frozen, versioned test set and the
current labeled training and validation splits."""

import hashlib
from dataclasses import dataclass

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.requests import GROUP, OWNERS
from assets.resources import DUCKDB_POOL, RequestIntake, Warehouse
from assets.test_sets import FrozenTestSets, TestSetConfig
from ml.requests.classifiers import (
    LabeledTexts,
    check_training_data,
)

TEST_SETS = FrozenTestSets("request_test_sets", "request_id", "intent", "request_test_set")
TEST_SETS_TABLE = TEST_SETS.table


# --- the frozen test version -----------------------------------------------------------------


def frozen_test_set(warehouse: Warehouse) -> tuple[int, LabeledTexts]:
    """The latest frozen test version and its rows: the one every model is compared on."""
    version, rows = TEST_SETS.latest(warehouse, "text, intent")
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
    return MaterializeResult(metadata=TEST_SETS.freeze(context, config, warehouse, labeled))


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
