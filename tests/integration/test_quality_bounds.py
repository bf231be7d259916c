"""Run config that governs quality has bounds: a kappa threshold below 0.4, a negative promotion
margin, an empty frozen test set are refused by the real assets, naming the field."""

from datetime import UTC, datetime

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from assets.demand.forecasting import demand_forecaster_promotion
from assets.requests.annotation import annotated_batch, annotation_batches
from assets.requests.datasets import TEST_SETS_TABLE
from assets.requests.models import request_classifier_promotion
from assets.resources import Warehouse, build_resources
from ml.settings import Settings


def failure_of(result) -> str:
    assert not result.success
    return str(result.get_step_failure_events()[0].event_specific_data)


@pytest.mark.parametrize("threshold", [0.39, 0.0, -0.2, 1.5])
def test_a_kappa_threshold_outside_0_4_to_1_is_refused_naming_the_field(
    settings: Settings, threshold: float
) -> None:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(annotation_batches.name, ["batch-1"])
    result = materialize(
        [annotated_batch],
        partition_key="batch-1",
        instance=instance,
        resources=build_resources(settings),
        run_config={"ops": {"annotated_batch": {"config": {"kappa_threshold": threshold}}}},
        raise_on_error=False,
    )
    failure = failure_of(result)
    assert "kappa_threshold" in failure and "between 0.4 and 1" in failure
    assert f"got {threshold}" in failure


@pytest.mark.parametrize("asset", [request_classifier_promotion, demand_forecaster_promotion])
def test_a_negative_promotion_margin_is_refused_naming_the_field(settings: Settings, asset) -> None:
    result = materialize(
        [asset],
        resources=build_resources(settings),
        run_config={"ops": {asset.op.name: {"config": {"margin": -0.01}}}},
        raise_on_error=False,
    )
    failure = failure_of(result)
    assert "margin" in failure and "margin must be ≥ 0, got -0.01" in failure


def test_an_empty_frozen_test_set_is_refused_naming_the_table_and_version(
    settings: Settings,
) -> None:
    # A test version whose rows carry no label: nothing to compare models on.
    Warehouse(path=str(settings.warehouse_path)).replace_rows(
        TEST_SETS_TABLE,
        pl.DataFrame(
            {
                "request_id": ["r1"],
                "text": ["hello"],
                "intent": [None],
                "test_version": [1],
                "frozen_at": [datetime(2025, 1, 1, tzinfo=UTC)],
                "reason": ["first test version"],
            },
            schema_overrides={"intent": pl.Utf8, "test_version": pl.Int64},
        ),
        "test_version = ?",
        [1],
    )
    result = materialize(
        [request_classifier_promotion], resources=build_resources(settings), raise_on_error=False
    )
    failure = failure_of(result)
    assert f"{TEST_SETS_TABLE}: test_version 1 holds no labeled row" in failure
