"""The P10–P90 intervals a forecaster serves, calibrated on its own backtest, and how well they
hold on weeks they were not calibrated on.

Point models (baselines, Theta) get P10/P90 as multiples of their forecast: the quantiles of
actual / forecast in their backtest. The global models forecast their own quantiles, and quantile
regression is overconfident out of sample (orange juice: 70% of actuals inside P10–P90 on
validation rounds, nominal 80%). Both are then calibrated by split-conformal prediction on the
backtest rows (conformalized quantile regression, one bound at a time, in log1p units): each
bound moves by the amount that leaves 10% of the backtest's actuals beyond it, outward when the
interval was too narrow and inward when it was too wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from ml.demand.panel import QUANTILES

BEYOND = QUANTILES[0]
"""The share of actuals each bound should leave beyond it (0.1 below P10, 0.1 above P90)."""


def is_point(rows: pl.DataFrame) -> bool:
    """Backtest rows of a point model: p10 = p50 = p90 throughout."""
    point = (pl.col("p10") == pl.col("p50")) & (pl.col("p90") == pl.col("p50"))
    return not rows.is_empty() and rows.select(point.all()).item()


def interval_ratios(rows: pl.DataFrame) -> tuple[float, float]:
    """(P10, P90) multipliers of a point forecast: quantiles of actual / forecast in the
    model's own backtests (rows with a positive forecast)."""
    ratios = rows.filter(pl.col("p50") > 0).select(pl.col("actual") / pl.col("p50"))
    if ratios.is_empty():
        return 1.0, 1.0
    values = ratios.to_series().to_numpy()
    return float(np.quantile(values, QUANTILES[0])), float(np.quantile(values, QUANTILES[-1]))


def conformal_offsets(rows: pl.DataFrame) -> tuple[float, float]:
    """(lower, upper): how far P10 moves down and P90 up in log1p units (negative: inward) so
    that at most 10% of these rows' actuals fall below P10 and 10% above P90, with split
    conformal's finite-sample correction ((n + 1) / n)."""
    if rows.is_empty():
        return 0.0, 0.0
    actual = np.log1p(rows["actual"].to_numpy())
    below = np.log1p(rows["p10"].to_numpy()) - actual
    above = actual - np.log1p(rows["p90"].to_numpy())
    n = len(actual)
    level = min(1.0, math.ceil((n + 1) * (1 - BEYOND)) / n)
    return (
        float(np.quantile(below, level, method="higher")),
        float(np.quantile(above, level, method="higher")),
    )


@dataclass(frozen=True)
class IntervalCalibration:
    """What turns a model's raw forecast into the interval it serves."""

    ratios: tuple[float, float] | None
    """Point models: P10/P90 multipliers of the forecast; None for quantile models."""
    offsets: tuple[float, float] = (0.0, 0.0)
    """Conformal moves of P10 (down) and P90 (up), in log1p units."""

    @classmethod
    def fit(cls, rows: pl.DataFrame) -> IntervalCalibration:
        """From one model's backtest rows."""
        uncalibrated = cls(interval_ratios(rows) if is_point(rows) else None)
        return cls(uncalibrated.ratios, conformal_offsets(uncalibrated.apply(rows)))

    def apply_values(self, values: np.ndarray) -> np.ndarray:
        """(periods × 3) P10/P50/P90, or point forecasts repeated 3 times, as served."""
        values = np.clip(np.sort(values, axis=1), 0.0, None)
        p10, p50, p90 = values[:, 0], values[:, 1], values[:, 2]
        if self.ratios is not None:
            p10, p90 = p50 * self.ratios[0], p50 * self.ratios[1]
        lower, upper = self.offsets
        p10 = np.minimum(np.clip(np.expm1(np.log1p(p10) - lower), 0.0, None), p50)
        p90 = np.maximum(np.expm1(np.log1p(p90) + upper), p50)
        return np.stack([p10, p50, p90], axis=1)

    def apply(self, rows: pl.DataFrame) -> pl.DataFrame:
        if rows.is_empty():
            return rows
        served = self.apply_values(rows.select("p10", "p50", "p90").to_numpy().astype(float))
        return rows.with_columns(
            pl.Series("p10", served[:, 0]),
            pl.Series("p50", served[:, 1]),
            pl.Series("p90", served[:, 2]),
        )

    def to_json(self) -> dict:
        return {"ratios": list(self.ratios) if self.ratios else None, "offsets": list(self.offsets)}

    @classmethod
    def from_json(cls, data: dict) -> IntervalCalibration:
        ratios = data.get("ratios")
        return cls(tuple(ratios) if ratios else None, tuple(data.get("offsets", (0.0, 0.0))))


def served_intervals(rows: pl.DataFrame) -> pl.DataFrame:
    """One model's backtest rows with the P10/P90 its fitted forecaster serves."""
    return IntervalCalibration.fit(rows).apply(rows)


def held_out_coverage(rows: pl.DataFrame) -> float | None:
    """Share of one model's actuals inside P10–P90 on each fold after the first, calibrated on
    the folds before it only (as a forecaster calibrated on its backtest meets the periods
    after it). None with a single fold."""
    folds = sorted(rows["fold"].unique().to_list()) if not rows.is_empty() else []
    inside, total = 0, 0
    for fold in folds[1:]:
        calibration = IntervalCalibration.fit(rows.filter(pl.col("fold") < fold))
        served = calibration.apply(rows.filter(pl.col("fold") == fold))
        inside += served.select(
            pl.col("actual").is_between(pl.col("p10"), pl.col("p90")).sum()
        ).item()
        total += served.height
    return inside / total if total else None


def served_coverage(results: pl.DataFrame) -> pl.DataFrame:
    """Per model of backtest `results`: its `held_out_coverage` as `served_coverage`."""
    return pl.DataFrame(
        [
            {"model": model, "served_coverage": held_out_coverage(rows)}
            for (model,), rows in results.partition_by("model", as_dict=True).items()
        ],
        schema={"model": pl.Utf8, "served_coverage": pl.Float64},
    )


def item_totals(rows: pl.DataFrame, by: tuple[str, ...] = ()) -> pl.DataFrame:
    """Bottom-up totals per item and period (and `by`): the stores' actuals and bounds summed,
    and how many stores. The summed P50 is the reconciled total; the summed bounds are too wide
    (they assume every store misses the same way), which the total's own calibration fixes."""
    columns = [c for c in ("actual", "p10", "p50", "p90") if c in rows.columns]
    return (
        rows.group_by(*by, "item", "period_start")
        .agg(pl.col(columns).sum(), pl.col("store").n_unique().alias("stores"))
        .sort(*by, "item", "period_start")
    )


def total_calibration(rows: pl.DataFrame, stores: IntervalCalibration) -> IntervalCalibration:
    """How one model's summed store bounds become the item total's P10/P90, calibrated on its
    backtest totals (store intervals as `stores` serves them, summed per item, period and
    fold)."""
    return IntervalCalibration.fit(item_totals(stores.apply(rows), ("fold",)))
