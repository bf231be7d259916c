"""Demand drift: the champion forecaster's realized error (WAPE) on the actuals that have
arrived, against its threshold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from ml.metrics import wape_expr


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
