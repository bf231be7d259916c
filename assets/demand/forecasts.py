"""Forecasts of the demand champion in DuckDB, and their realized error as actuals arrive."""

from datetime import UTC, datetime

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.demand import GROUP, OWNERS
from assets.demand.forecasting import demand_forecaster_promotion
from assets.metadata import markdown_table
from assets.resources import DUCKDB_POOL, ModelRegistry, Warehouse
from ml.demand.forecaster import forecast_from_champion
from ml.metrics import forecast_errors, forecast_scores

FORECASTS_TABLE = "demand_forecasts"
TOTALS_TABLE = "demand_forecast_totals"
ERRORS_TABLE = "demand_forecast_errors"


@asset(
    deps=[demand_forecaster_promotion],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "P10/P50/P90 of every series for the next horizon from the current champion, in the "
        "DuckDB table demand_forecasts (store, item, period_start, quantiles, model version, "
        "forecast origin, created at), and each item's total over its stores (the stores' P50 "
        "summed, the interval calibrated for totals) in demand_forecast_totals. Re-running an "
        "origin and version replaces them."
    ),
)
def demand_forecasts(
    context: AssetExecutionContext, warehouse: Warehouse, model_registry: ModelRegistry
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    answer = forecast_from_champion(registry)
    version = answer.version
    frame = answer.series.with_columns(pl.col("period_start").cast(pl.Date))
    origin = frame["period_start"].min()
    stamp = (
        pl.lit(version).alias("model_version"),
        pl.lit(origin).alias("forecast_origin"),
        pl.lit(datetime.now(UTC)).alias("created_at"),
    )
    frame = frame.with_columns(*stamp)
    totals = answer.totals.with_columns(pl.col("period_start").cast(pl.Date), *stamp)
    where = "model_version = ? and forecast_origin = ?"
    warehouse.replace_rows_together(
        [
            (FORECASTS_TABLE, frame, where, [version, origin]),
            (TOTALS_TABLE, totals, where, [version, origin]),
        ]
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "model_version": version,
            "forecast_origin": str(origin),
            "series": frame.select("store", "item").n_unique(),
            "assumed": frame["assumed"][0],
            "preview": markdown_table(frame.head(8).drop("created_at")),
            "item_totals": markdown_table(totals.head(8).drop("created_at")),
        }
    )


@asset(
    deps=[demand_forecasts, "mart_demand"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "Realized forecast error as actuals arrive: every stored forecast joined with the "
        "observed demand, per forecast origin and model version (WAPE, MAPE, P10–P90 "
        "coverage): the drift signal for demand."
    ),
)
def demand_forecast_errors(warehouse: Warehouse) -> MaterializeResult:
    scored = warehouse.query(
        f"""
        select f.forecast_origin, f.model_version, f.period_start, m.units as actual,
               f.p10, f.p50, f.p90
        from {FORECASTS_TABLE} f
        join mart_demand m
          on m.store = f.store and m.item = f.item and m.period_start = f.period_start
        where m.units is not null
        """
    )
    window = ["forecast_origin", "model_version"]
    realized = (
        forecast_scores(forecast_errors(scored), window)
        .join(scored.group_by(window).agg(pl.col("period_start").max()), on=window)
        .select(
            *window,
            pl.col("points").cast(pl.Int64),
            "wape",
            "mape",
            "coverage",
            pl.col("period_start").alias("last_period_scored"),
        )
        .sort(window)
    )
    warehouse.replace_rows(ERRORS_TABLE, realized, "true", [])
    return MaterializeResult(
        metadata={
            "windows_with_actuals": realized.height,
            "realized_error": markdown_table(realized)
            if realized.height
            else MetadataValue.md("_no actuals yet for any stored forecast_"),
        }
    )
