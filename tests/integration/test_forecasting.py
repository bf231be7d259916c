"""Demand forecasting end to end on generated daily data, in-process on real DuckDB, dbt, darts
and MLflow: backtests → registered forecaster and baseline → the shared gate → forecasts in
DuckDB → realized error once the actuals of the forecast window arrive."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, RunRequest, build_sensor_context

from assets.demand.forecasts import FORECASTS_TABLE, TOTALS_TABLE
from assets.monitoring.sensors import demand_drift_sensor
from assets.resources import DataHome, Warehouse
from ml.data.sources import DemandSource
from ml.lifecycle.registered_models import DEMAND_FORECASTER
from ml.lifecycle.registry import Registry
from ml.settings import Settings
from ml.synthetic.demand import generate_demand
from orchestration.definitions import build_definitions
from orchestration.forecast import main as forecast_cli
from orchestration.pipeline import (
    PipelineRun,
    build_warehouse,
    execute_quietly,
    ingest_demand,
    run_platform,
)
from tests.conftest import write_request_drop

QUICK = {"epochs": 2, "hidden_size": 16, "trees": 30}
FIRST_END, LATER_END = date(2025, 5, 1), date(2025, 6, 1)
"""Source ends are exclusive: first the data up to April 30, later up to May 31."""
ORIGIN = date(2025, 5, 1)


def demand_source(settings: Settings, end: date) -> DemandSource:
    folder = settings.data_home / "sources" / "demand"
    if not folder.exists():
        folder.mkdir(parents=True)
        generate_demand(
            stores=2, items=2, start=date(2024, 3, 1), end=date(2025, 5, 31), seed=11
        ).write_csv(folder / "demand.csv")
    return DemandSource(
        name="synthetic",
        uri=str(folder),
        format="contract",
        freq="D",
        start=date(2024, 3, 1),
        end=end,
    )


def models_config(**overrides: object) -> dict:
    config = {**QUICK, **overrides}
    return {
        "ops": {
            "demand_backtests": {"config": config},
            "demand_forecaster": {"config": config},
        }
    }


@dataclass
class Forecasting:
    settings: Settings
    instance: DagsterInstance
    registry: Registry
    first: object

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(path=str(self.settings.warehouse_path))

    def defs(self, end: date = FIRST_END):
        return build_definitions(self.settings, demand_source(self.settings, end))

    def metadata(self, asset: str) -> dict:
        event = self.instance.get_latest_materialization_event(AssetKey(asset))
        return event.asset_materialization.metadata


@pytest.fixture(scope="module")
def forecasting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forecasting]:
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("forecasting") / "data_home"
        env.setenv("MLOPS_DATA_HOME", str(home))
        env.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings.from_env()
        write_request_drop(settings, "requests.csv", rows=200, seed=1)
        defs = build_definitions(settings, demand_source(settings, FIRST_END))
        instance = DagsterInstance.ephemeral()
        assert run_platform(defs, instance, DataHome(path=str(home))).success
        first = execute_quietly(defs, instance, "demand_models_job", config=models_config())
        registry = Registry(settings.tracking_uri, settings.artifact_root)
        yield Forecasting(settings, instance, registry, first)


def test_backtests_compare_every_model_with_the_baselines_over_three_folds(
    forecasting: Forecasting,
) -> None:
    assert forecasting.first.success
    metadata = forecasting.metadata("demand_backtests")
    assert metadata["frequency"].value == "D"
    assert metadata["horizon"].value == 28
    assert metadata["folds"].value == 3
    table = metadata["models (regular series)"].value
    for model in ("naive", "seasonal_naive", "moving_median", "theta", "tide", "lightgbm"):
        assert f"| {model} |" in table
    assert "data:image/png;base64," in metadata["forecast_vs_actual"].value
    folds = forecasting.warehouse.query(
        "select model, count(distinct fold) as folds, count(distinct period_start) as periods "
        "from demand_backtest_forecasts group by model"
    )
    assert set(folds["folds"]) == {3}
    assert set(folds["periods"]) == {84}


def test_the_selected_model_and_the_best_baseline_are_registered_and_gated(
    forecasting: Forecasting,
) -> None:
    versions = forecasting.registry.versions(DEMAND_FORECASTER)
    roles = {v.tags["role"] for v in versions}
    assert "baseline" in roles
    champion = forecasting.registry.champion(DEMAND_FORECASTER)
    assert champion is not None
    assert all("gate_decision" in v.tags for v in versions)
    baseline = next(v for v in versions if v.tags["role"] == "baseline")
    assert champion.metric("backtest_wape") <= baseline.metric("backtest_wape")
    selected = forecasting.metadata("demand_backtests")["selected_model"].value
    chosen = next(v for v in versions if v.tags["kind"] == selected)
    margin = baseline.metric("backtest_wape") - chosen.metric("backtest_wape")
    if margin >= 0.005:  # lower WAPE by the margin: promoted over the baseline
        assert champion.version == chosen.version
    else:
        assert champion.version == baseline.version
        assert "by the margin" in chosen.tags["gate_reason"]


def test_forecasts_land_in_duckdb_once_per_origin_and_version(forecasting: Forecasting) -> None:
    forecasts = forecasting.warehouse.query(f"select * from {FORECASTS_TABLE}")
    assert forecasts.height == 4 * 28
    assert (forecasts["p10"] <= forecasts["p50"]).all()
    assert (forecasts["p50"] <= forecasts["p90"]).all()
    assert forecasts["period_start"].min() == ORIGIN
    assert set(forecasts["forecast_origin"]) == {ORIGIN}
    again = execute_quietly(forecasting.defs(), forecasting.instance, "demand_forecast_job")
    assert again.success
    assert forecasting.warehouse.query(f"select * from {FORECASTS_TABLE}").height == 4 * 28
    # Item totals over the stores: the stores' P50 summed, the interval calibrated for totals.
    totals = forecasting.warehouse.query(
        f"select * from {TOTALS_TABLE} order by item, period_start"
    )
    assert totals.height == 2 * 28 and set(totals["stores"]) == {2}
    summed = forecasts.group_by("item", "period_start").agg(pl.col("p50").sum())
    joined = totals.join(summed, on=["item", "period_start"], suffix="_stores")
    assert joined["p50"].to_list() == pytest.approx(joined["p50_stores"].to_list())
    assert (totals["p10"] <= totals["p50"]).all() and (totals["p50"] <= totals["p90"]).all()


def test_the_champion_forecasts_any_horizon_from_planned_covariates(
    forecasting: Forecasting,
) -> None:
    champion = forecasting.registry.champion(DEMAND_FORECASTER)
    model = forecasting.registry.load(DEMAND_FORECASTER, champion.version)
    store, item = model.unwrap_python_model().forecaster.keys[0]
    days = pd.date_range(ORIGIN, periods=3, freq="D")
    planned = pd.DataFrame(
        {"store": store, "item": item, "period_start": days, "price": 2.5, "deal": 1.0}
    )
    answer = model.predict(planned, params={"horizon": 3})
    assert len(answer) == 3
    assert answer["assumed"].iloc[0] == "feature: none"
    default = model.predict(pd.DataFrame({"store": [store], "item": [item]}), params={"horizon": 3})
    assert default["assumed"].iloc[0] == "price: last known; deal: none; feature: none"
    with pytest.raises(Exception, match="unknown store/item"):
        model.predict(pd.DataFrame({"store": ["nowhere"], "item": [item]}))
    with pytest.raises(Exception, match="horizon 500 out of range"):
        model.predict(pd.DataFrame({"store": [store], "item": [item]}), params={"horizon": 500})
    with pytest.raises(Exception, match="must cover every period"):
        model.predict(planned.head(2), params={"horizon": 3})


def test_realized_error_is_recorded_when_the_actuals_arrive(forecasting: Forecasting) -> None:
    later = forecasting.defs(LATER_END)
    arrived = ingest_demand_until(later, forecasting)
    assert arrived
    result = execute_quietly(later, forecasting.instance, "demand_forecast_job")
    assert result.success
    errors = forecasting.warehouse.query("select * from demand_forecast_errors")
    window = errors.filter(pl.col("forecast_origin") == ORIGIN)
    assert window.height == 1
    observed = forecasting.warehouse.query(
        "select count(*) from mart_demand where units is not null and period_start between ? and ?",
        [ORIGIN, ORIGIN + timedelta(days=27)],
    ).item()
    assert window["points"][0] == observed  # every arrived actual, missing days not scored
    assert 0 < window["wape"][0] < 2


def test_demand_drift_compares_realized_errors_with_the_backtest_and_requests_a_retraining(
    forecasting: Forecasting,
) -> None:
    """After the actuals of the first origin arrived (the test above): judged against the
    champion's own backtest errors; a forecast that halves the demand drifts, and the sensor
    requests one run with the reason."""
    later = forecasting.defs(LATER_END)
    assert forecasting.warehouse.query("select count(*) from demand_forecast_errors").item()
    assert execute_quietly(later, forecasting.instance, "demand_drift_job").success
    drift = forecasting.metadata("demand_forecast_drift")
    assert drift["reference_rows"].value > 0
    assert drift["scored_points"].value >= 50
    assert "no verdict" not in drift["why"].value, drift["why"].value  # judged, either way

    with forecasting.warehouse.connect() as con:
        con.execute(f"update {FORECASTS_TABLE} set p10 = p10 / 2, p50 = p50 / 2, p90 = p90 / 2")
    assert execute_quietly(later, forecasting.instance, "demand_drift_job").success
    drift = forecasting.metadata("demand_forecast_drift")
    why = drift["why"].value
    assert drift["drifted"].value and why.startswith("drift: "), why
    assert "log_error: median" in why and "in this window vs median" in why
    context = build_sensor_context(
        instance=forecasting.instance, resources={"monitoring": later.resources["monitoring"]}
    )
    request = demand_drift_sensor(context)
    assert isinstance(request, RunRequest)
    assert request.tags["mlops/reason"].startswith("log_error: median")
    assert request.run_key.startswith("demand:")


def ingest_demand_until(defs, forecasting: Forecasting) -> bool:
    """The new periods ingested and the mart rebuilt, as the schedule and sensor would."""
    run = PipelineRun()
    ingest_demand(defs, forecasting.instance, run)
    build_warehouse(defs, forecasting.instance, run)
    return run.success


def test_the_forecast_cli_uses_the_champion_and_a_plan_file(
    forecasting: Forecasting, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = forecasting.registry.champion(DEMAND_FORECASTER)
    store, item = forecasting.warehouse.query(
        "select store, item from demand_forecasts limit 1"
    ).row(0)
    plan = tmp_path / "plan.csv"
    pl.DataFrame(
        {
            "store": [store] * 2,
            "item": [item] * 2,
            "period_start": ["2025-05-01", "2025-05-02"],
            "price": [1.99, 1.99],
            "deal": [1.0, 0.0],
            "feature": [1.0, 1.0],
        }
    ).write_csv(plan)
    assert forecast_cli(["--plan", str(plan), "--horizon", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"champion v{champion.version}" in printed
    assert "2025-05-02" in printed
    assert forecast_cli(["--totals", "--horizon", "2"]) == 0
    printed = capsys.readouterr().out
    assert "stores" in printed and f"champion v{champion.version}" in printed
    assert forecast_cli(["--store", "nowhere", "--item", item]) == 2
    assert "unknown store/item" in capsys.readouterr().err


def test_the_boosted_model_registers_through_the_gate_and_forecasts_from_the_registry(
    forecasting: Forecasting,
) -> None:
    later = forecasting.defs(LATER_END)
    config = models_config(models=["naive", "lightgbm"])
    assert execute_quietly(later, forecasting.instance, "demand_models_job", config=config).success
    assert forecasting.metadata("demand_backtests")["selected_model"].value == "lightgbm"
    boosted = [
        v for v in forecasting.registry.versions(DEMAND_FORECASTER) if v.tags["kind"] == "lightgbm"
    ]
    assert boosted and "gate_decision" in boosted[-1].tags
    model = forecasting.registry.load(DEMAND_FORECASTER, boosted[-1].version)
    store, item = model.unwrap_python_model().forecaster.keys[0]
    answer = model.predict(pd.DataFrame({"store": [store], "item": [item]}), params={"horizon": 3})
    assert answer["model"].tolist() == ["lightgbm"] * 3
    assert (answer["p10"] <= answer["p50"]).all() and (answer["p50"] <= answer["p90"]).all()
