"""Rolling-origin backtests of every model kind over the panel, their error metrics per series,
per model and per item total, and the selection of the model to register."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import polars as pl
from darts import TimeSeries

from ml.demand.intervals import item_totals, served_coverage
from ml.demand.models import (
    GLOBAL_KINDS,
    GlobalModelSettings,
    applicable,
    expm1_series,
    global_inputs,
    make_global,
    make_local,
)
from ml.demand.panel import BASELINES, KEY, QUANTILES, DemandPanel, ForecastingError, offset
from ml.metrics import FORECAST_METRICS, forecast_errors, forecast_scores
from ml.plots import ForecastLine, ForecastPlot


def _rows(panel: DemandPanel, i: int, forecast: TimeSeries, fold: int, model: str) -> list[dict]:
    """Scored rows of one forecast: observed actuals only (missing periods are not scored)."""
    target, mask = panel.targets[i], panel.observed[i]
    positions = {t: p for p, t in enumerate(target.time_index)}
    values = forecast.values(copy=False)
    if values.shape[1] == 1:  # a point forecast: its quantiles are the point
        values = np.repeat(values, len(QUANTILES), axis=1)
    values = np.sort(values, axis=1)  # quantile heads can cross: rearrange them in order
    rows = []
    for t, (p10, p50, p90) in zip(forecast.time_index, values, strict=True):
        p = positions.get(t)
        if p is None or not mask[p]:
            continue
        rows.append(
            {
                "store": panel.keys[i][0],
                "item": panel.keys[i][1],
                "model": model,
                "fold": fold,
                "period_start": t.date(),
                "actual": float(target.values(copy=False)[p, 0]),
                "p10": max(float(p10), 0.0),
                "p50": max(float(p50), 0.0),
                "p90": max(float(p90), 0.0),
            }
        )
    return rows


def fold_starts(panel: DemandPanel) -> list[pd.Timestamp]:
    step = offset(panel.settings.freq)
    first = panel.first_test_period
    return [
        pd.Timestamp(first + step * (fold * panel.settings.horizon))
        for fold in range(panel.settings.folds)
    ]


def backtest(
    panel: DemandPanel,
    kind: str,
    series: Sequence[int],
    model_settings: GlobalModelSettings | None = None,
) -> pl.DataFrame:
    """Rolling-origin backtest of one model kind over the given series with darts'
    historical forecasts: `folds` origins, `horizon` periods each, refit at every origin."""
    settings = panel.settings
    starts = fold_starts(panel)
    rows: list[dict] = []
    if kind in GLOBAL_KINDS:
        chosen = list(series)
        if not chosen:
            return pl.DataFrame()
        # One model over all the series per origin, as it is fitted for real (darts' historical
        # forecasts would fit one model per series and origin: not global, and far slower).
        targets = global_inputs(
            [panel.targets[i] for i in chosen],
            [panel.keys[i] for i in chosen],
            panel.keys,
            panel.store_attributes,
        )
        covariates = [panel.covariates[i] for i in chosen]
        for fold, start in enumerate(starts, start=1):
            history = [target.drop_after(start) for target in targets]
            model = make_global(kind, settings, model_settings or GlobalModelSettings())
            model.fit(history, future_covariates=covariates)
            forecasts = model.predict(
                settings.horizon,
                series=history,
                future_covariates=covariates,
                predict_likelihood_parameters=True,
                show_warnings=False,
            )
            for i, forecast in zip(chosen, forecasts, strict=True):
                rows += _rows(panel, i, expm1_series(forecast), fold, kind)
    else:
        for i in series:
            history = len(panel.targets[i].drop_after(starts[0]))
            if not applicable(kind, settings, history):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                forecasts = make_local(kind, settings, history).historical_forecasts(
                    panel.targets[i],
                    start=starts[0],
                    forecast_horizon=settings.horizon,
                    stride=settings.horizon,
                    retrain=True,
                    last_points_only=False,
                    show_warnings=False,
                )
            for fold, forecast in enumerate(forecasts, start=1):
                rows += _rows(panel, i, forecast, fold, kind)
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def mase_scales(panel: DemandPanel) -> pl.DataFrame:
    """Per series: mean absolute seasonal difference of the observed history before the first
    backtest origin (season if two are there, else 1): the MASE denominator."""
    rows = []
    for i, (store, item) in enumerate(panel.keys):
        values = panel.targets[i].values(copy=False)[:, 0]
        mask = panel.observed[i]
        cut = len(values) - panel.settings.held_out
        m = panel.settings.season if cut >= 2 * panel.settings.season else 1
        history, seen = values[:cut], mask[:cut]
        diffs = np.abs(history[m:] - history[:-m])[seen[m:] & seen[:-m]]
        scale = float(diffs.mean()) if diffs.size and diffs.mean() > 0 else np.nan
        rows.append({"store": store, "item": item, "mase_scale": scale})
    return pl.DataFrame(rows)


def score_backtests(results: pl.DataFrame, scales: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Per series, per model overall, and per item total (summed over stores). `coverage` is
    the raw forecast's (0 for a point model); `served_coverage` the interval served, each fold's
    calibrated on the folds before it (`held_out_coverage`)."""
    errors = forecast_errors(results.join(scales, on=list(KEY), how="left"))
    per_series = forecast_scores(errors, ["model", *KEY]).sort("model", *KEY)
    overall = forecast_scores(errors, ["model"]).sort("wape")
    totals = item_totals(results, ("model", "fold")).join(
        scales.group_by("item").agg(pl.col("mase_scale").sum()), on="item", how="left"
    )
    per_item = forecast_scores(forecast_errors(totals), ["model", "item"]).sort("model", "item")
    item_overall = forecast_scores(forecast_errors(totals), ["model"]).rename(
        {m: f"item_total_{m}" for m in (*FORECAST_METRICS, "points")}
    )
    return {
        "per_series": per_series,
        "overall": overall.join(item_overall, on="model", how="left")
        .join(served_coverage(results), on="model", how="left")
        .sort("wape"),
        "per_item": per_item,
    }


LOWER_IS_BETTER = {"wape": True, "mape": True, "smape": True, "mase": True}
"""The metrics a model can be selected on (coverage is reported, not minimized)."""


@dataclass(frozen=True)
class Selection:
    best: str
    metric: str
    scores: dict[str, float]
    beats_every_baseline: bool
    reasons: list[str] = field(default_factory=list)


def select_model(overall: pl.DataFrame, metric: str = "wape") -> Selection:
    """The model with the best aggregated `metric`, and whether it beats every baseline on
    WAPE and MASE."""
    if metric not in LOWER_IS_BETTER:
        raise ForecastingError(
            f"unknown selection metric {metric!r}; one of {sorted(LOWER_IS_BETTER)}"
        )
    ranked = overall.sort(metric, nulls_last=True)
    best = ranked["model"][0]
    row = ranked.row(0, named=True)
    reasons = []
    beats = True
    for baseline in ranked.filter(pl.col("model").is_in(BASELINES)).iter_rows(named=True):
        if baseline["model"] == best:
            continue
        for m in ("wape", "mase"):
            if not row[m] < baseline[m]:
                beats = False
                reasons.append(f"{best} {m} {row[m]:.4f} ≥ {baseline['model']} {baseline[m]:.4f}")
    return Selection(
        best=best,
        metric=metric,
        scores=dict(zip(ranked["model"], ranked[metric], strict=True)),
        beats_every_baseline=beats,
        reasons=reasons,
    )


def backtest_plots(
    results: pl.DataFrame, panel: DemandPanel, models: Sequence[str], series: Sequence[int]
) -> list[ForecastPlot]:
    """What `forecast_figure` draws for these series: the last three held-out spans of actuals,
    and each model's backtest P50 (with its P10–P90 band for the first model)."""
    plots = []
    for i in series:
        store, item = panel.keys[i]
        history = panel.targets[i].to_dataframe().iloc[-3 * panel.settings.held_out :]
        lines = []
        for n, model in enumerate(models):
            rows = results.filter(
                (pl.col("store") == store) & (pl.col("item") == item) & (pl.col("model") == model)
            ).sort("period_start")
            if rows.is_empty():
                continue
            band = (rows["p10"].to_list(), rows["p90"].to_list()) if n == 0 else None
            periods = rows["period_start"].to_list()
            lines.append(ForecastLine(model, periods, rows["p50"].to_list(), band))
        plots.append(
            ForecastPlot(
                f"store {store}, item {item}",
                list(history.index),
                history.iloc[:, 0].tolist(),
                lines,
            )
        )
    return plots
