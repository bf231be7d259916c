"""Nothing unvetted reaches training: a drop (or demand partition) whose blocking checks fail
stays in the validated table, unpublished, and reaches neither dbt's models nor the training set
nor the simulated annotators; fixed and re-materialized, it does. Real DuckDB, dbt and Dagster."""

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
from dagster import DagsterInstance

from assets.resources import DataHome, Warehouse
from ml.data.drops import drop_id_for
from ml.data.ingestion import content_sha256
from ml.settings import Settings
from ml.synthetic.requests import generate_requests
from orchestration.definitions import build_definitions
from orchestration.pipeline import (
    PipelineRun,
    build_warehouse,
    execute_quietly,
    ingest_request_drops,
    run_platform,
)
from tests.conftest import small_demand_source, write_request_drop

TRAINING_ROWS = (
    "select request_id from request_splits "
    "where intent is not null and split in ('train', 'validation')"
)
"""The rows the classifiers train on (`load_training_data` reads exactly these)."""


def labeled_requests(seed: int) -> pl.DataFrame:
    return generate_requests(
        60, seed=seed, start=datetime(2025, 1, 1, tzinfo=UTC), end=datetime(2025, 3, 31, tzinfo=UTC)
    )


def with_every_third_text_empty(frame: pl.DataFrame) -> pl.DataFrame:
    """A third of the texts empty: far over the contract's 5% null-rate limit for `text`."""
    empty = pl.int_range(pl.len()) % 3 == 0
    return frame.with_columns(pl.when(empty).then(None).otherwise(pl.col("text")).alias("text"))


def drop_id_of(path: Path, source: str) -> str:
    return drop_id_for(source, content_sha256(str(path))[0])


def count(warehouse: Warehouse, sql: str, params: list | None = None) -> int:
    return int(warehouse.query(sql, params).item())


def publication_metadata(result) -> dict[str, object]:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["validated_requests"]
    ]
    metadata = event.step_materialization_data.materialization.metadata
    return {key: metadata[key].value for key in ("published", "blocked_by")}


def test_a_drop_blocked_by_its_null_rate_check_reaches_no_split_and_no_training_set_until_fixed(
    settings: Settings,
) -> None:
    write_request_drop(settings, "good.csv", rows=200, seed=1)
    late = Path(settings.request_drops_uri) / "synthetic" / "late.csv"
    requests = labeled_requests(seed=9)
    with_every_third_text_empty(requests).write_csv(late)
    blocked = drop_id_of(late, "synthetic")
    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    data_home = DataHome(path=str(settings.data_home))
    warehouse = Warehouse(path=str(settings.warehouse_path))

    run = run_platform(defs, instance, data_home)
    assert not run.results[f"requests {blocked}"].success
    assert run.results["warehouse"].success
    assert publication_metadata(run.results[f"requests {blocked}"]) == {
        "published": False,
        "blocked_by": "null_rates_within_limits",
    }
    # Still inspectable: its valid rows are in the warehouse, only unpublished.
    held = count(warehouse, "select count(*) from validated_requests where drop_id = ?", [blocked])
    assert held >= 35
    assert (
        count(
            warehouse,
            "select count(*) from validated_requests where drop_id = ? and published",
            [blocked],
        )
        == 0
    )
    ids = "select request_id from validated_requests where drop_id = ?"
    assert count(warehouse, "select count(*) from stg_requests where drop_id = ?", [blocked]) == 0
    assert (
        count(
            warehouse, f"select count(*) from request_splits where request_id in ({ids})", [blocked]
        )
        == 0
    )
    assert (
        count(
            warehouse,
            f"select count(*) from ({TRAINING_ROWS}) where request_id in ({ids})",
            [blocked],
        )
        == 0
    )
    assert count(warehouse, "select count(*) from stg_requests") > 150, "the good drop is published"

    # The user fixes the file where it lies: new content, a new drop, published this time.
    requests.write_csv(late)
    fixed = drop_id_of(late, "synthetic")
    again = PipelineRun()
    ingest_request_drops(defs, instance, data_home, again)
    build_warehouse(defs, instance, again)
    assert again.success and publication_metadata(again.results[f"requests {fixed}"]) == {
        "published": True,
        "blocked_by": "none",
    }
    published = count(
        warehouse,
        "select count(*) from validated_requests where drop_id = ? and published",
        [fixed],
    )
    assert published >= 55
    assert (
        count(warehouse, "select count(*) from stg_requests where drop_id = ?", [fixed])
        == published
    )
    assert (
        count(
            warehouse, f"select count(*) from request_splits where request_id in ({ids})", [fixed]
        )
        == published
    )
    assert (
        count(
            warehouse,
            f"select count(*) from ({TRAINING_ROWS}) where request_id in ({ids})",
            [fixed],
        )
        > 30
    )
    # The blocked drop never counted as earlier records: its ids did not make the fix duplicates.
    assert (
        count(
            warehouse,
            "select count(*) from quarantine_requests where drop_id = ? and duplicate_of like ?",
            [fixed, f"{blocked}:%"],
        )
        == 0
    )
    assert count(warehouse, "select count(*) from stg_requests where drop_id = ?", [blocked]) == 0


def test_a_blocked_drop_keeps_its_hidden_labels_from_the_simulated_annotators(
    settings: Settings,
) -> None:
    folder = Path(settings.request_drops_uri) / "synthetic_unlabeled"
    folder.mkdir(parents=True)
    requests = labeled_requests(seed=5).drop("source")
    with_every_third_text_empty(requests).write_csv(folder / "batch.csv")
    blocked = drop_id_of(folder / "batch.csv", "synthetic_unlabeled")
    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    data_home = DataHome(path=str(settings.data_home))
    warehouse = Warehouse(path=str(settings.warehouse_path))

    run = PipelineRun()
    ingest_request_drops(defs, instance, data_home, run)
    assert not run.results[f"requests {blocked}"].success
    assert (
        count(warehouse, "select count(*) from validated_requests where drop_id = ?", [blocked])
        > 30
    )
    assert count(warehouse, "select count(*) from hidden_labels where drop_id = ?", [blocked]) == 0

    requests.write_csv(folder / "batch.csv")
    fixed = drop_id_of(folder / "batch.csv", "synthetic_unlabeled")
    ingest_request_drops(defs, instance, data_home, run := PipelineRun())
    assert run.success
    valid = count(
        warehouse,
        "select count(*) from validated_requests where drop_id = ? and published",
        [fixed],
    )
    assert valid > 50
    assert (
        count(warehouse, "select count(*) from hidden_labels where drop_id = ?", [fixed]) == valid
    )


def test_a_blocked_demand_partition_reaches_neither_stg_demand_nor_mart_demand_until_fixed(
    settings: Settings,
) -> None:
    write_request_drop(settings, "good.csv", rows=100, seed=1)
    source = small_demand_source(settings)
    defs = build_definitions(settings, source)
    instance = DagsterInstance.ephemeral()
    warehouse = Warehouse(path=str(settings.warehouse_path))
    assert run_platform(defs, instance, DataHome(path=str(settings.data_home))).success
    day, key = date(2025, 1, 10), "2025-01-10"
    on_day = "select count(*) from {} where period_start = ?"
    assert count(warehouse, on_day.format("stg_demand"), [day]) == 6

    # Half of that day's rows lose their units: the day's null-rate check blocks it.
    csv = Path(source.uri) / "demand.csv"
    original = csv.read_bytes()
    frame = pl.read_csv(csv, infer_schema=False)
    blank = (pl.col("period_start") == key) & (pl.int_range(pl.len()).over("period_start") % 2 == 0)
    frame.with_columns(
        pl.when(blank).then(None).otherwise(pl.col("units")).alias("units")
    ).write_csv(csv)
    run = PipelineRun()
    run.record("demand day", execute_quietly(defs, instance, "demand_ingest_job", partition=key))
    build_warehouse(defs, instance, run)
    checks = {
        e.check_name: e.passed for e in run.results["demand day"].get_asset_check_evaluations()
    }
    assert not checks["null_rates_within_limits"] and run.results["warehouse"].success
    assert count(warehouse, on_day.format("validated_demand") + " and not published", [day]) == 3
    assert count(warehouse, on_day.format("stg_demand"), [day]) == 0
    assert count(warehouse, on_day.format("mart_demand") + " and not is_missing", [day]) == 0
    assert count(warehouse, "select count(*) from stg_demand") > 300, "other days stay published"

    csv.write_bytes(original)
    run = PipelineRun()
    run.record("demand day", execute_quietly(defs, instance, "demand_ingest_job", partition=key))
    build_warehouse(defs, instance, run)
    assert run.success
    assert count(warehouse, on_day.format("stg_demand"), [day]) == 6
    assert count(warehouse, on_day.format("mart_demand") + " and not is_missing", [day]) == 6
