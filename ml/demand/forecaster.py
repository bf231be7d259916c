"""A trained demand forecaster: the chosen model for regular series, a named fallback for the
rest (too short, intermittent, all zeros), and the history it needs at predict time, all saved
in one folder so a registered version forecasts without the warehouse.

Every model's P10/P90 are calibrated on its own backtest (`ml.demand.intervals`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from darts import TimeSeries

from ml.demand.intervals import IntervalCalibration, item_totals, total_calibration
from ml.demand.models import (
    GLOBAL_KINDS,
    GlobalModelSettings,
    applicable,
    expm1_series,
    global_inputs,
    make_global,
    make_local,
)
from ml.demand.panel import (
    COVARIATES,
    DemandPanel,
    ForecastingError,
    ResolvedSettings,
    future_covariates,
    shelf_covariates,
)
from ml.lifecycle.registered_models import DEMAND_FORECASTER
from ml.lifecycle.registry import Registry

"""The registered model every demand forecaster version belongs to."""
FALLBACK = "moving_median"
META_FILE = "forecaster.json"
HISTORY_FILE = "history.parquet"
STORE_ATTRIBUTES_FILE = "store_attributes.parquet"
GLOBAL_MODEL_FILES = {"tide": "global_model.pt", "lightgbm": "global_model.pkl"}
MAX_HORIZON_MULTIPLE = 2
"""A caller may ask for up to this many default horizons ahead."""


def _calibrations(meta: dict) -> dict[str, IntervalCalibration]:
    """A version saved before conformal calibration has point models' ratios only."""
    if "calibrations" in meta:
        return {k: IntervalCalibration.from_json(c) for k, c in meta["calibrations"].items()}
    return {k: IntervalCalibration(tuple(r)) for k, r in meta.get("ratios", {}).items()}


@dataclass
class DemandForecaster:
    kind: str
    settings: ResolvedSettings
    keys: list[tuple[str, str]]
    series_kinds: list[str]
    targets: list[TimeSeries]
    covariates: list[TimeSeries]
    calibrations: dict[str, IntervalCalibration]
    """Per model kind used here (the main kind and the fallback): how its raw forecast becomes
    the P10/P50/P90 served, calibrated on its backtest."""
    global_model: object | None = None
    totals_calibration: IntervalCalibration | None = None
    """How the summed store bounds of an item become its total's P10/P90."""
    store_attributes: pl.DataFrame | None = None
    """The static store covariates the global model was fitted with (None: none)."""

    @property
    def max_horizon(self) -> int:
        return MAX_HORIZON_MULTIPLE * self.settings.horizon

    def model_for(self, index: int) -> str:
        """The main kind for regular series, the fallback for the others."""
        if self.series_kinds[index] == "all_zero":
            return "zero"
        return self.kind if self.series_kinds[index] == "regular" else FALLBACK

    # --- forecasting -------------------------------------------------------------------

    def forecast(
        self,
        series: Sequence[tuple[str, str]] | None = None,
        horizon: int | None = None,
        planned: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """P10/P50/P90 per series and future period. `planned` (store, item, period_start and
        any of price, deal, feature) gives known covariates; what is not given is assumed (see
        `future_covariates`) and said in the `assumed` column."""
        horizon = horizon or self.settings.horizon
        if not 1 <= horizon <= self.max_horizon:
            raise ForecastingError(f"horizon {horizon} out of range: 1 … {self.max_horizon}")
        positions = {key: i for i, key in enumerate(self.keys)}
        wanted = list(series) if series is not None else list(self.keys)
        unknown = [f"{s}/{i}" for s, i in wanted if (s, i) not in positions]
        if unknown:
            raise ForecastingError(f"unknown store/item: {unknown[:10]}")
        frames = []
        shelves = self._shelves(planned, horizon, {store for store, _ in wanted})
        for store, item in wanted:
            i = positions[(store, item)]
            plan = None
            if planned is not None and not planned.is_empty():
                plan = planned.filter((pl.col("store") == store) & (pl.col("item") == item))
            covariates, assumed = future_covariates(
                self.covariates[i],
                horizon,
                plan,
                pad_to=self.settings.horizon,
                shelf=shelves.get(store, {}).get(item),
            )
            values = self._predict(i, horizon, covariates)
            index = pd.date_range(
                self.targets[i].end_time() + self.targets[i].freq,
                periods=horizon,
                freq=self.targets[i].freq,
            )
            frames.append(
                pl.DataFrame(
                    {
                        "store": store,
                        "item": item,
                        "period_start": [t.date() for t in index],
                        "p10": values[:, 0],
                        "p50": values[:, 1],
                        "p90": values[:, 2],
                        "model": self.model_for(i),
                        "assumed": "; ".join(assumed) or "none",
                    }
                )
            )
        return pl.concat(frames)

    def _shelves(
        self, planned: pl.DataFrame | None, horizon: int, stores: set[str]
    ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """Per store with a plan: each item's shelf covariates over the horizon, from every
        item's planned price and promotions there (`shelf_covariates`)."""
        if planned is None or planned.is_empty():
            return {}
        shelves = {}
        for store in stores & set(planned["store"].unique()):
            members = [i for i, key in enumerate(self.keys) if key[0] == store]
            first = self.targets[members[0]]
            periods = [
                t.date()
                for t in pd.date_range(
                    first.end_time() + first.freq, periods=horizon, freq=first.freq
                )
            ]
            last = {
                self.keys[i][1]: float(self.covariates[i]["log_price"].values()[-1, 0])
                for i in members
            }
            shelves[store] = shelf_covariates(
                last, planned.filter(pl.col("store") == store), periods
            )
        return shelves

    def totals(self, forecast: pl.DataFrame) -> pl.DataFrame:
        """Item totals per period of a `forecast` (its stores summed: the reconciled total),
        with the interval calibrated for totals, and how many stores it sums."""
        totals = item_totals(forecast.select("store", "item", "period_start", "p10", "p50", "p90"))
        calibration = self.totals_calibration or IntervalCalibration(None)
        served = calibration.apply(totals.select("p10", "p50", "p90"))
        return totals.with_columns(served).with_columns(
            pl.lit(self.kind).alias("model"),
            pl.lit(", ".join(forecast["assumed"].unique().sort())).alias("assumed"),
        )

    def _predict(self, i: int, horizon: int, covariates: TimeSeries) -> np.ndarray:
        kind = self.model_for(i)
        if kind == "zero":
            return np.zeros((horizon, 3))
        if kind in GLOBAL_KINDS:
            forecast = self.global_model.predict(
                horizon,
                series=global_inputs(
                    [self.targets[i]], [self.keys[i]], self.keys, self.store_attributes
                )[0],
                future_covariates=covariates,
                predict_likelihood_parameters=True,
                show_warnings=False,
            )
            values = expm1_series(forecast).values(copy=False)
        else:
            history = self.targets[i]
            model = make_local(kind, self.settings, len(history))
            point = model.fit(history).predict(horizon).values(copy=False)[:, :1]
            values = np.repeat(point, 3, axis=1)
        calibration = self.calibrations.get(kind, IntervalCalibration(None))
        return calibration.apply_values(values)

    # --- saving ------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for (store, item), target, covariates in zip(
            self.keys, self.targets, self.covariates, strict=True
        ):
            frame = covariates.to_dataframe()
            frame["units"] = target.values(copy=False)[:, 0]
            rows.append(
                pl.from_pandas(frame.reset_index(names="period_start")).with_columns(
                    pl.lit(store).alias("store"), pl.lit(item).alias("item")
                )
            )
        pl.concat(rows).write_parquet(folder / HISTORY_FILE)
        if self.store_attributes is not None:
            self.store_attributes.write_parquet(folder / STORE_ATTRIBUTES_FILE)
        meta = {
            "kind": self.kind,
            "settings": asdict(self.settings),
            "keys": self.keys,
            "series_kinds": self.series_kinds,
            "calibrations": {kind: c.to_json() for kind, c in self.calibrations.items()},
            "totals_calibration": (
                self.totals_calibration.to_json() if self.totals_calibration else None
            ),
            "freq": self.targets[0].freq_str,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if self.global_model is not None:
            self.global_model.save(str(folder / GLOBAL_MODEL_FILES[self.kind]))

    @classmethod
    def load(cls, folder: Path) -> DemandForecaster:
        """The forecaster saved in `folder`. A global model is a darts save (torch pickle: darts
        offers no other format), so a registered folder is read only after `Registry.download`
        verified its digests; history and settings are parquet and JSON."""
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        history = pl.read_parquet(folder / HISTORY_FILE)
        targets, covariates = [], []
        keys = [tuple(key) for key in meta["keys"]]
        by_key = history.partition_by("store", "item", as_dict=True)
        for key in keys:
            frame = by_key[key].sort("period_start").to_pandas().set_index("period_start")
            frame.index = pd.DatetimeIndex(frame.index, freq=meta["freq"])
            targets.append(TimeSeries.from_series(frame["units"]).astype(np.float32))
            # A version saved before a covariate was added keeps the ones it was fitted on.
            names = [c for c in COVARIATES if c in frame.columns]
            covariates.append(TimeSeries.from_dataframe(frame[names]).astype(np.float32))
        global_model = None
        if meta["kind"] == "tide":
            from darts.models import TiDEModel

            global_model = TiDEModel.load(
                str(folder / GLOBAL_MODEL_FILES["tide"]), map_location="cpu"
            )
            global_model.to_cpu()
        elif meta["kind"] == "lightgbm":
            from darts.models import LightGBMModel

            global_model = LightGBMModel.load(str(folder / GLOBAL_MODEL_FILES["lightgbm"]))
        return cls(
            kind=meta["kind"],
            settings=ResolvedSettings(**meta["settings"]),
            keys=keys,
            series_kinds=meta["series_kinds"],
            targets=targets,
            covariates=covariates,
            calibrations=_calibrations(meta),
            totals_calibration=(
                IntervalCalibration.from_json(meta["totals_calibration"])
                if meta.get("totals_calibration")
                else None
            ),
            global_model=global_model,
            store_attributes=(
                pl.read_parquet(folder / STORE_ATTRIBUTES_FILE)
                if (folder / STORE_ATTRIBUTES_FILE).exists()
                else None
            ),
        )


def fit_forecaster(
    panel: DemandPanel,
    kind: str,
    backtests: pl.DataFrame,
    model_settings: GlobalModelSettings | None = None,
) -> DemandForecaster:
    """Fit `kind` for the panel's regular series (a global model once, over all of them; a
    local model is refit per series at predict time, in milliseconds) and keep the history."""
    calibrations = {
        name: IntervalCalibration.fit(backtests.filter(pl.col("model") == name))
        for name in {kind, FALLBACK}
    }
    global_model = None
    if kind in GLOBAL_KINDS:
        regular = panel.index("regular")
        if not regular:
            raise ForecastingError("no regular series to fit the global model on")
        global_model = make_global(kind, panel.settings, model_settings or GlobalModelSettings())
        global_model.fit(
            global_inputs(
                [panel.targets[i] for i in regular],
                [panel.keys[i] for i in regular],
                panel.keys,
                panel.store_attributes,
            ),
            future_covariates=[panel.covariates[i] for i in regular],
        )
    elif not any(applicable(kind, panel.settings, len(t)) for t in panel.targets):
        raise ForecastingError(f"{kind} applies to none of the series (history too short)")
    return DemandForecaster(
        kind=kind,
        settings=panel.settings,
        keys=panel.keys,
        series_kinds=panel.kinds,
        targets=panel.targets,
        covariates=panel.covariates,
        calibrations=calibrations,
        totals_calibration=total_calibration(
            backtests.filter(pl.col("model") == kind), calibrations[kind]
        ),
        global_model=global_model,
        store_attributes=panel.store_attributes if global_model is not None else None,
    )


@dataclass(frozen=True)
class ChampionForecast:
    version: str
    series: pl.DataFrame
    """P10/P50/P90 per store, item and period."""
    totals: pl.DataFrame
    """Per item and period, its stores summed (`DemandForecaster.totals`)."""


def forecast_from_champion(
    registry: Registry,
    series: Sequence[tuple[str, str]] | None = None,
    horizon: int | None = None,
    planned: pl.DataFrame | None = None,
) -> ChampionForecast:
    """The champion's P10/P50/P90 for `series` (None: all) over `horizon` periods, with the
    caller's planned covariates (store, item, period_start, price / deal / feature) where
    given, and the item totals of those series. The public way to forecast: the same pyfunc
    the registry and the service load."""
    champion = registry.champion(DEMAND_FORECASTER)
    if champion is None:
        raise ForecastingError(f"{DEMAND_FORECASTER} has no champion yet: run demand_models_job")
    model = registry.load(DEMAND_FORECASTER, champion.version)
    forecaster = model.unwrap_python_model().forecaster
    if planned is not None and not planned.is_empty():
        frame = planned.to_pandas()
    else:
        keys = series or forecaster.keys
        frame = pd.DataFrame({"store": [k[0] for k in keys], "item": [k[1] for k in keys]})
    answer = pl.from_pandas(model.predict(frame, params={"horizon": horizon} if horizon else None))
    return ChampionForecast(champion.version, answer, forecaster.totals(answer))
