"""Forecast intervals: a planner reads P10–P90 as "8 weeks in 10 land here". Whatever the model
(a point model, an overconfident or a timid quantile model), the interval served is calibrated
on its backtest so that it holds on periods it never saw, and the coverage reported as held out
is counted on folds the calibration did not see."""

import numpy as np
import polars as pl
import pytest

from ml.demand.intervals import (
    IntervalCalibration,
    conformal_offsets,
    held_out_coverage,
    item_totals,
    served_intervals,
    total_calibration,
)


def quantile_rows(rng: np.random.Generator, n: int, spread: float, claimed: float) -> pl.DataFrame:
    """Backtest-like rows: log units scatter around the median with sd `spread`; the model's
    P10/P90 claim an sd of `claimed` (narrower: overconfident; wider: timid)."""
    level = rng.uniform(2.0, 5.0, n)
    actual = np.expm1(level + rng.normal(0.0, spread, n)).clip(0.0)
    z = 1.2816  # the normal 90% quantile
    return pl.DataFrame(
        {
            "fold": rng.integers(1, 4, n),
            "actual": actual,
            "p10": np.expm1(level - z * claimed),
            "p50": np.expm1(level),
            "p90": np.expm1(level + z * claimed),
        }
    )


def coverage(rows: pl.DataFrame) -> float:
    return rows.select(pl.col("actual").is_between(pl.col("p10"), pl.col("p90")).mean()).item()


@pytest.mark.parametrize(("claimed", "widens"), [(0.2, True), (0.8, False)])
def test_a_miscalibrated_quantile_model_serves_intervals_that_hold_on_fresh_periods(
    claimed: float, widens: bool
) -> None:
    rng = np.random.default_rng()  # fresh draws each run: the bound holds, not one sample
    backtest = quantile_rows(rng, 3000, spread=0.4, claimed=claimed)
    calibration = IntervalCalibration.fit(backtest)
    lower, upper = calibration.offsets
    assert (lower > 0 and upper > 0) if widens else (lower < 0 and upper < 0)
    fresh = quantile_rows(rng, 3000, spread=0.4, claimed=claimed)
    raw = coverage(fresh)
    assert (raw < 0.5) if widens else (raw > 0.95)
    assert 0.76 <= coverage(calibration.apply(fresh)) <= 0.84


def test_a_point_model_gets_ratio_intervals_that_conformal_hardly_moves() -> None:
    rng = np.random.default_rng()
    rows = quantile_rows(rng, 3000, spread=0.3, claimed=0.0)
    assert (rows["p10"] == rows["p50"]).all()
    calibration = IntervalCalibration.fit(rows)
    assert calibration.ratios is not None and calibration.ratios[0] < 1 < calibration.ratios[1]
    assert max(abs(o) for o in calibration.offsets) < 0.05
    served = calibration.apply(quantile_rows(rng, 3000, spread=0.3, claimed=0.0))
    assert (served["p10"] <= served["p50"]).all() and (served["p50"] <= served["p90"]).all()
    assert 0.76 <= coverage(served) <= 0.84


def test_served_intervals_keep_the_median_and_never_go_below_zero() -> None:
    rows = pl.DataFrame(
        {"actual": [0.0, 1.0, 50.0, 3.0], "p10": [0.5, 0.8, 9.0, 2.0], "p50": [1.0, 1.0, 10.0, 3.0]}
    ).with_columns((pl.col("p50") * 1.1).alias("p90"))
    served = served_intervals(rows)
    assert served["p50"].to_list() == rows["p50"].to_list()
    assert (served["p10"] >= 0).all() and (served["p10"] <= served["p50"]).all()
    assert (served["p90"] >= served["p50"]).all()
    # Four rows: the finite-sample correction makes each bound reach past every actual.
    assert coverage(served) == 1.0
    assert conformal_offsets(rows.head(0)) == (0.0, 0.0)


def test_held_out_coverage_counts_each_fold_calibrated_on_the_folds_before_it_only() -> None:
    rng = np.random.default_rng()
    calm = quantile_rows(rng, 2000, spread=0.2, claimed=0.2).with_columns(pl.lit(1).alias("fold"))
    wild = quantile_rows(rng, 2000, spread=0.8, claimed=0.2).with_columns(pl.lit(2).alias("fold"))
    rows = pl.concat([calm, wild])
    # Calibrated on everything, the intervals cover 80% in sample; fold 2 judged on fold 1's
    # calibration is what a served model meets, and it misses far more.
    assert 0.78 <= coverage(served_intervals(rows)) <= 0.82
    assert held_out_coverage(rows) < 0.5
    assert held_out_coverage(calm) is None  # one fold: nothing is held out


def store_rows(rng: np.random.Generator, folds: int, stores: int = 10) -> pl.DataFrame:
    """Calibrated store forecasts of 2 items over 100 periods per fold, whose errors are
    independent across stores."""
    frames = []
    for fold in range(1, folds + 1):
        for store in range(stores):
            rows = quantile_rows(rng, 200, spread=0.4, claimed=0.4)
            frames.append(
                rows.with_columns(
                    pl.lit(fold).alias("fold"),
                    pl.lit(f"S{store}").alias("store"),
                    pl.Series("item", ["I1", "I2"] * 100),
                    pl.Series("period_start", [p // 2 for p in range(200)]),
                    pl.lit("lightgbm").alias("model"),
                )
            )
    return pl.concat(frames)


def test_item_totals_sum_the_stores_and_their_interval_is_calibrated_as_a_total() -> None:
    rng = np.random.default_rng()
    backtest = store_rows(rng, folds=3)
    totals = item_totals(backtest, ("fold",))
    assert totals.height == 3 * 2 * 100 and set(totals["stores"]) == {10}
    first = backtest.filter(
        (pl.col("fold") == 1) & (pl.col("item") == "I1") & (pl.col("period_start") == 0)
    )
    assert totals.row(0, named=True)["p50"] == pytest.approx(first["p50"].sum())
    # Summed bounds assume every store misses the same way: far too wide for a total of
    # independent errors. The calibration narrows them to 80% on fresh totals.
    fresh = item_totals(store_rows(rng, folds=3), ("fold",))
    assert coverage(fresh) > 0.97
    calibration = total_calibration(backtest, IntervalCalibration.fit(backtest))
    assert calibration.offsets[0] < 0 and calibration.offsets[1] < 0
    assert 0.72 <= coverage(calibration.apply(fresh)) <= 0.88
