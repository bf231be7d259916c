"""Demand forecasting with darts: the panel of store × item series from the demand mart,
baselines, a per-series statistical model and a global torch model with known-future
covariates, rolling-origin backtests and their error metrics.

Frequency comes from the data (daily or weekly), and so do the horizon and season defaults.
Missing periods stay missing: they are interpolated for fitting and never scored.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import holidays
import numpy as np
import pandas as pd
import polars as pl
from darts import TimeSeries
from darts.models import NaiveSeasonal, Theta, TiDEModel
from darts.models.forecasting.forecasting_model import LocalForecastingModel
from darts.utils.likelihood_models import QuantileRegression
from darts.utils.utils import SeasonalityMode

QUANTILES = (0.1, 0.5, 0.9)
FREQ_DEFAULTS = {"D": {"horizon": 28, "season": 7}, "W": {"horizon": 12, "season": 52}}
"""Per frequency: the default horizon (4 weeks, a quarter) and the season length."""
COVARIATES = ("log_price", "deal", "feature", "has_holiday")
"""Known in advance (prices and promotions are planned; holidays are on the calendar)."""
BASELINES = ("naive", "seasonal_naive", "moving_median")
KEY = ("store", "item")

for noisy in ("pytorch_lightning", "lightning", "lightning.pytorch", "darts"):
    logging.getLogger(noisy).setLevel(logging.ERROR)
# Lightning's notices about training without a validation set, and its own deprecations.
warnings.filterwarnings("ignore", message=".*Total length of `list` across ranks is zero")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")


class ForecastingError(ValueError):
    """The demand data cannot be forecast as asked; the message says why."""


def infer_freq(periods: Sequence[date]) -> str:
    """'D' or 'W', from the spacing of the periods themselves."""
    unique = sorted(set(periods))
    if len(unique) < 2:
        raise ForecastingError("fewer than two periods: the frequency cannot be read from data")
    steps = {(b - a).days for a, b in itertools.pairwise(unique)}
    step = min(steps)
    # Gaps (periods missing everywhere) are multiples of the step; anything else is not a grid.
    if step in (1, 7) and all(s % step == 0 for s in steps):
        return "D" if step == 1 else "W"
    raise ForecastingError(f"periods are spaced {sorted(steps)[:5]} days apart: expected 1 or 7")


def offset(freq: str) -> timedelta:
    return timedelta(days=7 if freq == "W" else 1)


@dataclass(frozen=True)
class ForecastSettings:
    horizon: int | None = None
    """Periods ahead; None: 28 days or 12 weeks."""
    folds: int = 3
    season: int | None = None
    moving_median_window: int | None = None
    """None: one season for daily data, 8 periods for weekly."""
    intermittent_zero_share: float = 0.5
    """A series with at least this share of zero periods is intermittent (fallback model)."""

    def resolved(self, freq: str) -> ResolvedSettings:
        defaults = FREQ_DEFAULTS[freq]
        return ResolvedSettings(
            freq=freq,
            horizon=self.horizon or defaults["horizon"],
            folds=self.folds,
            season=self.season or defaults["season"],
            moving_median_window=self.moving_median_window or (7 if freq == "D" else 8),
            intermittent_zero_share=self.intermittent_zero_share,
        )


@dataclass(frozen=True)
class ResolvedSettings:
    freq: str
    horizon: int
    folds: int
    season: int
    moving_median_window: int
    intermittent_zero_share: float

    @property
    def held_out(self) -> int:
        return self.horizon * self.folds


@dataclass
class DemandPanel:
    """Every series of the mart, as darts needs them: targets with missing periods filled for
    fitting (the mask says which were observed) and known covariates per period."""

    settings: ResolvedSettings
    keys: list[tuple[str, str]]
    targets: list[TimeSeries]
    observed: list[np.ndarray]
    covariates: list[TimeSeries]
    kinds: list[str]
    """Per series: regular, too_short, intermittent or all_zero."""
    last_period: date

    def index(self, kind: str | None = None) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if kind is None or k == kind]

    @property
    def first_test_period(self) -> date:
        return self.last_period - offset(self.settings.freq) * (self.settings.held_out - 1)


def _covariate_frame(series: pl.DataFrame) -> pl.DataFrame:
    """Known covariates per period; a missing period keeps the last price and no promotion."""
    return series.select(
        pl.col("price").forward_fill().backward_fill().fill_null(1.0).log().alias("log_price"),
        pl.col("deal").fill_null(0.0).cast(pl.Float64),
        pl.col("feature").fill_null(0.0).cast(pl.Float64),
        pl.col("has_holiday").fill_null(False).cast(pl.Float64),
    )


def _kind(values: np.ndarray, observed: np.ndarray, settings: ResolvedSettings) -> str:
    seen = values[observed]
    if seen.size == 0 or np.all(seen == 0):
        return "all_zero"
    if len(values) < settings.held_out + 2 * settings.horizon:
        return "too_short"
    if np.mean(seen == 0) >= settings.intermittent_zero_share:
        return "intermittent"
    return "regular"


def build_panel(mart: pl.DataFrame, settings: ForecastSettings = ForecastSettings()) -> DemandPanel:
    """The mart's store × item series (columns as in `mart_demand`) as a darts panel."""
    missing = {"store", "item", "period_start", "units", "price", "deal", "feature"} - set(
        mart.columns
    )
    if missing:
        raise ForecastingError(f"the demand data lacks columns {sorted(missing)}")
    if mart.is_empty():
        raise ForecastingError("the demand data has no rows")
    if "has_holiday" not in mart.columns:
        mart = mart.with_columns(pl.lit(False).alias("has_holiday"))
    resolved = settings.resolved(infer_freq(mart["period_start"].to_list()))
    freq = "W-" + mart["period_start"].min().strftime("%a").upper() if resolved.freq == "W" else "D"
    keys, targets, observed, covariates, kinds = [], [], [], [], []
    for (store, item), series in sorted(
        mart.sort("period_start").partition_by(KEY, as_dict=True).items()
    ):
        # The full grid from the series' first period to the panel's last: a period without
        # a row is missing (the last ones too, so that every series ends on the same period).
        frame = series.to_pandas().set_index("period_start")
        index = pd.date_range(frame.index.min(), mart["period_start"].max(), freq=freq)
        frame = frame.set_axis(pd.DatetimeIndex(frame.index)).reindex(index)
        series = pl.from_pandas(frame.reset_index(drop=True))
        units = frame["units"].astype(float).to_numpy()
        mask = ~np.isnan(units)
        filled = pd.Series(units, index=index).interpolate(limit_direction="both").fillna(0.0)
        keys.append((str(store), str(item)))
        # float32: what the global model trains in (float64 doubled its training time).
        targets.append(
            TimeSeries.from_series(filled.clip(lower=0.0).rename("units")).astype(np.float32)
        )
        observed.append(mask)
        covariates.append(
            TimeSeries.from_dataframe(_covariate_frame(series).to_pandas().set_index(index)).astype(
                np.float32
            )
        )
        kinds.append(_kind(units, mask, resolved))
    return DemandPanel(
        settings=resolved,
        keys=keys,
        targets=targets,
        observed=observed,
        covariates=covariates,
        kinds=kinds,
        last_period=mart["period_start"].max(),
    )


def future_covariates(
    history: TimeSeries,
    horizon: int,
    planned: pl.DataFrame | None = None,
    pad_to: int = 0,
) -> tuple[TimeSeries, list[str]]:
    """History's covariates extended `horizon` periods: the caller's planned price / deal /
    feature where given, else the documented default (last price, no deal, no feature ad);
    holidays from the calendar. Returns the series and which default was assumed. `pad_to`
    extends it further with the default (a global model reads a whole output window)."""
    start = history.end_time() + history.freq
    index = pd.date_range(start, periods=max(horizon, pad_to), freq=history.freq)
    years = range(index[0].year, index[-1].year + 2)
    calendar = holidays.country_holidays("US", years=years)
    step = 7 if history.freq_str.startswith("W") else 1
    frame = pd.DataFrame(
        {
            "log_price": float(history["log_price"].values()[-1, 0]),
            "deal": 0.0,
            "feature": 0.0,
            "has_holiday": [
                float(any(d.date() + timedelta(days=k) in calendar for k in range(step)))
                for d in index
            ],
        },
        index=index,
    )
    assumed = ["price: last known", "deal: none", "feature: none"]
    if planned is not None and not planned.is_empty():
        plan = planned.to_pandas().set_index(pd.DatetimeIndex(planned["period_start"].to_list()))
        unknown = sorted(set(plan.index) - set(index[:horizon]))
        if unknown:
            raise ForecastingError(
                f"covariates for periods outside the horizon: {[str(d.date()) for d in unknown]}"
            )
        for column, target, transform in (
            ("price", "log_price", np.log),
            ("deal", "deal", float),
            ("feature", "feature", float),
        ):
            if column in plan.columns:
                if (
                    len(plan.index) != horizon
                    or plan.index.has_duplicates
                    or plan[column].isna().any()
                ):
                    raise ForecastingError(
                        f"planned {column} must cover every period of the horizon "
                        f"({horizon} periods from {index[0].date()})"
                    )
                values = plan.sort_index()[column].astype(float).map(transform).values
                frame.loc[frame.index[:horizon], target] = values
                assumed = [a for a in assumed if not a.startswith(column)]
    extension = TimeSeries.from_dataframe(frame, freq=history.freq).astype(history.dtype)
    return history.append(extension), assumed


# --- models ------------------------------------------------------------------------------


class MovingMedian(LocalForecastingModel):
    """The median of the last `window` periods, flat: robust to promotion spikes."""

    def __init__(self, window: int = 8):
        super().__init__()
        self.window = window
        self.level: np.ndarray | None = None

    def __str__(self) -> str:
        return f"MovingMedian({self.window})"

    @property
    def supports_multivariate(self) -> bool:
        return True

    @property
    def _target_window_lengths(self) -> tuple[int, int]:
        return self.window, 0

    def fit(self, series: TimeSeries, verbose: bool | None = None):
        super().fit(series, verbose=verbose)
        self.level = np.median(series.values(copy=False)[-self.window :], axis=0)
        return self

    def predict(
        self,
        n: int,
        num_samples: int = 1,
        verbose: bool | None = None,
        show_warnings: bool = True,
        random_state: int | None = None,
    ):
        super().predict(n, num_samples, verbose=verbose)
        return self._build_forecast_series(np.tile(self.level, (n, 1)))


@dataclass(frozen=True)
class GlobalModelSettings:
    """The global torch model (TiDE): small and quick on CPU, larger on a GPU."""

    epochs: int = 20
    hidden_size: int = 64
    batch_size: int = 256
    learning_rate: float = 1e-3
    input_multiple: int = 2
    """Input window = this × the horizon."""
    seed: int = 7
    accelerator: str = "auto"
    """'auto' picks a GPU when present, else the CPU (pytorch-lightning)."""


def make_tide(settings: ResolvedSettings, model: GlobalModelSettings) -> TiDEModel:
    encoders = {"cyclic": {"future": ["month"] + (["dayofweek"] if settings.freq == "D" else [])}}
    return TiDEModel(
        input_chunk_length=model.input_multiple * settings.horizon,
        output_chunk_length=settings.horizon,
        hidden_size=model.hidden_size,
        decoder_output_dim=8,
        temporal_decoder_hidden=16,
        dropout=0.1,
        use_static_covariates=False,
        use_reversible_instance_norm=True,
        likelihood=QuantileRegression(quantiles=list(QUANTILES)),
        batch_size=model.batch_size,
        n_epochs=model.epochs,
        optimizer_kwargs={"lr": model.learning_rate},
        add_encoders=encoders,
        random_state=model.seed,
        pl_trainer_kwargs={
            "accelerator": model.accelerator,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": False,
            "enable_checkpointing": False,
        },
    )


LOCAL_KINDS = (*BASELINES, "theta")
GLOBAL_KINDS = ("tide",)


def make_local(kind: str, settings: ResolvedSettings, history_length: int) -> LocalForecastingModel:
    if kind == "naive":
        return NaiveSeasonal(K=1)
    if kind == "seasonal_naive":
        return NaiveSeasonal(K=settings.season)
    if kind == "moving_median":
        return MovingMedian(settings.moving_median_window)
    if kind == "theta":
        seasonal = history_length >= 2 * settings.season
        return Theta(
            theta=2,
            seasonality_period=settings.season if seasonal else None,
            season_mode=SeasonalityMode.ADDITIVE if seasonal else SeasonalityMode.NONE,
        )
    raise ForecastingError(f"unknown model kind {kind!r}")


def applicable(kind: str, settings: ResolvedSettings, history_length: int) -> bool:
    """Seasonal naive needs two full seasons of history before the first backtest origin."""
    return kind != "seasonal_naive" or history_length >= 2 * settings.season


# --- backtests ---------------------------------------------------------------------------


def log1p_series(series: list[TimeSeries]) -> list[TimeSeries]:
    return [s.map(np.log1p) for s in series]


def expm1_series(series: TimeSeries) -> TimeSeries:
    return series.map(lambda v: np.clip(np.expm1(v), 0.0, None))


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
    model_settings: GlobalModelSettings = GlobalModelSettings(),
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
        targets = log1p_series([panel.targets[i] for i in chosen])
        covariates = [panel.covariates[i] for i in chosen]
        for fold, start in enumerate(starts, start=1):
            history = [target.drop_after(start) for target in targets]
            model = make_tide(settings, model_settings)
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


# --- metrics -----------------------------------------------------------------------------


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


def _errors(frame: pl.DataFrame) -> pl.DataFrame:
    error = (pl.col("actual") - pl.col("p50")).abs()
    return frame.with_columns(
        error.alias("abs_error"),
        pl.when(pl.col("actual") > 0).then(error / pl.col("actual")).alias("ape"),
        pl.when((pl.col("actual") + pl.col("p50")) > 0)
        .then(2 * error / (pl.col("actual").abs() + pl.col("p50").abs()))
        .otherwise(0.0)
        .alias("sape"),
        ((pl.col("actual") >= pl.col("p10")) & (pl.col("actual") <= pl.col("p90")))
        .cast(pl.Float64)
        .alias("covered"),
    )


METRICS = ("wape", "mape", "smape", "mase", "coverage")
LOWER_IS_BETTER = {"wape": True, "mape": True, "smape": True, "mase": True}


def _summaries(errors: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    return errors.group_by(*by).agg(
        (pl.col("abs_error").sum() / pl.col("actual").sum()).alias("wape"),
        pl.col("ape").mean().alias("mape"),
        pl.col("sape").mean().alias("smape"),
        (pl.col("abs_error") / pl.col("mase_scale")).mean().alias("mase"),
        pl.col("covered").mean().alias("coverage"),
        pl.len().alias("points"),
    )


def score_backtests(results: pl.DataFrame, scales: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Per series, per model overall, and per item total (summed over stores)."""
    errors = _errors(results.join(scales, on=list(KEY), how="left"))
    per_series = _summaries(errors, ["model", *KEY]).sort("model", *KEY)
    overall = _summaries(errors, ["model"]).sort("wape")
    totals = (
        results.group_by("model", "item", "fold", "period_start")
        .agg(pl.col("actual", "p10", "p50", "p90").sum())
        .join(scales.group_by("item").agg(pl.col("mase_scale").sum()), on="item", how="left")
    )
    per_item = _summaries(_errors(totals), ["model", "item"]).sort("model", "item")
    item_overall = _summaries(_errors(totals), ["model"]).rename(
        {m: f"item_total_{m}" for m in (*METRICS, "points")}
    )
    return {
        "per_series": per_series,
        "overall": overall.join(item_overall, on="model", how="left").sort("wape"),
        "per_item": per_item,
    }


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
