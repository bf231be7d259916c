"""Demand drift: the champion forecaster's realized errors on the actuals that have arrived,
against the same model's errors in its own backtest (a two-sample test per residual column,
the request drift's comparison), and its realized WAPE."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import polars as pl

from ml.metrics import wape_expr
from ml.monitoring.drift import DriftReport, DriftThresholds, compare_profiles, profile

FORECAST_RESIDUALS = ("log_error", "interval")
"""What demand drift is measured on: log(1 + actual) - log(1 + p50), scale-free across series
and sign-preserving (a level shift moves its median), and where the actual fell against the
P10–P90 interval (a new promotion lift shows as more actuals above P90)."""
RESIDUAL_MIN_EFFECT = {"log_error": 0.1, "interval": 0.05}
"""The smallest moves worth a retraining: the median log error by 0.1 (about 10% more or less
demand than forecast), or a share of actuals outside P10–P90 by 5 points. Each origin's errors
move by less than that in calm backtests, and any row-level test finds them at 1,000 rows."""
BELOW, WITHIN, ABOVE = "below P10", "within P10-P90", "above P90"


@dataclass(frozen=True)
class ForecastErrorDrift:
    """The champion forecaster's WAPE on the actuals that have arrived, against its threshold."""

    window: tuple[date, date] | None
    """First and last period scored (None without a `period_start` column or rows)."""
    wape: float
    threshold: float
    drifted: bool
    rows: int


def forecast_error_drift(
    errors: pl.DataFrame, threshold: float, period_column: str = "period_start"
) -> ForecastErrorDrift:
    """WAPE = sum|actual - p50| / sum|actual| over the rows whose actual has arrived (not null);
    drift when it exceeds `threshold`.

    No scored rows yet is no evidence of drift: drifted is False, wape 0 and rows 0. Actuals that
    are all zero leave WAPE undefined and raise.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    nothing = ForecastErrorDrift(window=None, wape=0.0, threshold=threshold, drifted=False, rows=0)
    if errors.is_empty():
        return nothing
    missing = [c for c in ("actual", "p50") if c not in errors.columns]
    if missing:
        raise ValueError(f"forecast errors lack column(s) {missing}; they have {errors.columns}")
    scored = errors.drop_nulls(["actual", "p50"])
    if scored.is_empty():
        return nothing
    wape = scored.select(wape_expr("actual", "p50")).item()
    if wape is None:
        raise ValueError(
            f"column 'actual' is 0 in all {scored.height} scored rows: WAPE is undefined"
        )
    window = None
    if period_column in scored.columns:
        window = (scored[period_column].min(), scored[period_column].max())
    return ForecastErrorDrift(
        window=window, wape=wape, threshold=threshold, drifted=wape > threshold, rows=scored.height
    )


def forecast_residuals(forecasts: pl.DataFrame) -> pl.DataFrame:
    """FORECAST_RESIDUALS of every row whose actual has arrived (columns actual, p10, p50, p90;
    negative values count as 0, as units do)."""
    missing = [c for c in ("actual", "p10", "p50", "p90") if c not in forecasts.columns]
    if missing:
        raise ValueError(f"forecasts lack column(s) {missing}; they have {forecasts.columns}")
    actual = pl.col("actual").clip(lower_bound=0.0)
    return forecasts.drop_nulls(["actual", "p50"]).select(
        ((actual + 1.0).log() - (pl.col("p50").clip(lower_bound=0.0) + 1.0).log()).alias(
            "log_error"
        ),
        pl.when(actual < pl.col("p10"))
        .then(pl.lit(BELOW))
        .when(actual > pl.col("p90"))
        .then(pl.lit(ABOVE))
        .otherwise(pl.lit(WITHIN))
        .alias("interval"),
    )


def residual_thresholds(thresholds: DriftThresholds | None = None) -> DriftThresholds:
    """`thresholds` with RESIDUAL_MIN_EFFECT under its own min_effect."""
    thresholds = thresholds or DriftThresholds()
    return replace(thresholds, min_effect={**RESIDUAL_MIN_EFFECT, **thresholds.min_effect})


def residual_drift(
    backtest: pl.DataFrame, realized: pl.DataFrame, thresholds: DriftThresholds | None = None
) -> DriftReport:
    """Drift of the realized errors from the same model's backtest errors: KS on `log_error`,
    the pooled chi-square on `interval`, Holm across the two, each needing at least its
    RESIDUAL_MIN_EFFECT (`thresholds.min_effect` overrides it)."""
    residuals = {"backtest": forecast_residuals(backtest), "realized": forecast_residuals(realized)}
    for name, frame in residuals.items():
        if frame.is_empty():
            raise ValueError(f"the {name} forecasts have no row with an actual")
    return compare_profiles(
        profile(residuals["backtest"]),
        profile(residuals["realized"]),
        residual_thresholds(thresholds),
        FORECAST_RESIDUALS,
    )
