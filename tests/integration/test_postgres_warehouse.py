"""The production profile's warehouse: the same assets and the same dbt models on PostgreSQL
(MLOPS_WAREHOUSE_DATABASE_URL), a database of each test's own on the machine's server."""

import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from assets.resources import Warehouse
from ml.security.erasure import erase_from_warehouse
from ml.settings import Settings
from tests.conftest import (
    embedded_tables,
    in_utc,
    ingest_and_build_warehouse,
    scratch_postgres_database,
    write_request_drop,
)

TABLES = [
    "select request_id, text, intent, source, received_at, drop_id, raw_row_id, published "
    "from validated_requests order by request_id",
    "select raw_row_id, drop_id, reasons from quarantine_requests order by drop_id, raw_row_id",
    "select * from stg_requests order by request_id",
    "select text_key, stratum, position, split from split_assignments order by text_key",
    "select * from request_splits order by request_id",
    "select store, item, period_start, units, price, is_missing, day_of_week, has_holiday "
    "from mart_demand order by store, item, period_start",
]


@pytest.fixture
def warehouse_url() -> Iterator[str]:
    with scratch_postgres_database("mlops_warehouse") as url:
        yield url


@pytest.fixture
def on_postgres(
    settings: Settings, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The test's deployment with its warehouse in PostgreSQL."""
    monkeypatch.setenv("MLOPS_WAREHOUSE_DATABASE_URL", warehouse_url)
    return Settings.from_env()


def test_the_pipeline_on_the_postgres_warehouse_equals_the_embedded_one_row_for_row(
    on_postgres: Settings, tmp_path: Path
) -> None:
    write_request_drop(on_postgres, "jan.csv", rows=300, seed=31)
    write_request_drop(on_postgres, "feb.csv", rows=300, seed=32)
    warehouse = ingest_and_build_warehouse(on_postgres)
    assert not warehouse.is_duckdb
    assert not on_postgres.warehouse_path.exists(), "no DuckDB file written beside PostgreSQL"
    on_postgres_tables = [warehouse.query(query) for query in TABLES]
    embedded = embedded_tables(on_postgres, tmp_path / "embedded", TABLES)
    assert on_postgres_tables[0].height + on_postgres_tables[1].height == 600
    assert on_postgres_tables[4]["split"].n_unique() == 3
    assert on_postgres_tables[5].height > 0
    for query, postgres, duckdb in zip(TABLES, on_postgres_tables, embedded, strict=True):
        postgres, duckdb = in_utc(postgres), in_utc(duckdb)
        # PostgreSQL's smallest integer is 2 bytes: a 1-byte column comes back wider.
        postgres = postgres.cast(
            {
                name: dtype
                for name, dtype in duckdb.schema.items()
                if dtype.is_integer() and postgres.schema[name].is_integer()
            }
        )
        assert postgres.schema == duckdb.schema, query
        assert postgres.equals(duckdb), query


def test_a_partition_written_again_replaces_its_rows_and_reads_keep_their_types(
    warehouse_url: str,
) -> None:
    warehouse = Warehouse(path="", url=warehouse_url)
    first = pl.DataFrame(
        {
            "drop_id": ["a", "a", "b"],
            "text": ["x", "", None],
            "units": [1.5, float("nan"), None],
            "day": [date(2025, 1, 1), None, date(2025, 1, 3)],
        }
    )
    for drop in ("a", "b", "a"):
        rows = first.filter(pl.col("drop_id") == drop)
        warehouse.replace_rows("validated", rows, "drop_id = ?", [drop])
    rows = warehouse.query("select * from validated order by drop_id, text")
    assert rows.height == 3, "drop a written again replaced its rows"
    assert rows["text"].to_list() == ["", "x", None], "the empty text is not NULL"
    assert rows["units"].is_nan().to_list()[:2] == [True, False]
    assert rows.schema == first.schema
    empty = warehouse.query("select * from validated where drop_id = ?", ["none"])
    assert empty.schema == first.schema, "an empty answer keeps its column types"
    assert warehouse.query("select count(*) as n from validated where text like '%x%'").item() == 1


def test_writers_of_one_new_table_from_many_processes_all_land(warehouse_url: str) -> None:
    """Concurrent first writers: the table is created once, every partition lands whole."""
    warehouse = Warehouse(path="", url=warehouse_url)
    errors: list[BaseException] = []

    def write(partition: int) -> None:
        frame = pl.DataFrame({"partition": [partition] * 50, "row": list(range(50))})
        try:
            warehouse.replace_rows("landed", frame, "partition = ?", [partition])
        except BaseException as error:  # reported below, with the partition
            errors.append(error)

    writers = [threading.Thread(target=write, args=(partition,)) for partition in range(8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors, errors
    counts = warehouse.query("select partition, count(*) as n from landed group by 1 order by 1")
    assert counts["n"].to_list() == [50] * 8


def test_a_non_postgres_url_is_refused_with_what_was_expected(settings: Settings) -> None:
    from ml.data.warehouse import open_warehouse

    with pytest.raises(ValueError, match="expected postgresql://"):
        open_warehouse(settings.warehouse_path, "mysql://root@127.0.0.1/test")


def _database_files_holding(url: str, needle: bytes) -> list[Path]:
    """The files of the database (under PostgreSQL's data directory) that hold `needle`, once
    every dirty page is written out."""
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("checkpoint")
        cursor.execute("show data_directory")
        (data_directory,) = cursor.fetchone()
        cursor.execute("select oid from pg_database where datname = current_database()")
        (oid,) = cursor.fetchone()
    connection.close()
    folder = Path(data_directory) / "base" / str(oid)
    return [path for path in sorted(folder.iterdir()) if needle in path.read_bytes()]


def test_an_erased_request_leaves_the_postgres_warehouse_and_its_files(
    on_postgres: Settings, warehouse_url: str
) -> None:
    write_request_drop(on_postgres, "jan.csv", rows=200, seed=41)
    warehouse = ingest_and_build_warehouse(on_postgres)
    requests = warehouse.query(
        "select request_id, text from validated_requests v where not exists (select 1 from "
        "validated_requests o where o.request_id <> v.request_id and strpos(o.text, v.text) > 0) "
        "order by request_id"
    )
    (erased_id, erased_text), (kept_id, _) = requests.row(0), requests.row(1)
    needle = erased_text.encode()
    assert _database_files_holding(warehouse_url, needle), "the text is on disk before"

    with warehouse.transaction() as session:
        erased = erase_from_warehouse(session, {erased_id})
    warehouse.compact()
    with warehouse.transaction() as session:
        again = erase_from_warehouse(session, {erased_id})

    assert erased.removed["validated_requests"] == 1
    assert erased.source_rows, "the drop rows it came from are named for the raw copies"
    assert set(again.removed.values()) == {0}, "a retry removes nothing more"
    for table in ("validated_requests", "split_assignments", "request_splits"):
        held = warehouse.query(f"select * from {table}")
        assert not held.filter(pl.any_horizontal(pl.col(pl.String) == erased_text)).height, table
    assert warehouse.query(
        "select count(*) as n from validated_requests where request_id = ?", [kept_id]
    ).item()
    assert _database_files_holding(warehouse_url, needle) == [], "a table file still holds it"
