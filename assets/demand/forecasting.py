"""Demand forecasting on the lineage graph: rolling-origin backtests of the baselines, Theta and
the global TiDE model over the demand mart → the selected model (and the best baseline) fitted,
logged and registered as versions of `demand_forecaster` → the shared promotion gate → forecasts
of the champion in DuckDB → their realized error as actuals arrive."""

import hashlib
import time
from datetime import UTC, datetime

import pandas as pd
import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field, field_validator

from assets.demand import GROUP, OWNERS
from assets.demand.intake import STORE_ATTRIBUTES_TABLE
from assets.metadata import markdown_table, picture
from assets.promotion import run_promotion_gate
from assets.resources import DUCKDB_POOL, REGISTRY_POOL, ModelRegistry, Warehouse
from ml.demand.backtesting import (
    backtest,
    backtest_plots,
    mase_scales,
    score_backtests,
    select_model,
)
from ml.demand.forecaster import FALLBACK, fit_forecaster
from ml.demand.models import GLOBAL_KINDS, LOCAL_KINDS, GlobalModelSettings
from ml.demand.panel import BASELINES, DemandPanel, ForecastSettings, build_panel
from ml.lifecycle.model_card import ModelCard
from ml.lifecycle.promotion import check_margin
from ml.lifecycle.pyfunc import DEMAND_FORECASTER_ENTRY, demand_forecaster_signature
from ml.lifecycle.registered_models import DEMAND_FORECASTER
from ml.lifecycle.registration import Candidate, register_candidate
from ml.lifecycle.registry import ModelVersion, Registry
from ml.plots import forecast_figure

BACKTEST_TABLE = "demand_backtest_forecasts"
SCORES_TABLE = "demand_backtest_scores"
SUMMARY_TABLE = "demand_backtest_summary"


GATE_METRIC = "backtest_wape"


class ForecastingConfig(Config):
    horizon: int | None = Field(default=None, description="None: 28 days or 12 weeks")
    folds: int = ForecastSettings.folds
    models: list[str] = Field(default_factory=lambda: [*LOCAL_KINDS, *GLOBAL_KINDS])
    selection_metric: str = "wape"
    epochs: int = Field(
        default=GlobalModelSettings.epochs, description="Global model (TiDE) training epochs"
    )
    hidden_size: int = GlobalModelSettings.hidden_size
    trees: int = Field(
        default=GlobalModelSettings.trees, description="LightGBM boosting rounds per quantile"
    )
    max_series: int | None = Field(
        default=None, description="Backtest the first N series only (quick runs)"
    )

    def settings(self) -> ForecastSettings:
        return ForecastSettings(horizon=self.horizon, folds=self.folds)

    def global_model(self) -> GlobalModelSettings:
        return GlobalModelSettings(
            epochs=self.epochs, hidden_size=self.hidden_size, trees=self.trees
        )


def load_panel(warehouse: Warehouse, config: ForecastingConfig) -> DemandPanel:
    mart = warehouse.query(
        "select store, item, period_start, units, price, deal, feature, has_holiday "
        "from mart_demand order by store, item, period_start"
    )
    if config.max_series:
        keys = mart.select("store", "item").unique().sort("store", "item").head(config.max_series)
        mart = mart.join(keys, on=["store", "item"])
    attributes = warehouse.query_if_exists(
        STORE_ATTRIBUTES_TABLE, f"select * from {STORE_ATTRIBUTES_TABLE}", [], {}
    )
    return build_panel(mart, config.settings(), attributes if attributes.width > 1 else None)


def backtest_version(panel: DemandPanel) -> str:
    """Names the folds every model is compared on: frequency, horizon × folds, last period and
    the series set. Models are only compared on the same backtest version."""
    series = hashlib.sha256("\n".join(f"{s}/{i}" for s, i in panel.keys).encode()).hexdigest()
    s = panel.settings
    return f"{s.freq}-h{s.horizon}x{s.folds}-{panel.last_period}-{series[:8]}"


@asset(
    deps=["mart_demand", STORE_ATTRIBUTES_TABLE],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "darts", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "Rolling-origin backtests (≥ 3 folds; darts' historical forecasts for the per-series "
        "models, one global fit per origin for TiDE) of the baselines "
        "(naive, seasonal naive, moving median), Theta and the global TiDE model with price, "
        "promotion and calendar covariates; WAPE, MAPE, sMAPE, MASE and P10–P90 coverage per "
        "series and per item total; the best model by the configured metric."
    ),
)
def demand_backtests(
    context: AssetExecutionContext, config: ForecastingConfig, warehouse: Warehouse
) -> MaterializeResult:
    panel = load_panel(warehouse, config)
    version = backtest_version(panel)
    regular = panel.index("regular")
    intermittent = panel.index("intermittent")
    fallback_series = intermittent + panel.index("too_short")
    results = []
    for kind in config.models:
        context.log.info(f"backtesting {kind} on {len(regular)} regular series")
        results.append(backtest(panel, kind, regular, config.global_model()))
    if intermittent:  # too short to backtest: the fallback is named, not scored
        results.append(backtest(panel, FALLBACK, intermittent))
    results = pl.concat([r for r in results if not r.is_empty()], how="vertical_relaxed")
    if results.is_empty():
        raise ValueError("no series could be backtested (all too short or all zeros)")
    on_regular = results.join(
        pl.DataFrame([{"store": panel.keys[i][0], "item": panel.keys[i][1]} for i in regular]),
        on=["store", "item"],
    )
    scores = score_backtests(on_regular, mase_scales(panel))
    selection = select_model(scores["overall"], config.selection_metric)
    created = datetime.now(UTC)
    warehouse.replace_rows(
        BACKTEST_TABLE,
        results.with_columns(pl.lit(version).alias("backtest_version")),
        "backtest_version = ?",
        [version],
    )
    warehouse.replace_rows(
        SCORES_TABLE,
        scores["per_series"].with_columns(pl.lit(version).alias("backtest_version")),
        "backtest_version = ?",
        [version],
    )
    # Summaries written before served intervals were calibrated lack the column.
    warehouse.add_column_if_missing(SUMMARY_TABLE, "served_coverage", "double precision")
    warehouse.replace_rows(
        SUMMARY_TABLE,
        scores["overall"].with_columns(
            pl.lit(version).alias("backtest_version"),
            (pl.col("model") == selection.best).alias("selected"),
            pl.lit(created).alias("created_at"),
            pl.lit(config.model_dump_json()).alias("config"),
        ),
        "backtest_version = ?",
        [version],
    )
    kinds = {kind: len(panel.index(kind)) for kind in ("regular", *sorted(set(panel.kinds)))}
    worst = (
        scores["per_series"]
        .filter(pl.col("model") == selection.best)
        .sort("wape", descending=True)
        .head(15)
        .select("store", "item", "wape", "mape", "mase", "coverage", "points")
    )
    plotted = sorted(regular, key=lambda i: panel.targets[i].values().sum(), reverse=True)[:3]
    return MaterializeResult(
        metadata={
            "backtest_version": version,
            "frequency": panel.settings.freq,
            "horizon": panel.settings.horizon,
            "folds": panel.settings.folds,
            "series": len(panel.keys),
            "series_kinds": MetadataValue.json(kinds),
            "fallback": f"{FALLBACK} for {len(fallback_series)} intermittent / too short series; "
            f"zeros for {len(panel.index('all_zero'))} all-zero series",
            "selected_model": selection.best,
            "selection_metric": selection.metric,
            "beats_every_baseline_on_wape_and_mase": selection.beats_every_baseline,
            "why_not": "; ".join(selection.reasons) or "—",
            "models (regular series)": markdown_table(
                scores["overall"].select(
                    "model",
                    "wape",
                    "mape",
                    "smape",
                    "mase",
                    "coverage",
                    "served_coverage",
                    "item_total_mape",
                    "item_total_wape",
                )
            ),
            "worst_series_of_selected_model": markdown_table(worst),
            "forecast_vs_actual": picture(
                forecast_figure(backtest_plots(results, panel, [selection.best, "naive"], plotted)),
                f"Backtest forecasts of {selection.best} (P10–P90 band) and naive",
            ),
        }
    )


def _fit_and_register(
    context: AssetExecutionContext,
    registry: Registry,
    panel: DemandPanel,
    kind: str,
    version: str,
    summary: pl.DataFrame,
    results: pl.DataFrame,
    config: ForecastingConfig,
    role: str,
) -> ModelVersion:
    started = time.perf_counter()
    forecaster = fit_forecaster(panel, kind, results, config.global_model())
    training_seconds = time.perf_counter() - started
    row = summary.filter(pl.col("model") == kind).row(0, named=True)
    metrics = {
        f"backtest_{m}": float(row[m])
        for m in ("wape", "mape", "smape", "mase", "coverage", "item_total_mape", "item_total_wape")
        if row.get(m) is not None
    }
    baseline = summary.filter(pl.col("model").is_in(BASELINES)).sort("wape").row(0, named=True)
    first = panel.keys[0]

    registered, _ = register_candidate(
        registry,
        Candidate(
            model_name=DEMAND_FORECASTER,
            kind=kind,
            role=role,
            run_name=f"{kind}-{context.run.run_id[:8]}",
            card=ModelCard(
                f"{DEMAND_FORECASTER}: {kind}",
                f"Demand forecaster ({role}) for {len(panel.keys)} store × item series, "
                f"{panel.settings.freq} periods, horizon {panel.settings.horizon}; P10/P50/P90.",
                {
                    "backtest version": version,
                    "regular series": len(panel.index("regular")),
                    "fallback": f"{FALLBACK} for intermittent / too short series, zeros for "
                    "all-zero",
                },
                metrics,
                {f"backtest_{m}": float(baseline[m]) for m in ("wape", "mape", "smape", "mase")},
                [
                    "Without planned covariates it assumes the last price, no deal and no "
                    "feature ad.",
                    "Missing periods are interpolated for fitting and never scored.",
                    "P10/P90 are calibrated on the model's own backtest (split conformal; point "
                    "models' from their error ratios first).",
                ],
            ),
            entry_point=DEMAND_FORECASTER_ENTRY,
            artifacts={"forecaster": forecaster.save},
            input_example=(pd.DataFrame({"store": [first[0]], "item": [first[1]]}), {"horizon": 2}),
            params={
                "horizon": panel.settings.horizon,
                "folds": panel.settings.folds,
                "freq": panel.settings.freq,
                "epochs": config.epochs if kind == "tide" else 0,
                "trees": config.trees if kind == "lightgbm" else 0,
            },
            metrics={**metrics, "training_seconds": training_seconds},
            tagged_scores=metrics,
            run_tags={"backtest_version": version, "dagster_run_id": context.run.run_id},
            version_tags={"test_version": version},
            model_metadata={
                "kind": kind,
                "horizon": panel.settings.horizon,
                "freq": panel.settings.freq,
            },
            signature=demand_forecaster_signature(panel.settings.horizon),
        ),
    )
    return registered


@asset(
    deps=[demand_backtests],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "darts", "mlflow"},
    description=(
        "The backtests' best model and the best baseline, each fitted on the full history, "
        "logged to MLflow and registered as versions of demand_forecaster (every model is "
        "reported next to its baseline)."
    ),
)
def demand_forecaster(
    context: AssetExecutionContext,
    config: ForecastingConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    panel = load_panel(warehouse, config)
    version = backtest_version(panel)
    summary = warehouse.query(
        f"select * from {SUMMARY_TABLE} where backtest_version = ?", [version]
    )
    if summary.is_empty():
        raise ValueError(f"no backtests for version {version}: materialize demand_backtests")
    results = warehouse.query(
        f"select * from {BACKTEST_TABLE} where backtest_version = ?", [version]
    )
    selected = summary.filter(pl.col("selected"))["model"][0]
    best_baseline = summary.filter(pl.col("model").is_in(BASELINES)).sort("wape")["model"][0]
    registered = {}
    for kind, role in ((best_baseline, "baseline"), (selected, "selected")):
        if kind in registered:
            continue
        registered[kind] = _fit_and_register(
            context, registry, panel, kind, version, summary, results, config, role
        )
    return MaterializeResult(
        metadata={
            "backtest_version": version,
            "selected_model": selected,
            "best_baseline": best_baseline,
            "versions": MetadataValue.md(
                "| kind | version | backtest WAPE |\n|---|---|---|\n"
                + "\n".join(
                    f"| {k} | {v.version} | {v.metric(GATE_METRIC):.4f} |"
                    for k, v in registered.items()
                )
            ),
        }
    )


class ForecastPromotionConfig(Config):
    margin: float = 0.005
    """A candidate must lower the champion's backtest WAPE by at least this much."""

    _margin_bound = field_validator("margin")(check_margin)


@asset(
    deps=[demand_forecaster],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "mlflow"},
    pool=REGISTRY_POOL,
    description=(
        "The same promotion gate as the request classifier: a new demand_forecaster version "
        "becomes `champion` only if its backtest WAPE never loses to the baseline and beats the "
        "champion's by the margin on the same backtest version, as the gate re-runs it for the "
        "model kind read from the loaded (digest-verified) version; else `challenger`."
    ),
)
def demand_forecaster_promotion(
    context: AssetExecutionContext,
    config: ForecastPromotionConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    latest = warehouse.query(f"select config from {SUMMARY_TABLE} order by created_at desc limit 1")
    if latest.is_empty():
        raise ValueError("no backtests yet: materialize demand_backtests first")
    # The panel the latest backtests ran on: an older champion is re-scored on the same folds.
    backtested = ForecastingConfig.model_validate_json(latest["config"][0])
    panel = load_panel(warehouse, backtested)
    version = backtest_version(panel)
    regular = panel.index("regular")
    if not regular:
        raise ValueError(f"backtest version {version} has no regular series to score models on")
    by_kind: dict[str, float] = {}

    def rescore(candidate: ModelVersion) -> float:
        # A forecaster fitted on all history cannot be scored on folds inside it: the gate
        # re-runs the backtest of the kind the verified artifact itself says it is (never the
        # version's tags), on the frozen folds of this backtest version.
        loaded = registry.load(DEMAND_FORECASTER, candidate.version)
        kind = loaded.unwrap_python_model().forecaster.kind
        if kind not in by_kind:
            context.log.info(f"re-running the {kind} backtest for version {version}")
            results = backtest(panel, kind, regular, backtested.global_model())
            by_kind[kind] = float(
                score_backtests(results, mase_scales(panel))["overall"]["wape"][0]
            )
        return by_kind[kind]

    gate = run_promotion_gate(
        context,
        registry,
        DEMAND_FORECASTER,
        version,
        GATE_METRIC,
        config.margin,
        rescore,
        "backtest WAPE",
        higher_is_better=False,
    )
    return MaterializeResult(metadata={"backtest_version": version, **gate})
