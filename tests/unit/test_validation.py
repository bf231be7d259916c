"""Validation: every row ends up valid or quarantined with its reasons; nothing is lost."""

from dataclasses import replace
from datetime import date
from pathlib import Path

import fsspec
import pandera.errors
import polars as pl
import pytest

from ml.data.contracts import DEMAND_CONTRACT, request_contract
from ml.data.drops import Drop
from ml.data.ingestion import IngestionError, read_raw_table
from ml.data.sources import (
    DemandSource,
    map_demand_rows,
    map_request_drop,
    orange_juice_week_start,
    read_demand_files,
    stable_request_id,
)
from ml.data.validation import validate_against_contract

INTENTS = ["card_lost", "balance"]


def drop_of(tmp_path: Path, csv: str, source: str = "synthetic") -> tuple[pl.DataFrame, Drop]:
    path = tmp_path / f"{source}.csv"
    path.write_text(csv, encoding="utf-8")
    drop = Drop("d1", source, str(path), "0" * 64, len(csv), "2025-01-02T00:00:00+00:00")
    return read_raw_table(str(path)), drop


def validate_requests(raw: pl.DataFrame, drop: Drop, existing: pl.DataFrame | None = None):
    mapped = map_request_drop(raw, drop)
    return validate_against_contract(
        mapped.frame, request_contract(INTENTS), carry=("drop_id",), existing_keys=existing
    )


def test_wrong_types_and_bad_values_are_quarantined_with_their_reasons(tmp_path: Path) -> None:
    raw, drop = drop_of(
        tmp_path,
        "request_id,text,intent,source,received_at\n"
        "r1,I lost my card,card_lost,synthetic,2025-01-01T10:00:00Z\n"
        "r2,what is my balance,balance,synthetic,yesterday\n"
        "r3,   ,balance,synthetic,2025-01-01\n"
        "r4,hello,not_an_intent,synthetic,2025-01-01\n"
        "r5,no label yet,,synthetic,2025-01-01 09:30:00\n"
        ",no id,balance,synthetic,2025-01-01\n",
    )
    outcome = validate_requests(raw, drop)
    assert outcome.reconciles and outcome.rows_in == 6
    assert outcome.valid["request_id"].to_list() == ["r1", "r5"]
    reasons = dict(
        zip(outcome.quarantine["raw_row_id"], outcome.quarantine["reasons"], strict=True)
    )
    assert "received_at: expected a timestamp (ISO 8601) (got yesterday)" in reasons["d1:3"]
    assert "text is blank" in reasons["d1:4"]
    assert "intent: not one of the allowed values (got not_an_intent)" in reasons["d1:5"]
    assert "request_id: not_nullable" in reasons["d1:7"]
    assert (
        '"text":"hello"'
        in outcome.quarantine.filter(pl.col("raw_row_id") == "d1:5")["raw_record"][0]
    )


def test_duplicates_are_quarantined_pointing_at_the_row_they_repeat(tmp_path: Path) -> None:
    raw, drop = drop_of(
        tmp_path,
        "request_id,text\nr1,first\nr2,second\nr1,first\nr3,third\n",
    )
    earlier = pl.DataFrame({"request_id": ["r3"], "raw_row_id": ["d0:9"]})
    outcome = validate_requests(raw, drop, existing=earlier)
    assert outcome.valid["request_id"].to_list() == ["r1", "r2"]
    assert outcome.quarantine.select("raw_row_id", "duplicate_of").rows() == [
        ("d1:4", "d1:2"),
        ("d1:5", "d0:9"),
    ]
    assert outcome.reason_counts() == {"duplicate": 2}


def test_a_drop_without_ids_gets_stable_ids_and_the_drop_time(tmp_path: Path) -> None:
    raw, drop = drop_of(tmp_path, "text,category,channel\nmy card,card_lost,app\n", "banking77")
    mapped = map_request_drop(raw, drop)
    assert mapped.ignored_columns == ["channel"]
    row = mapped.frame.row(0, named=True)
    assert row["request_id"] == stable_request_id("banking77", "my card")
    assert row["intent"] == "card_lost" and row["source"] == "banking77"
    assert row["received_at"] == drop.registered_at


def test_a_drop_missing_the_text_column_is_refused_naming_what_was_found(tmp_path: Path) -> None:
    raw, drop = drop_of(tmp_path, "message,intent\nhi,balance\n")
    with pytest.raises(
        IngestionError,
        match=r"missing required column\(s\) \['text'\].*found \['message', 'intent'\]",
    ):
        map_request_drop(raw, drop)


def test_the_contract_rejects_bad_data_in_a_collected_frame() -> None:
    frame = pl.DataFrame(
        {
            "store": ["S1"],
            "item": ["I1"],
            "period_start": [date(2025, 1, 1)],
            "freq": ["D"],
            "units": [-3.0],
            "price": [2.0],
            "deal": [0.0],
            "feature": [1.5],
        }
    )
    with pytest.raises(pandera.errors.SchemaErrors) as raised:
        DEMAND_CONTRACT.schema.validate(frame, lazy=True)
    failing = set(raised.value.failure_cases["column"].to_list())
    assert failing == {"units", "feature"}


def contract_demand(tmp_path: Path, csv: str) -> DemandSource:
    path = tmp_path / "demand.csv"
    path.write_text(csv, encoding="utf-8")
    return DemandSource("t", str(path), "contract", "D", date(2025, 1, 1))


def test_demand_rows_are_validated_and_extra_columns_kept_as_covariates(tmp_path: Path) -> None:
    source = contract_demand(
        tmp_path,
        "store,item,period_start,units,price,deal,competitor_price\n"
        "S1,I1,2025-01-01,4,2.5,1,2.4\n"
        "S1,I1,2025-01-02,-1,2.5,0,2.4\n"
        "S1,I1,2025-01-02,3,free,0,2.4\n"
        "S1,I1,2025-01-01,4,2.5,1,2.4\n",
    )
    rows = read_demand_files(source)
    outcome = validate_against_contract(
        map_demand_rows(rows, source), DEMAND_CONTRACT, carry=("extra_covariates",)
    )
    assert outcome.reconciles
    assert outcome.valid.height == 1
    assert outcome.valid["extra_covariates"][0] == '{"competitor_price":"2.4"}'
    assert outcome.valid["feature"][0] == 0.0, "a source without feature ads records none"
    assert outcome.reason_counts() == {
        "units: greater_than_or_equal_to(0)": 1,
        "price: expected a number": 1,
        "duplicate": 1,
    }


def test_a_demand_row_whose_period_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    source = contract_demand(tmp_path, "store,item,period_start,units\nS1,I1,01/02/2025,4\n")
    with pytest.raises(
        IngestionError,
        match=r"demand\.csv: line 2: cannot read the period from \{'period_start': '01/02/2025'\}",
    ):
        read_demand_files(source)


def test_demand_missing_required_columns_is_refused(tmp_path: Path) -> None:
    source = contract_demand(tmp_path, "store,period_start,units\nS1,2025-01-01,4\n")
    with pytest.raises(IngestionError, match=r"missing required column\(s\) \['item'\]"):
        read_demand_files(source)


def test_a_demand_folder_on_any_fsspec_filesystem_is_read_file_by_file() -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/feed/2025-01.csv", b"store,item,period_start,units\nS1,I1,2025-01-31,4\n")
    memory.pipe("/feed/2025-02.csv", b"store,item,period_start,units\nS1,I1,2025-02-01,5\n")
    memory.pipe("/feed/README.md", b"not data")
    source = DemandSource("t", "memory://feed", "contract", "D", date(2025, 1, 1))
    rows = read_demand_files(source)
    assert rows["units"].to_list() == ["4", "5"]
    assert rows["_file"].to_list() == ["memory:///feed/2025-01.csv", "memory:///feed/2025-02.csv"]
    with pytest.raises(IngestionError, match="no CSV or Parquet files in the demand folder"):
        memory.mkdir("/empty_feed")
        memory.pipe("/empty_feed/notes.txt", b"x")
        read_demand_files(replace(source, uri="memory://empty_feed"))


def test_orange_juice_weeks_map_to_real_dates_and_units() -> None:
    assert orange_juice_week_start(1) == date(1989, 9, 14)
    assert orange_juice_week_start(40) == date(1990, 6, 14)
