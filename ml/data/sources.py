"""How each known source maps onto the contracts, and where the demand source lives.

Adding a source is adding a format here: a rename for requests, a mapping for demand. Columns a
mapping does not use are reported (requests) or carried as extra covariates (demand), never lost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import fsspec
import polars as pl

from ml.data.contracts import DEMAND_CONTRACT
from ml.data.drops import Drop, list_supported_files
from ml.data.ingestion import ROW_COLUMN, IngestionError, read_raw_table
from ml.data.ingestion import require_columns as require_file_columns
from ml.data.validation import RAW_RECORD, RAW_ROW_ID, parse_column, raw_record
from ml.settings import Settings

# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFormat:
    """Where a source keeps the text and the label; everything else follows the contract."""

    text_column: str = "text"
    intent_column: str = "intent"


REQUEST_FORMATS: dict[str, RequestFormat] = {
    "banking77": RequestFormat(intent_column="category"),
}


def request_format_for(source: str) -> RequestFormat:
    return REQUEST_FORMATS.get(source, RequestFormat())


def stable_request_id(source: str, text: str) -> str:
    """A source without ids gets one from its name and the text: same text, same id."""
    digest = hashlib.sha256(f"{source}\x1f{text}".encode()).hexdigest()[:16]
    return f"{source}-{digest}"


REQUEST_OPTIONAL = ("request_id", "source", "received_at")


@dataclass(frozen=True)
class MappedDrop:
    frame: pl.DataFrame
    ignored_columns: list[str]


def map_request_drop(raw: pl.DataFrame, drop: Drop) -> MappedDrop:
    """Contract columns from a drop; ids, source and receipt time filled where the file has none."""
    fmt = request_format_for(drop.source)
    require_file_columns(drop.uri, raw, [fmt.text_column], f"a {drop.source!r} request drop")
    source = pl.col("source") if "source" in raw.columns else pl.lit(drop.source)
    if "request_id" in raw.columns:
        request_id = pl.col("request_id")
    else:
        request_id = pl.struct(source.alias("s"), pl.col(fmt.text_column).alias("t")).map_elements(
            lambda row: None if row["t"] is None else stable_request_id(row["s"], row["t"]),
            return_dtype=pl.Utf8,
        )
    intent = (
        pl.col(fmt.intent_column) if fmt.intent_column in raw.columns else pl.lit(None, pl.Utf8)
    )
    received_at = (
        pl.col("received_at") if "received_at" in raw.columns else pl.lit(drop.registered_at)
    )
    used = {fmt.text_column, fmt.intent_column, *REQUEST_OPTIONAL, ROW_COLUMN}
    frame = raw.select(
        request_id.alias("request_id"),
        pl.col(fmt.text_column).alias("text"),
        intent.alias("intent"),
        source.alias("source"),
        received_at.alias("received_at"),
        pl.format(f"{drop.drop_id}:{{}}", ROW_COLUMN).alias(RAW_ROW_ID),
        raw_record(raw).alias(RAW_RECORD),
        pl.col(ROW_COLUMN),
        pl.lit(drop.drop_id).alias("drop_id"),
    )
    return MappedDrop(frame, [c for c in raw.columns if c not in used])


# --- demand ---------------------------------------------------------------------------------

ORANGE_JUICE_WEEK_ONE = date(1989, 9, 14)
"""Dominick's week 1 began on Thursday 1989-09-14."""


def orange_juice_week_start(week: int) -> date:
    return ORANGE_JUICE_WEEK_ONE + timedelta(days=7 * (week - 1))


def _extras_json(raw: pl.DataFrame, used: set[str]) -> pl.Expr:
    extras = [c for c in raw.columns if c not in used and c != ROW_COLUMN]
    if not extras:
        return pl.lit(None, pl.Utf8)
    return pl.struct(extras).struct.json_encode()


def _map_contract_demand(raw: pl.DataFrame, freq: str) -> pl.DataFrame:
    used = {*DEMAND_CONTRACT.columns}

    def optional(name: str, default: object) -> pl.Expr:
        return pl.col(name) if name in raw.columns else pl.lit(default).cast(pl.Utf8)

    return raw.select(
        "store",
        "item",
        "period_start",
        optional("freq", freq).alias("freq"),
        "units",
        optional("price", None).alias("price"),
        optional("deal", 0).alias("deal"),
        optional("feature", 0).alias("feature"),
        _extras_json(raw, used).alias("extra_covariates"),
    )


def _map_orange_juice(raw: pl.DataFrame, freq: str) -> pl.DataFrame:
    brand = pl.col("brand").str.strip_chars().cast(pl.Int32, strict=False)
    week = pl.col("week").str.strip_chars().cast(pl.Int32, strict=False)
    own_price = pl.coalesce(pl.when(brand == b).then(pl.col(f"price{b}")) for b in range(1, 12))
    used = {"store", "brand", "week", "logmove", "deal", "feat", "constant", "profit"}
    return raw.select(
        pl.col("store").str.strip_chars().alias("store"),
        pl.col("brand").str.strip_chars().alias("item"),
        (pl.lit(ORANGE_JUICE_WEEK_ONE) + pl.duration(days=7 * (week - 1))).alias("period_start"),
        pl.lit(freq).alias("freq"),
        pl.col("logmove")
        .str.strip_chars()
        .cast(pl.Float64, strict=False)
        .exp()
        .round(0)
        .alias("units"),
        own_price.alias("price"),
        pl.col("deal").alias("deal"),
        pl.col("feat").alias("feature"),
        _extras_json(raw, used).alias("extra_covariates"),
    )


@dataclass(frozen=True)
class DemandFormat:
    required: tuple[str, ...]
    mapping: Callable[[pl.DataFrame, str], pl.DataFrame]
    period_columns: tuple[str, ...]
    """The raw columns a row's period comes from (named when a period cannot be read)."""


DEMAND_FORMATS: dict[str, DemandFormat] = {
    "contract": DemandFormat(
        required=("store", "item", "period_start", "units"),
        mapping=_map_contract_demand,
        period_columns=("period_start",),
    ),
    "orange_juice": DemandFormat(
        required=(
            "store",
            "brand",
            "week",
            "logmove",
            "deal",
            "feat",
            *(f"price{b}" for b in range(1, 12)),
        ),
        mapping=_map_orange_juice,
        period_columns=("week",),
    ),
}


@dataclass(frozen=True)
class DemandSource:
    """One demand feed per deployment: where it is, its format, and its period grid."""

    name: str
    uri: str
    format: str
    freq: str
    start: date
    end: date | None = None
    """Exclusive; None for a live feed."""
    max_age_days: float | None = None
    """The cadence promise of a live feed (None for a static historical file: no freshness)."""
    store_attributes_uri: str | None = None
    """A table of numeric attributes per store (one `store` column, one row per store): the
    static covariates of the global models. None: the source has none."""

    @property
    def demand_format(self) -> DemandFormat:
        if self.format not in DEMAND_FORMATS:
            raise ValueError(
                f"demand source {self.name!r}: unknown format {self.format!r}; "
                f"expected one of {sorted(DEMAND_FORMATS)}"
            )
        return DEMAND_FORMATS[self.format]


def synthetic_demand_source(data_home: Path) -> DemandSource:
    return DemandSource(
        name="synthetic",
        uri=str(data_home / "sources" / "demand"),
        format="contract",
        freq="D",
        start=date(2024, 1, 1),
        end=date(2026, 1, 1),
    )


def orange_juice_source(shared_data: Path) -> DemandSource:
    return DemandSource(
        name="orange_juice",
        uri=str(shared_data / "orange_juice" / "oj_sales.csv"),
        format="orange_juice",
        freq="W",
        start=orange_juice_week_start(40),
        end=orange_juice_week_start(149),
        store_attributes_uri=str(shared_data / "orange_juice" / "oj_storedemo.csv"),
    )


def demand_source_of(settings: Settings) -> DemandSource:
    """The deployment's demand source: MLOPS_DEMAND_SOURCE picks a preset (synthetic,
    orange_juice); MLOPS_DEMAND_URI moves it, MLOPS_DEMAND_MAX_AGE_DAYS gives it a cadence."""
    presets = {
        "synthetic": synthetic_demand_source(settings.data_home),
        "orange_juice": orange_juice_source(settings.shared_data),
    }
    name = settings.demand_source
    if name not in presets:
        raise ValueError(f"MLOPS_DEMAND_SOURCE={name!r}: expected one of {sorted(presets)}")
    source = presets[name]
    if settings.demand_uri:
        source = replace(source, uri=settings.demand_uri)
    if settings.demand_max_age_days is not None:
        source = replace(source, max_age_days=settings.demand_max_age_days)
    return source


def demand_files(source: DemandSource) -> list[str]:
    """The file, or every supported file in the folder (sorted, so rows keep a stable order);
    `uri` is a path or any fsspec URI."""
    fs, path = fsspec.core.url_to_fs(source.uri)
    if fs.isdir(path):
        found = list_supported_files(source.uri)
        if problems := [f.problem for f in found if f.problem]:
            raise IngestionError(
                f"{source.uri}: {len(problems)} entry(ies) of the demand folder cannot be read "
                f"(first: {problems[0]})"
            )
        if not found:
            raise IngestionError(f"{source.uri}: no CSV or Parquet files in the demand folder")
        return [f.uri for f in found]
    return [source.uri]


def read_demand_files(source: DemandSource) -> pl.DataFrame:
    """Every row of the source as read, with `_file`, `_row` and its parsed `_period_start`.

    A row whose period cannot be read cannot be placed in any partition: that is a clear error
    naming the file, line and value, never a silent drop.
    """
    fmt = source.demand_format
    frames = []
    for uri in demand_files(source):
        raw = read_raw_table(uri)
        require_file_columns(uri, raw, list(fmt.required), f"demand format {source.format!r}")
        mapped = fmt.mapping(raw, source.freq)
        period = parse_column(pl.col("period_start"), mapped.schema["period_start"], pl.Date)
        periods = mapped.select(period.alias("p"))["p"]
        unreadable = raw.filter(periods.is_null())
        if unreadable.height:
            first = unreadable.row(0, named=True)
            shown = {c: first[c] for c in fmt.period_columns}
            raise IngestionError(
                f"{uri}: line {first[ROW_COLUMN]}: cannot read the period from {shown} "
                f"({unreadable.height} row(s) like this); expected "
                + ("a date YYYY-MM-DD" if source.format == "contract" else "an integer week")
            )
        frames.append(raw.with_columns(pl.lit(uri).alias("_file"), periods.alias("_period_start")))
    return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()


def map_demand_rows(raw: pl.DataFrame, source: DemandSource) -> pl.DataFrame:
    """Contract columns + extra_covariates + provenance, ready for validation."""
    originals = raw.drop("_file", "_period_start")
    mapped = source.demand_format.mapping(originals.drop(ROW_COLUMN), source.freq)
    file_names = raw["_file"].str.split("/").list.last()
    return mapped.with_columns(
        (file_names + ":" + raw[ROW_COLUMN].cast(pl.Utf8)).alias(RAW_ROW_ID),
        originals.select(raw_record(originals)).to_series().alias(RAW_RECORD),
        raw[ROW_COLUMN],
    )


# --- store attributes -----------------------------------------------------------------------


class StoreAttributesError(ValueError):
    """Store attributes that cannot serve as static covariates; the message names the file,
    the column and the store."""


def read_store_attributes(uri: str) -> pl.DataFrame:
    """One row per store: `store` (text) and every other column as a finite number (names
    lower-cased). A duplicate store or a value that is not a finite number is refused, naming
    it: a model cannot be fitted on a guess."""
    raw = read_raw_table(uri)
    raw = raw.rename({c: c.strip().lower() for c in raw.columns if c != ROW_COLUMN})
    require_file_columns(uri, raw, ["store"], "store attributes")
    numbers = [c for c in raw.columns if c not in ("store", ROW_COLUMN)]
    if not numbers:
        raise StoreAttributesError(f"{uri}: no attribute columns beside 'store'")
    stores = raw["store"].str.strip_chars()
    if (blank := raw.filter(stores.is_null() | (stores == ""))).height:
        raise StoreAttributesError(
            f"{uri}: line {blank[ROW_COLUMN][0]}: store is empty ({blank.height} row(s))"
        )
    if (repeated := stores.filter(stores.is_duplicated()).unique().sort()).len():
        raise StoreAttributesError(
            f"{uri}: store(s) {repeated.to_list()[:10]} appear on more than one row"
        )
    frame = raw.select(
        stores.alias("store"),
        *(pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).alias(c) for c in numbers),
    )
    for column in numbers:
        bad = frame[column].is_null() | ~frame[column].is_finite()
        if bad.any():
            row = raw.filter(bad).row(0, named=True)
            value = "empty" if row[column] in (None, "") else repr(row[column])
            raise StoreAttributesError(
                f"{uri}: line {row[ROW_COLUMN]}, store {row['store']}: {column} = {value}, "
                f"not a finite number ({int(bad.sum())} row(s) like this)"
            )
    return frame.sort("store")
