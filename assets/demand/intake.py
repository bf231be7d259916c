"""Retail demand: the configured source → raw rows per period → validated + quarantined rows;
the valid rows are published to dbt only when every blocking check of the run passes."""

from datetime import UTC, date, datetime

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
    asset,
    multi_asset,
)

from assets.contract_outputs import (
    PUBLISHED,
    contract_check_results,
    contract_check_specs,
    prepare_publication,
    publication_of,
    validation_results,
    validation_specs,
)
from assets.demand import GROUP, OWNERS
from assets.metadata import column_schema, picture, preview
from assets.resources import DUCKDB_POOL, DataHome, Warehouse
from ml.data.contracts import DEMAND_CONTRACT
from ml.data.ingestion import IngestionError
from ml.data.objects import exists, read_parquet, write_parquet
from ml.data.sources import (
    DemandSource,
    map_demand_rows,
    read_demand_files,
    read_store_attributes,
)
from ml.data.validation import RAW_ROW_ID, validate_against_contract
from ml.demand.calendar import calendar_days as build_calendar
from ml.plots import series_figure

CALENDAR_RANGE = (date(1985, 1, 1), date(2035, 12, 31))
STORE_ATTRIBUTES_TABLE = "store_attributes"


def demand_partitions(source: DemandSource) -> TimeWindowPartitionsDefinition:
    """Partitions follow the source's frequency: daily, or weekly on the source's weekday."""
    end = source.end.isoformat() if source.end else None
    if source.freq == "D":
        return DailyPartitionsDefinition(start_date=source.start.isoformat(), end_date=end)
    if source.freq == "W":
        return WeeklyPartitionsDefinition(
            start_date=source.start.isoformat(),
            end_date=end,
            day_offset=source.start.isoweekday() % 7,
        )
    raise ValueError(f"demand source {source.name!r}: unsupported frequency {source.freq!r}")


def _units_picture(valid: pl.DataFrame) -> MetadataValue:
    totals = valid.group_by("period_start").agg(pl.col("units").sum()).sort("period_start")
    figure = series_figure(
        totals["period_start"].to_list(), totals["units"].to_list(), "units sold, all series"
    )
    return picture(figure, "Total units per period")


def build_demand_assets(source: DemandSource) -> list[AssetsDefinition]:
    """The demand assets for one deployment's source (its frequency fixes the partitions)."""
    partitions = demand_partitions(source)

    @asset(
        name="raw_demand",
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=GROUP,
        owners=OWNERS,
        code_version="1",
        kinds={"python", "parquet"},
        description=(
            f"Demand rows of source {source.name!r} ({source.format} format, {source.uri}) "
            "exactly as read, one partition per period; a backfill reads the source once."
        ),
    )
    def raw_demand(context: AssetExecutionContext, data_home: DataHome) -> MaterializeResult:
        window = context.partition_time_window
        rows = read_demand_files(source)
        period = pl.col("_period_start")
        in_window = rows.filter((period >= window.start.date()) & (period < window.end.date()))
        for key in context.partition_keys:
            part = partitions.time_window_for_partition_key(key)
            write_parquet(
                data_home.raw_partition_uri("demand", key),
                in_window.filter((period >= part.start.date()) & (period < part.end.date())),
            )
        first, last = (
            partitions.get_first_partition_window(),
            partitions.get_last_partition_window(),
        )
        outside = (
            rows.filter((period < first.start.date()) | (period >= last.end.date())).height
            if first and last
            else 0
        )
        return MaterializeResult(
            metadata={
                "dagster/row_count": in_window.height,
                "partitions": len(context.partition_keys),
                "empty_partitions": sum(
                    1
                    for key in context.partition_keys
                    if in_window.filter(
                        period == partitions.time_window_for_partition_key(key).start.date()
                    ).is_empty()
                ),
                "source_rows_outside_all_partitions": outside,
                "files": ", ".join(rows["_file"].unique(maintain_order=True).to_list()),
                "dagster/column_schema": column_schema(in_window),
                "preview": preview(in_window),
            }
        )

    @multi_asset(
        name="validate_demand",
        specs=validation_specs(
            "demand",
            raw_demand,
            GROUP,
            OWNERS,
            "Demand rows that meet the contract: one row per store, item and period, units ≥ 0, "
            "promotion shares in [0, 1]; extra source columns as JSON. A run's rows are "
            "`published` (read by dbt) only when all its blocking checks pass.",
        ),
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=contract_check_specs("validated_demand"),
        pool=DUCKDB_POOL,
    )
    def validate_demand(context: AssetExecutionContext, data_home: DataHome, warehouse: Warehouse):
        window = context.partition_time_window
        paths = [data_home.raw_partition_uri("demand", k) for k in context.partition_keys]
        missing = [p for p in paths if not exists(p)]
        if missing:
            raise IngestionError(
                f"no raw copy for {len(missing)} partition(s) (first: {missing[0]}); "
                "materialize raw_demand for them first"
            )
        raw = pl.concat([read_parquet(p) for p in paths], how="diagonal_relaxed")
        mapped = map_demand_rows(raw, source)
        outcome = validate_against_contract(mapped, DEMAND_CONTRACT, carry=("extra_covariates",))
        periods = raw.select(mapped[RAW_ROW_ID], pl.col("_period_start").alias("period_start"))
        quarantine = outcome.quarantine.join(periods, on=RAW_ROW_ID, how="left").with_columns(
            pl.lit(datetime.now(UTC)).alias("quarantined_at")
        )
        bounds = [window.start.date(), window.end.date()]
        where = "period_start >= ? and period_start < ?"
        prepare_publication(warehouse, "validated_demand")
        # The table as dbt would see it with this window published: the other windows'
        # published rows (their keys cannot meet this window's: periods differ) and this one's.
        others = warehouse.query_if_exists(
            "validated_demand",
            "select count(*) - count(distinct (store, item, period_start)) as duplicates, "
            f"max(period_start) as newest from validated_demand where {PUBLISHED} "
            f"and not ({where})",
            bounds,
            {"duplicates": pl.Int64, "newest": pl.Date},
        )
        key = list(DEMAND_CONTRACT.key)
        duplicates = outcome.valid.height - outcome.valid.select(key).n_unique()
        newest = outcome.valid["period_start"].max()
        if others.height:
            duplicates += int(others["duplicates"][0] or 0)
            newest = max((d for d in (newest, others["newest"][0]) if d is not None), default=None)
        checks = contract_check_results(
            "validated_demand",
            DEMAND_CONTRACT,
            outcome,
            duplicate_keys_in_table=duplicates,
            newest=datetime.combine(newest, datetime.min.time(), UTC) if newest else None,
            max_age_days=source.max_age_days,
        )
        publication = publication_of(checks)
        warehouse.replace_rows_together(
            [
                ("validated_demand", publication.stamp(outcome.valid), where, bounds),
                ("quarantine_demand", quarantine, where, bounds),
            ]
        )
        series = outcome.valid.select("store", "item").n_unique()
        yield from validation_results(
            "demand",
            outcome,
            quarantine,
            {
                **publication.metadata(),
                "series": series,
                "periods": f"{window.start.date()} → {window.end.date()} (exclusive)",
                "units": _units_picture(outcome.valid) if outcome.valid.height else "no rows",
            },
        )
        yield from checks

    @asset(
        name=STORE_ATTRIBUTES_TABLE,
        group_name=GROUP,
        owners=OWNERS,
        code_version="1",
        kinds={"python", "duckdb"},
        pool=DUCKDB_POOL,
        description=(
            "Numeric attributes per store from the demand source "
            f"({source.store_attributes_uri or 'none for this source'}), checked (one row per "
            "store, every value a finite number): static covariates of the global models. A "
            "bad file fails the run, naming the line, store and column."
        ),
    )
    def store_attributes(warehouse: Warehouse) -> MaterializeResult:
        if source.store_attributes_uri is None:
            frame = pl.DataFrame(schema={"store": pl.Utf8})
        else:
            frame = read_store_attributes(source.store_attributes_uri)
        warehouse.replace_table(STORE_ATTRIBUTES_TABLE, frame)
        return MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "attributes": ", ".join(frame.columns[1:]) or "none",
                "dagster/column_schema": column_schema(frame),
                "preview": preview(frame),
            }
        )

    return [raw_demand, validate_demand, store_attributes]


@asset(
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "One row per day 1985–2035 with weekday, ISO week, month and US public holidays "
        "(the `holidays` package): the calendar features of the demand mart."
    ),
)
def calendar_days(warehouse: Warehouse) -> MaterializeResult:
    frame = build_calendar(*CALENDAR_RANGE)
    warehouse.replace_rows("calendar_days", frame, "true", [])
    return MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "holidays": int(frame["is_holiday"].sum()),
            "dagster/column_schema": column_schema(frame),
        }
    )
