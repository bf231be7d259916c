"""The forecasting models: three baselines, Theta per series and the global TiDE model with
known-future covariates (darts)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from darts import TimeSeries
from darts.models import NaiveSeasonal, Theta, TiDEModel
from darts.models.forecasting.forecasting_model import LocalForecastingModel
from darts.utils.likelihood_models import QuantileRegression
from darts.utils.utils import SeasonalityMode

from ml.demand.panel import BASELINES, QUANTILES, ForecastingError, ResolvedSettings

for noisy in ("pytorch_lightning", "lightning", "lightning.pytorch", "darts"):
    logging.getLogger(noisy).setLevel(logging.ERROR)
# Lightning's notices about training without a validation set, and its own deprecations.
warnings.filterwarnings("ignore", message=".*Total length of `list` across ranks is zero")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")


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


def log1p_series(series: list[TimeSeries]) -> list[TimeSeries]:
    return [s.map(np.log1p) for s in series]


def expm1_series(series: TimeSeries) -> TimeSeries:
    return series.map(lambda v: np.clip(np.expm1(v), 0.0, None))
