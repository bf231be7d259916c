"""Demand forecasting: a planner hands over the demand mart and gets a panel of store × item
series whose frequency, horizon and season come from the data, baselines and models scored by
rolling-origin backtests on the periods that were really observed, a model chosen on those
scores, and the covariates of the periods to forecast."""

import json
import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from darts import TimeSeries

from ml.data.sources import StoreAttributesError
from ml.demand.backtesting import backtest, mase_scales, score_backtests, select_model
from ml.demand.forecaster import DemandForecaster, fit_forecaster
from ml.demand.models import LOCAL_KINDS, GlobalModelSettings, MovingMedian, global_inputs
from ml.demand.panel import (
    DemandPanel,
    ForecastingError,
    ForecastSettings,
    build_panel,
    future_covariates,
    infer_freq,
    shelf_covariates,
)

SMALL = ForecastSettings(horizon=7, folds=2)
"""A week ahead, two folds: 14 held-out days, and a series under 28 days is too short."""
START = date(2024, 1, 1)
ABSENT = "absent"
"""In a hand-written series: no row at all for that period (None: a row with null units)."""


def mart(
    series: dict[tuple[str, str], list[float | str | None]],
    *,
    start: date = START,
    step: int = 1,
    prices: list[float] | None = None,
) -> pl.DataFrame:
    """Rows shaped like `mart_demand`. Every series ends on the same period (a shorter list
    starts later), as the mart's series do when an item is listed later in one store."""
    length = max(len(values) for values in series.values())
    rows = []
    for (store, item), values in series.items():
        first = length - len(values)
        for k, units in enumerate(values, start=first):
            if units == ABSENT:
                continue
            rows.append(
                {
                    "store": store,
                    "item": item,
                    "period_start": start + timedelta(days=step * k),
                    "units": units,
                    "price": prices[k] if prices else 2.0,
                    "deal": 0,
                    "feature": 0,
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "store": pl.Utf8,
            "item": pl.Utf8,
            "period_start": pl.Date,
            "units": pl.Float64,
            "price": pl.Float64,
            "deal": pl.Int8,
            "feature": pl.Int8,
        },
    )


def weekly_pattern(days: int, level: float = 10.0) -> list[float | str | None]:
    return [level + (k % 7) for k in range(days)]


# --- frequency ---------------------------------------------------------------------------


def test_the_frequency_is_read_from_the_spacing_of_the_periods() -> None:
    days = [START + timedelta(days=k) for k in range(10)]
    assert infer_freq(days) == "D"
    assert infer_freq(days + days) == "D"  # many series share the same periods
    for weekday in range(7):  # weeks may start on any weekday
        first = START + timedelta(days=weekday)
        assert infer_freq([first + timedelta(weeks=k) for k in range(6)]) == "W"


def test_periods_missing_everywhere_leave_gaps_that_are_multiples_of_the_step() -> None:
    days = [START + timedelta(days=k) for k in (0, 1, 2, 5, 6, 13)]
    assert infer_freq(days) == "D"
    weeks = [START + timedelta(weeks=k) for k in (0, 1, 3, 4, 8)]
    assert infer_freq(weeks) == "W"


def test_irregular_periods_or_a_single_one_are_refused_with_the_reason() -> None:
    with pytest.raises(ForecastingError, match=r"spaced \[2, 3\] days apart"):
        infer_freq([START, START + timedelta(days=2), START + timedelta(days=5)])
    with pytest.raises(ForecastingError, match=r"spaced \[7, 10\] days apart"):
        infer_freq([START, START + timedelta(days=7), START + timedelta(days=17)])
    with pytest.raises(ForecastingError, match="spaced"):  # monthly is neither
        infer_freq([date(2024, m, 1) for m in range(1, 7)])
    with pytest.raises(ForecastingError, match="fewer than two periods"):
        infer_freq([START, START])
    with pytest.raises(ForecastingError, match="fewer than two periods"):
        infer_freq([])


# --- the panel ---------------------------------------------------------------------------


def test_daily_data_gets_a_four_week_horizon_and_a_weekly_season() -> None:
    panel = build_panel(mart({("S1", "I1"): weekly_pattern(30)}))
    assert (panel.settings.freq, panel.settings.horizon, panel.settings.season) == ("D", 28, 7)
    assert panel.targets[0].freq_str == "D"
    assert panel.last_period == START + timedelta(days=29)


def test_weekly_data_gets_a_quarter_ahead_and_a_yearly_season_on_its_own_weekday() -> None:
    wednesday = date(2024, 1, 3)
    values = weekly_pattern(30)
    values[5] = ABSENT  # a week missing everywhere: still weekly, and still a period
    panel = build_panel(mart({("S1", "I1"): values, ("S2", "I1"): values}, start=wednesday, step=7))
    assert (panel.settings.freq, panel.settings.horizon, panel.settings.season) == ("W", 12, 52)
    assert panel.targets[0].freq_str == "W-WED"
    assert len(panel.targets[0]) == 30
    assert not panel.observed[0][5] and panel.observed[0].sum() == 29
    # Settings given by the caller win over the defaults.
    mine = build_panel(
        mart({("S1", "I1"): values}, start=wednesday, step=7),
        ForecastSettings(horizon=4, season=13),
    )
    assert (mine.settings.horizon, mine.settings.season) == (4, 13)


def test_a_missing_period_stays_missing_whether_its_row_is_absent_or_its_units_null() -> None:
    values = weekly_pattern(40)
    values[10] = ABSENT
    values[20] = None
    panel = build_panel(mart({("S1", "I1"): values}), SMALL)
    target = panel.targets[0].values()[:, 0]
    assert len(target) == 40  # the absent row is a period of the grid all the same
    assert np.flatnonzero(~panel.observed[0]).tolist() == [10, 20]
    # Filled for fitting between its neighbours, never a zero.
    assert target[10] == pytest.approx((values[9] + values[11]) / 2)
    assert target[20] == pytest.approx((values[19] + values[21]) / 2)
    assert np.all(target > 0)


def test_a_series_without_rows_for_the_last_periods_still_ends_on_the_last_period() -> None:
    values = weekly_pattern(56)
    values[54] = values[55] = ABSENT  # nothing reported yet for the last two days
    panel = build_panel(mart({("S1", "I1"): values, ("S2", "I1"): weekly_pattern(56)}), SMALL)
    assert [len(t) for t in panel.targets] == [56, 56]
    assert np.flatnonzero(~panel.observed[0]).tolist() == [54, 55]
    results = backtest(panel, "naive", [0])
    assert results.group_by("fold").len().sort("fold").rows() == [(1, 7), (2, 5)]


def test_each_series_is_classified_so_that_it_gets_a_fitting_model() -> None:
    mostly_zero = [0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 1.0] * 6
    panel = build_panel(
        mart(
            {
                ("S1", "dead"): [0.0] * 42,
                ("S1", "new"): weekly_pattern(20),
                ("S1", "rare"): mostly_zero,
                ("S1", "steady"): weekly_pattern(42),
                ("S2", "never_seen"): [None] * 42,
            }
        ),
        SMALL,
    )
    kinds = dict(zip(panel.keys, panel.kinds, strict=True))
    assert kinds == {
        ("S1", "dead"): "all_zero",
        ("S1", "new"): "too_short",
        ("S1", "rare"): "intermittent",
        ("S1", "steady"): "regular",
        ("S2", "never_seen"): "all_zero",
    }
    assert panel.index("regular") == [panel.keys.index(("S1", "steady"))]


def test_demand_data_without_the_mart_columns_or_rows_is_refused() -> None:
    good = mart({("S1", "I1"): weekly_pattern(30)})
    with pytest.raises(ForecastingError, match=r"lacks columns \['deal', 'price'\]"):
        build_panel(good.drop("price", "deal"))
    with pytest.raises(ForecastingError, match="no rows"):
        build_panel(good.clear())


def test_the_synthetic_demand_builds_a_daily_panel_of_every_store_and_item() -> None:
    from ml.synthetic.demand import generate_demand

    demand = generate_demand(
        stores=2, items=2, start=date(2024, 1, 1), end=date(2024, 6, 30), seed=3
    ).with_columns(pl.col("period_start").cast(pl.Date), pl.col("units").cast(pl.Float64))
    panel = build_panel(demand)
    assert panel.settings.freq == "D"
    assert sorted(panel.keys) == sorted(set(demand.select("store", "item").iter_rows()))
    assert {t.end_time().date() for t in panel.targets} == {date(2024, 6, 30)}
    # Every row is an observed period; the days the synthetic data drops are unobserved.
    assert sum(int(m.sum()) for m in panel.observed) == demand["units"].count()
    assert any(not m.all() for m in panel.observed)
    assert "intermittent" in panel.kinds  # the last item is mostly zero days


# --- models ------------------------------------------------------------------------------


def test_the_moving_median_is_the_median_of_the_last_window_whatever_a_spike() -> None:
    history = [100.0] * 10 + [5.0, 6.0, 4.0, 250.0, 5.0, 7.0, 3.0]
    model = MovingMedian(window=7).fit(TimeSeries.from_values(np.array(history)))
    forecast = model.predict(3).values()[:, 0]
    assert forecast.tolist() == [5.0, 5.0, 5.0]
    assert MovingMedian(window=2).fit(TimeSeries.from_values(np.array(history))).predict(
        1
    ).values()[0, 0] == pytest.approx(5.0)


# --- backtests ---------------------------------------------------------------------------


MISSING_IN_S1 = {START + timedelta(days=45), START + timedelta(days=51)}


@pytest.fixture(scope="module")
def panel() -> DemandPanel:
    """56 days; the last 14 are two folds of a week. S1 misses day 45 (null units) and day 51
    (no row); S3 was listed 24 days ago: 10 days of history before the first origin."""
    with_gaps = weekly_pattern(56)
    with_gaps[45] = None
    with_gaps[51] = ABSENT
    return build_panel(
        mart(
            {
                ("S1", "I1"): with_gaps,
                ("S2", "I1"): weekly_pattern(56, level=20.0),
                ("S3", "I1"): weekly_pattern(24, level=5.0),
            }
        ),
        SMALL,
    )


def fold_windows(panel: DemandPanel) -> dict[int, list[date]]:
    first = panel.first_test_period
    h = panel.settings.horizon
    return {
        fold: [first + timedelta(days=(fold - 1) * h + k) for k in range(h)]
        for fold in range(1, panel.settings.folds + 1)
    }


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_each_model_is_backtested_on_folds_that_end_at_the_last_period(
    panel: DemandPanel, kind: str
) -> None:
    results = backtest(panel, kind, panel.index())
    windows = fold_windows(panel)
    assert windows[2][-1] == panel.last_period == START + timedelta(days=55)
    assert set(windows[1]).isdisjoint(windows[2])
    assert results["model"].unique().to_list() == [kind]
    scored = {"S1", "S2"} | (set() if kind == "seasonal_naive" else {"S3"})
    assert set(results["store"]) == scored
    for (store,), rows in results.group_by("store"):
        assert sorted(set(rows["fold"])) == [1, 2]
        for fold, window in windows.items():
            periods = rows.filter(pl.col("fold") == fold)["period_start"].to_list()
            expected = [d for d in window if store != "S1" or d not in MISSING_IN_S1]
            assert sorted(periods) == expected, (store, fold)
    assert results.height == 7 * 2 * len(scored) - 2
    assert (results.select("p10", "p50", "p90").min_horizontal() >= 0).all()


def test_missing_actuals_are_not_scored_and_scored_actuals_are_the_data(
    panel: DemandPanel,
) -> None:
    results = backtest(panel, "naive", panel.index())
    s1 = results.filter(pl.col("store") == "S1")
    assert MISSING_IN_S1.isdisjoint(s1["period_start"].to_list())
    expected = {START + timedelta(days=k): v for k, v in enumerate(weekly_pattern(56)) if k >= 42}
    assert {r["period_start"]: r["actual"] for r in s1.iter_rows(named=True)} == {
        d: v for d, v in expected.items() if d not in MISSING_IN_S1
    }
    # Naive: each fold repeats the last value before its origin (day 41, then day 48).
    assert s1.filter(pl.col("fold") == 1)["p50"].unique().to_list() == [10.0 + 41 % 7]
    assert s1.filter(pl.col("fold") == 2)["p50"].unique().to_list() == [10.0 + 48 % 7]


def test_seasonal_naive_needs_two_seasons_of_history_before_the_first_origin(
    panel: DemandPanel,
) -> None:
    s3 = [panel.keys.index(("S3", "I1"))]
    assert backtest(panel, "seasonal_naive", s3).is_empty()
    assert backtest(panel, "naive", s3).height == 14
    # With two full seasons it repeats last week exactly, which is this data.
    s2 = backtest(panel, "seasonal_naive", [panel.keys.index(("S2", "I1"))])
    assert s2["p50"].to_list() == s2["actual"].to_list()


@pytest.fixture(scope="module", params=["tide", "lightgbm"])
def global_results(request: pytest.FixtureRequest) -> pl.DataFrame:
    """Each global model, trained once and tiny: two 56-day series, two one-week folds."""
    prices = [2.0 if k % 10 else 1.5 for k in range(56)]
    tiny = build_panel(
        mart(
            {("S1", "I1"): weekly_pattern(56), ("S2", "I1"): weekly_pattern(56, level=30.0)},
            prices=prices,
        ),
        SMALL,
    )
    return backtest(
        tiny,
        request.param,
        tiny.index(),
        GlobalModelSettings(
            epochs=2, hidden_size=16, batch_size=32, accelerator="cpu", trees=30, leaves=7
        ),
    )


@pytest.mark.filterwarnings("ignore")  # lightning's chatter on a CPU
def test_the_global_model_forecasts_quantiles_in_order_and_never_below_zero(
    global_results: pl.DataFrame,
) -> None:
    assert global_results.columns == [
        "store",
        "item",
        "model",
        "fold",
        "period_start",
        "actual",
        "p10",
        "p50",
        "p90",
    ]
    assert global_results.group_by("store", "fold").len()["len"].to_list() == [7] * 4
    assert global_results["period_start"].max() == START + timedelta(days=55)
    q = global_results.select("p10", "p50", "p90")
    assert q.null_count().sum_horizontal().item() == 0
    assert (q["p10"] >= 0).all()
    assert (q["p10"] <= q["p50"]).all() and (q["p50"] <= q["p90"]).all()
    assert (q["p10"] < q["p90"]).any()  # an interval, not a point repeated


def price_elastic_mart(seed: int = 3) -> pl.DataFrame:
    """Three stores × three items, 120 days; each day's prices drawn from 1.5 / 2 / 2.5 and the
    units Poisson around 200 × price^-1 × exp(-2 × relative price): dearer sells less, and so
    does cheaper competition on the same shelf. Busier on Saturdays."""
    rng = np.random.default_rng(seed)
    rows = []
    for store in ("S1", "S2", "S3"):
        for k in range(120):
            prices = rng.choice([1.5, 2.0, 2.5], size=3)
            relative = np.log(prices) - np.log(prices).mean()
            for n, item in enumerate(("I1", "I2", "I3")):
                mean = 200 / prices[n] * np.exp(-2 * relative[n]) * (1.3 if k % 7 == 5 else 1.0)
                rows.append(
                    {
                        "store": store,
                        "item": item,
                        "period_start": START + timedelta(days=k),
                        "units": float(rng.poisson(mean)),
                        "price": float(prices[n]),
                        "deal": 0,
                        "feature": 0,
                    }
                )
    return pl.DataFrame(rows)


STORE_ATTRIBUTES = pl.DataFrame(
    {"store": ["S1", "S2", "S3"], "income": [10.2, 10.9, 11.4], "age60": [0.1, 0.3, 0.2]}
)


def test_the_global_models_read_each_stores_attributes_beside_its_codes() -> None:
    panel = build_panel(price_elastic_mart(), SMALL, STORE_ATTRIBUTES)
    inputs = global_inputs(panel.targets, panel.keys, panel.keys, panel.store_attributes)
    for (store, item), series in zip(panel.keys, inputs, strict=True):
        static = series.static_covariates.iloc[0].to_dict()
        row = STORE_ATTRIBUTES.filter(pl.col("store") == store).row(0, named=True)
        assert static == pytest.approx(  # float32, as the targets
            {
                "store": float(int(store[1]) - 1),
                "item": float(int(item[1]) - 1),
                "income": row["income"],
                "age60": row["age60"],
            }
        )


def test_a_store_of_the_demand_data_without_attributes_is_refused_by_name() -> None:
    with pytest.raises(StoreAttributesError, match=r"1 store\(s\).*\['S3'\]"):
        build_panel(price_elastic_mart(), SMALL, STORE_ATTRIBUTES.head(2))


def test_the_boosted_model_beats_the_baselines_when_price_drives_demand() -> None:
    panel = build_panel(price_elastic_mart(), SMALL)
    results = pl.concat(
        [
            backtest(panel, kind, panel.index(), GlobalModelSettings(trees=60))
            for kind in ("naive", "moving_median", "lightgbm")
        ]
    )
    overall = score_backtests(results, mase_scales(panel))["overall"]
    wape = dict(zip(overall["model"], overall["wape"], strict=True))
    # The baselines cannot know tomorrow's price: their errors are the price's own swings.
    assert wape["lightgbm"] < 0.6 * min(wape["naive"], wape["moving_median"]), wape
    assert select_model(overall).best == "lightgbm"


def test_a_planned_higher_price_forecasts_fewer_units_and_a_saved_forecaster_says_the_same(
    tmp_path,
) -> None:
    panel = build_panel(price_elastic_mart(), SMALL, STORE_ATTRIBUTES)
    fallback = backtest(panel, "moving_median", panel.index())
    forecaster = fit_forecaster(panel, "lightgbm", fallback, GlobalModelSettings(trees=60))
    days = [panel.last_period + timedelta(days=k) for k in range(1, 8)]

    def plan(price: float) -> pl.DataFrame:
        return pl.DataFrame({"store": "S2", "item": "I3", "period_start": days, "price": price})

    cheap = forecaster.forecast([("S2", "I3")], 7, plan(1.5))
    dear = forecaster.forecast([("S2", "I3")], 7, plan(2.5))
    assert cheap["model"].unique().to_list() == ["lightgbm"]
    # Against competitors at their last price, 2.5 instead of 1.5 sells about a third in the
    # data: the forecast must move most of that way.
    assert dear["p50"].sum() < 0.6 * cheap["p50"].sum()
    # The competitors' planned discount (own price unchanged) takes sales from it too.
    rivals = pl.concat(
        [plan(2.0)]
        + [plan(1.5).with_columns(pl.lit(other).alias("item")) for other in ("I1", "I2")]
    )
    alone = forecaster.forecast([("S2", "I3")], 7, plan(2.0))
    undercut = forecaster.forecast([("S2", "I3")], 7, rivals)
    assert undercut["p50"].sum() < 0.85 * alone["p50"].sum()
    forecaster.save(tmp_path / "forecaster")
    loaded = DemandForecaster.load(tmp_path / "forecaster")
    assert loaded.store_attributes.equals(STORE_ATTRIBUTES)
    again = loaded.forecast([("S2", "I3")], 7, plan(2.5))
    assert again.select("p10", "p50", "p90").to_numpy() == pytest.approx(
        dear.select("p10", "p50", "p90").to_numpy()
    )


# --- metrics -----------------------------------------------------------------------------


def results_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema=["store", "item", "model", "fold", "period_start", "actual", "p10", "p50", "p90"],
        orient="row",
    )


D1, D2 = date(2024, 3, 1), date(2024, 3, 2)
RESULTS = results_frame(
    [
        # store, item, model, fold, period, actual, p10, p50, p90
        ("S1", "I1", "m", 1, D1, 10.0, 8.0, 12.0, 15.0),
        ("S1", "I1", "m", 1, D2, 0.0, 0.0, 1.0, 2.0),
        ("S2", "I1", "m", 1, D1, 20.0, 21.0, 18.0, 25.0),
        ("S2", "I1", "m", 1, D2, 5.0, 4.0, 5.0, 6.0),
        ("S1", "I1", "worse", 1, D1, 10.0, 0.0, 0.0, 0.0),
        ("S1", "I1", "worse", 1, D2, 0.0, 0.0, 0.0, 0.0),
        ("S2", "I1", "worse", 1, D1, 20.0, 0.0, 0.0, 0.0),
        ("S2", "I1", "worse", 1, D2, 5.0, 0.0, 0.0, 0.0),
    ]
)
SCALES = pl.DataFrame({"store": ["S1", "S2"], "item": ["I1", "I1"], "mase_scale": [2.0, 4.0]})


def test_errors_per_series_are_the_textbook_ones_on_observed_periods() -> None:
    scores = score_backtests(RESULTS, SCALES)
    per_series = {(r["model"], r["store"]): r for r in scores["per_series"].iter_rows(named=True)}
    s1, s2 = per_series["m", "S1"], per_series["m", "S2"]
    # S1: errors 2 and 1 on actuals 10 and 0; the zero actual is left out of MAPE.
    assert s1["wape"] == pytest.approx(3 / 10)
    assert s1["mape"] == pytest.approx(2 / 10)
    assert s1["smape"] == pytest.approx((2 * 2 / 22 + 2 * 1 / 1) / 2)
    assert s1["mase"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert s1["coverage"] == pytest.approx(1.0)
    assert s1["points"] == 2
    # S2: errors 2 and 0; 20 lies below its interval [21, 25].
    assert s2["wape"] == pytest.approx(2 / 25)
    assert s2["mape"] == pytest.approx((2 / 20 + 0) / 2)
    assert s2["smape"] == pytest.approx((2 * 2 / 38 + 0) / 2)
    assert s2["mase"] == pytest.approx((2 / 4 + 0) / 2)
    assert s2["coverage"] == pytest.approx(0.5)
    # Forecasting zero for a zero actual is no error at all (sMAPE 0, not undefined).
    worse_s1 = per_series["worse", "S1"]
    assert worse_s1["smape"] == pytest.approx((2 + 0) / 2)
    assert worse_s1["wape"] == pytest.approx(1.0)


def test_errors_overall_pool_every_series_and_rank_the_models() -> None:
    overall = score_backtests(RESULTS, SCALES)["overall"]
    assert overall["model"].to_list() == ["m", "worse"]  # by WAPE
    m = overall.row(0, named=True)
    assert m["wape"] == pytest.approx((3 + 2) / (10 + 25))
    assert m["mape"] == pytest.approx((0.2 + 0.1 + 0.0) / 3)
    assert m["smape"] == pytest.approx((4 / 22 + 2 + 4 / 38 + 0) / 4)
    assert m["mase"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert m["coverage"] == pytest.approx(3 / 4)
    assert m["points"] == 4
    assert m["item_total_wape"] == pytest.approx(1 / 35)


def test_errors_per_item_are_on_the_total_over_stores() -> None:
    per_item = score_backtests(RESULTS, SCALES)["per_item"]
    m = per_item.filter(pl.col("model") == "m").row(0, named=True)
    # Totals: day 1 actual 30 vs p50 30 in [29, 40]; day 2 actual 5 vs p50 6 in [4, 8].
    assert m["item"] == "I1"
    assert m["points"] == 2
    assert m["wape"] == pytest.approx(1 / 35)
    assert m["mape"] == pytest.approx((0 + 1 / 5) / 2)
    assert m["smape"] == pytest.approx((0 + 2 * 1 / 11) / 2)
    assert m["mase"] == pytest.approx((0 + 1 / 6) / 2)  # the stores' scales add up to 6
    assert m["coverage"] == pytest.approx(1.0)


def test_the_mase_scale_is_the_seasonal_difference_of_observed_history(
    panel: DemandPanel,
) -> None:
    scales = {
        (r["store"], r["item"]): r["mase_scale"] for r in mase_scales(panel).iter_rows(named=True)
    }
    # A repeating weekly pattern: last week is a perfect forecast, the scale is undefined.
    assert math.isnan(scales["S2", "I1"])
    trend = build_panel(mart({("S1", "I1"): [float(k) for k in range(56)]}), SMALL)
    assert mase_scales(trend)["mase_scale"].to_list() == [pytest.approx(7.0)]
    # Ten days before the first origin: under two seasons, so the one-step difference.
    short = build_panel(
        mart({("S1", "I1"): [float(k) for k in range(56)], ("S3", "I1"): [0.0, 2.0] * 12}),
        SMALL,
    )
    assert mase_scales(short).filter(pl.col("store") == "S3")["mase_scale"].item() == 2.0


# --- choosing a model --------------------------------------------------------------------


def overall_frame(rows: dict[str, tuple[float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(model, wape, mase) for model, (wape, mase) in rows.items()],
        schema=["model", "wape", "mase"],
        orient="row",
    )


def test_the_model_with_the_lowest_wape_is_chosen_and_it_beats_the_baselines() -> None:
    selection = select_model(
        overall_frame(
            {
                "naive": (0.40, 1.20),
                "tide": (0.21, 0.70),
                "seasonal_naive": (0.30, 0.90),
                "moving_median": (0.35, 1.00),
                "theta": (0.25, 0.80),
            }
        )
    )
    assert selection.best == "tide"
    assert selection.metric == "wape"
    assert selection.beats_every_baseline and selection.reasons == []
    assert list(selection.scores) == [
        "tide",
        "theta",
        "seasonal_naive",
        "moving_median",
        "naive",
    ]
    assert selection.scores["tide"] == pytest.approx(0.21)
    by_mase = select_model(overall_frame({"tide": (0.2, 0.9), "theta": (0.3, 0.8)}), "mase")
    assert by_mase.best == "theta"


def test_a_winner_that_a_baseline_beats_on_mase_is_flagged_with_the_reason() -> None:
    selection = select_model(
        overall_frame({"tide": (0.20, 0.95), "seasonal_naive": (0.25, 0.90), "naive": (0.4, 1.5)})
    )
    assert selection.best == "tide"
    assert not selection.beats_every_baseline
    assert len(selection.reasons) == 1
    assert "mase" in selection.reasons[0] and "seasonal_naive" in selection.reasons[0]
    assert "0.9500" in selection.reasons[0] and "0.9000" in selection.reasons[0]


def test_an_unknown_selection_metric_is_refused() -> None:
    overall = overall_frame({"tide": (0.2, 0.9)})
    with pytest.raises(ForecastingError, match="unknown selection metric 'rmse'"):
        select_model(overall, "rmse")
    with pytest.raises(ForecastingError, match="unknown selection metric 'coverage'"):
        select_model(overall, "coverage")  # higher is better: not a ranking metric


# --- covariates of the periods ahead -----------------------------------------------------


def history(start: date, step: int, periods: int) -> TimeSeries:
    """The covariates of a built panel: price 3.0 then 2.5 in the last period, on deal."""
    prices = [3.0] * (periods - 1) + [2.5]
    frame = mart({("S1", "I1"): [10.0] * periods}, start=start, step=step, prices=prices)
    frame = frame.with_columns(
        pl.when(pl.col("period_start") == pl.col("period_start").max())
        .then(1)
        .otherwise(0)
        .cast(pl.Int8)
        .alias("deal")
    )
    return build_panel(frame).covariates[0]


def test_without_a_plan_the_default_is_assumed_and_said_so_and_holidays_are_marked() -> None:
    daily = history(date(2024, 11, 1), 1, 50)  # to Dec 20
    extended, assumed = future_covariates(daily, 7)
    assert assumed == ["price: last known", "deal: none", "feature: none"]
    ahead = extended.to_dataframe().iloc[-7:]
    assert len(extended) == 57
    assert ahead.index[0].date() == date(2024, 12, 21)
    assert np.exp(ahead["log_price"]).tolist() == pytest.approx([2.5] * 7)
    assert ahead["deal"].tolist() == [0.0] * 7  # the last period's deal does not carry on
    assert ahead["feature"].tolist() == [0.0] * 7
    holiday = {d.date() for d, v in ahead["has_holiday"].items() if v == 1.0}
    assert holiday == {date(2024, 12, 25)}


def test_a_week_is_a_holiday_week_when_any_of_its_days_is_one() -> None:
    mondays = history(date(2024, 1, 1), 7, 26)  # to Jun 24
    extended, _ = future_covariates(mondays, 3)
    ahead = extended.to_dataframe().iloc[-3:]
    assert [d.date() for d in ahead.index] == [
        date(2024, 7, 1),
        date(2024, 7, 8),
        date(2024, 7, 15),
    ]
    assert ahead["has_holiday"].tolist() == [1.0, 0.0, 0.0]  # July 4th is a Thursday


def test_planned_prices_and_deals_are_used_period_by_period() -> None:
    daily = history(date(2024, 11, 1), 1, 50)
    days = [date(2024, 12, 21) + timedelta(days=k) for k in range(4)]
    planned = pl.DataFrame(
        {
            "period_start": [days[2], days[0], days[3], days[1]],  # not in order
            "price": [1.75, 1.25, 2.0, 1.5],
            "deal": [1, 0, 0, 1],
        }
    )
    extended, assumed = future_covariates(daily, 4, planned)
    assert assumed == ["feature: none"]
    ahead = extended.to_dataframe().iloc[-4:]
    assert np.exp(ahead["log_price"]).tolist() == pytest.approx([1.25, 1.5, 1.75, 2.0])
    assert ahead["deal"].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert ahead["feature"].tolist() == [0.0] * 4


def test_a_plan_that_misses_a_period_or_goes_past_the_horizon_is_refused() -> None:
    daily = history(date(2024, 11, 1), 1, 50)
    days = [date(2024, 12, 21) + timedelta(days=k) for k in range(5)]
    with pytest.raises(ForecastingError, match="planned price must cover every period"):
        future_covariates(daily, 4, pl.DataFrame({"period_start": days[:3], "price": 2.0}))
    with pytest.raises(ForecastingError, match="planned price must cover every period"):
        future_covariates(
            daily, 4, pl.DataFrame({"period_start": days[:4], "price": [2.0, None, 2.0, 2.0]})
        )
    # Four rows, but the first day twice and the last day not at all.
    with pytest.raises(ForecastingError, match="must cover every period"):
        future_covariates(
            daily,
            4,
            pl.DataFrame({"period_start": [days[0], *days[:3]], "price": [1.0, 1.0, 2.0, 3.0]}),
        )
    with pytest.raises(ForecastingError, match=r"outside the horizon: \['2024-12-25'\]"):
        future_covariates(daily, 4, pl.DataFrame({"period_start": days, "price": 2.0}))
    with pytest.raises(ForecastingError, match=r"outside the horizon: \['2024-12-20'\]"):
        future_covariates(
            daily,
            4,
            pl.DataFrame({"period_start": [date(2024, 12, 20), *days[:4]], "deal": 1}),
        )


def test_the_relative_price_is_the_items_price_against_its_stores_shelf_and_follows_a_plan() -> (
    None
):
    frame = mart({("S1", "I1"): [10.0] * 30, ("S1", "I2"): [10.0] * 30})
    frame = frame.with_columns(
        pl.when(pl.col("item") == "I2").then(1.0).otherwise(2.0).alias("price")
    )
    panel = build_panel(frame, SMALL)
    own = panel.covariates[panel.keys.index(("S1", "I1"))]["relative_price"].values()[:, 0]
    assert own == pytest.approx([0.5 * math.log(2)] * 30)  # log 2 - (log 2 + log 1) / 2
    days = [panel.last_period + timedelta(days=k) for k in range(1, 4)]
    extended, _ = future_covariates(
        panel.covariates[0], 3, pl.DataFrame({"period_start": days, "price": [1.0, 2.0, 4.0]})
    )
    ahead = extended.to_dataframe().iloc[-3:]["relative_price"].tolist()
    # Its own planned price moves it; the other items are assumed at their last price.
    assert ahead == pytest.approx([-0.5 * math.log(2), 0.5 * math.log(2), 1.5 * math.log(2)])


def test_a_competitors_planned_discount_raises_the_relative_price_of_the_others() -> None:
    days = [date(2024, 3, 1), date(2024, 3, 2)]
    plan = pl.DataFrame({"store": "S1", "item": "B", "period_start": [days[1]], "price": [1.0]})
    shelf = shelf_covariates({"A": math.log(2), "B": math.log(2)}, plan, days)
    assert shelf["A"]["relative_price"] == pytest.approx([0.0, 0.5 * math.log(2)])
    assert shelf["B"]["relative_price"] == pytest.approx([0.0, -0.5 * math.log(2)])


def test_a_forecaster_saved_before_calibration_and_relative_prices_still_forecasts(
    tmp_path,
) -> None:
    """A version registered by an earlier release: its meta has point-model ratios only and
    its history lacks the relative price; it loads and forecasts on what it was fitted on."""
    panel = build_panel(price_elastic_mart(), SMALL)
    fallback = backtest(panel, "moving_median", panel.index())
    fit_forecaster(panel, "moving_median", fallback).save(tmp_path / "old")
    meta_path = tmp_path / "old" / "forecaster.json"
    meta = json.loads(meta_path.read_text())
    meta["ratios"] = {"moving_median": [0.5, 1.5]}
    del meta["calibrations"], meta["totals_calibration"]
    meta_path.write_text(json.dumps(meta))
    history = pl.read_parquet(tmp_path / "old" / "history.parquet")
    history.drop("relative_price").write_parquet(tmp_path / "old" / "history.parquet")
    loaded = DemandForecaster.load(tmp_path / "old")
    assert "relative_price" not in loaded.covariates[0].components
    answer = loaded.forecast([("S1", "I1")], 3)
    assert answer["p10"].to_list() == pytest.approx((answer["p50"] * 0.5).to_list())
    assert answer["p90"].to_list() == pytest.approx((answer["p50"] * 1.5).to_list())
