"""Split a drop into valid rows and quarantined rows, with the failing checks named per row.

One routine for every contract: text is parsed to the contract's types (a value that does not
parse is a row failure, not a crash), the pandera schema runs lazily to collect every failure,
and repeated keys are quarantined with the id of the row they repeat. Rows in = valid +
quarantined, always.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.errors
import polars as pl

from ml.data.contracts import Contract
from ml.data.ingestion import ROW_COLUMN

RAW_ROW_ID = "raw_row_id"
RAW_RECORD = "raw_record"
QUARANTINE_COLUMNS = (RAW_ROW_ID, "row_number", "reasons", "duplicate_of", RAW_RECORD)


class ContractError(ValueError):
    """The drop as a whole does not fit the contract (not one row: the file)."""


@dataclass(frozen=True)
class ValidationOutcome:
    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    null_rates: dict[str, float]

    @property
    def reconciles(self) -> bool:
        return self.rows_in == self.valid.height + self.quarantine.height

    def reason_counts(self) -> dict[str, int]:
        """How many quarantined rows each kind of failure caused (a row may have several)."""
        if self.quarantine.is_empty():
            return {}
        kinds = (
            self.quarantine.select(pl.col("reasons").str.split("; ").alias("reason"))
            .explode("reason")
            .select(
                pl.col("reason")
                .str.replace(r" \(got .*\)$", "")
                .str.replace(r"^duplicate of row .*$", "duplicate")
            )
            .group_by("reason")
            .len()
            .sort("len", descending=True)
        )
        return dict(zip(kinds["reason"].to_list(), kinds["len"].to_list(), strict=True))


def raw_record(frame: pl.DataFrame, exclude: tuple[str, ...] = (ROW_COLUMN,)) -> pl.Expr:
    """The row exactly as read; a quarantined row keeps it (as JSON) so nothing is lost."""
    return pl.struct([c for c in frame.columns if c not in exclude])


def _datetime_utc(column: pl.Expr) -> pl.Expr:
    text = column.str.strip_chars().str.replace(r"Z$", "+00:00")
    aware = [
        text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
        for fmt in ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")
    ]
    naive = [
        text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")
    ]
    return pl.coalesce(*aware, *naive)


def parse_column(column: pl.Expr, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Text → the contract's type; a value that does not parse becomes null (and is reported)."""
    if source == target:
        return column
    if source != pl.Utf8:
        return column.cast(target, strict=False)
    if target == pl.Utf8:
        return column
    if isinstance(target, pl.Datetime):
        return _datetime_utc(column)
    if target == pl.Date:
        return column.str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
    number = column.str.strip_chars().cast(pl.Float64, strict=False)
    if target.is_integer():
        # "1" and "1.0" are both the integer 1; "1.5" is not an integer at all.
        return pl.when(number == number.round(0)).then(number).cast(target, strict=False)
    return number.cast(target, strict=False)


def _describe(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "a timestamp (ISO 8601)"
    if dtype == pl.Date:
        return "a date (YYYY-MM-DD)"
    if dtype.is_float():
        return "a number"
    if dtype.is_integer():
        return "an integer"
    return str(dtype)


def _parse(frame: pl.DataFrame, contract: Contract) -> tuple[pl.DataFrame, pl.DataFrame]:
    parsed = frame.with_columns(
        parse_column(pl.col(c), frame.schema[c], contract.dtype(c)).alias(c)
        for c in contract.columns
    )
    failures = [
        frame.select(
            pl.int_range(pl.len(), dtype=pl.Int32).alias("index"),
            pl.lit(column).alias("column"),
            pl.lit(f"expected {_describe(contract.dtype(column))}").alias("check"),
            pl.col(column).cast(pl.Utf8).alias("failure_case"),
        ).filter(frame[column].is_not_null() & parsed[column].is_null())
        for column in contract.columns
    ]
    return parsed, pl.concat(failures)


def _schema_failures(parsed: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    try:
        contract.schema.validate(parsed.select(contract.columns), lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        whole_frame = cases.filter(pl.col("index").is_null())
        if whole_frame.height:
            problems = "; ".join(
                f"{row['column']}: {row['check']}" for row in whole_frame.iter_rows(named=True)
            )
            raise ContractError(
                f"{contract.name}: the frame does not fit the schema: {problems}"
            ) from errors
        return cases.select(
            pl.col("index").cast(pl.Int32),
            "column",
            pl.col("check").str.replace(r"^isin\(.*\)$", "not one of the allowed values"),
            pl.col("failure_case").cast(pl.Utf8),
        )
    return pl.DataFrame(
        schema={"index": pl.Int32, "column": pl.Utf8, "check": pl.Utf8, "failure_case": pl.Utf8}
    )


def null_rates(frame: pl.DataFrame, columns: list[str]) -> dict[str, float]:
    if frame.is_empty():
        return dict.fromkeys(columns, 0.0)
    row = frame.select(pl.col(c).is_null().mean() for c in columns).row(0)
    return dict(zip(columns, [float(v) for v in row], strict=True))


def validate_against_contract(
    frame: pl.DataFrame,
    contract: Contract,
    *,
    carry: tuple[str, ...] = (),
    existing_keys: pl.DataFrame | None = None,
) -> ValidationOutcome:
    """Valid rows (contract columns + raw_row_id + `carry`) and quarantined rows with reasons.

    `frame` holds the contract's columns (text or typed), `raw_row_id`, `raw_record` and `_row`.
    `existing_keys` (key columns + raw_row_id) are records already accepted by earlier drops.
    """
    missing = [
        c for c in (*contract.columns, RAW_ROW_ID, RAW_RECORD, ROW_COLUMN) if c not in frame.columns
    ]
    if missing:
        raise ContractError(f"{contract.name}: columns {missing} are missing after mapping")
    parsed, type_failures = _parse(frame, contract)
    schema_failures = _schema_failures(parsed, contract)
    # A value that did not parse is reported once, as a type failure, not again as a null.
    schema_failures = schema_failures.join(
        type_failures.select("index", "column"), on=["index", "column"], how="anti"
    )
    failures = pl.concat([type_failures, schema_failures])
    reasons = (
        failures.sort("index")
        .select(
            "index",
            pl.format(
                "{}: {} (got {})",
                "column",
                "check",
                pl.col("failure_case").fill_null("null").str.slice(0, 60),
            ).alias("reason"),
        )
        .group_by("index", maintain_order=True)
        .agg(pl.col("reason").str.join("; ").alias("reasons"))
    )
    key = list(contract.key)
    indexed = parsed.with_row_index("index").with_columns(pl.col("index").cast(pl.Int32))
    is_failed = pl.col("index").is_in(reasons["index"].implode())
    # Duplicates are found on a narrow frame (index, key, row id); the wide frame, which carries
    # the raw records, is filtered once for the valid rows and once for the few failures.
    candidates = indexed.select("index", *key, RAW_ROW_ID).filter(~is_failed)
    is_first = candidates.select(pl.struct(key).is_first_distinct()).to_series()
    repeated = candidates.filter(~is_first)
    duplicates = pl.DataFrame(schema={"index": pl.Int32, "duplicate_of": pl.Utf8})
    if repeated.height:
        lead = key[0]
        firsts = candidates.filter(is_first & pl.col(lead).is_in(repeated[lead].unique().implode()))
        duplicates = repeated.join(
            firsts.select(*key, pl.col(RAW_ROW_ID).alias("duplicate_of")), on=key
        ).select("index", "duplicate_of")
    if existing_keys is not None and existing_keys.height:
        earlier = (
            candidates.filter(is_first)
            .join(existing_keys.select(*key, pl.col(RAW_ROW_ID).alias("duplicate_of")), on=key)
            .select("index", "duplicate_of")
        )
        # A row repeating an earlier drop points there, like every repeat of it in this drop.
        earlier_of_repeats = repeated.join(
            existing_keys.select(*key, pl.col(RAW_ROW_ID).alias("duplicate_of")), on=key
        ).select("index", "duplicate_of")
        duplicates = pl.concat(
            [
                duplicates.join(earlier_of_repeats, on="index", how="anti"),
                earlier_of_repeats,
                earlier,
            ]
        )
    duplicate_rows = indexed.join(duplicates, on="index").with_columns(
        pl.format("duplicate of row {}", "duplicate_of").alias("reasons")
    )
    failed = (
        indexed.filter(is_failed)
        .join(reasons, on="index")
        .with_columns(pl.lit(None, dtype=pl.Utf8).alias("duplicate_of"))
    )
    quarantined = pl.concat(
        [failed, duplicate_rows.select(failed.columns)], how="vertical_relaxed"
    ).sort("index")
    valid = indexed.filter(~is_failed & ~pl.col("index").is_in(duplicates["index"].implode()))
    return ValidationOutcome(
        valid=valid.select(*contract.columns, RAW_ROW_ID, *carry),
        quarantine=quarantined.select(
            RAW_ROW_ID,
            pl.col(ROW_COLUMN).alias("row_number"),
            "reasons",
            "duplicate_of",
            pl.col(RAW_RECORD).struct.json_encode(),
        ),
        rows_in=frame.height,
        null_rates=null_rates(frame, contract.columns),
    )
