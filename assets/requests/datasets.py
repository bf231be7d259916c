"""What request classifiers learn from and are compared on: the frozen, versioned test set and the
current labeled training and validation splits."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.metadata import counts_table
from assets.requests import GROUP, OWNERS
from assets.resources import DUCKDB_POOL, RequestIntake, Warehouse
from ml.requests.classifiers import (
    LabeledTexts,
    check_training_data,
)

TEST_SETS_TABLE = "request_test_sets"


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
        f"min(reason) as reason from {TEST_SETS_TABLE} group by 1 order by 1",
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
