"""The platform end to end, in-process on real DuckDB and dbt: small generated data in a private
data home, the same jobs `make demo` runs."""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, Definitions

from assets.resources import DataHome, Warehouse
from ml.settings import Settings
from ml.synthetic.defect_images import generate_cell_images, image_drop_zip
from orchestration.definitions import build_definitions
from orchestration.pipeline import PipelineRun, ingest_demand, ingest_request_drops, run_platform
from tests.conftest import small_demand_source, write_request_drop


@dataclass
class Platform:
    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    run: PipelineRun

    @property
    def data_home(self) -> DataHome:
        return DataHome(path=str(self.settings.data_home))

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(path=str(self.settings.warehouse_path))

    def count(self, sql: str) -> int:
        return int(self.warehouse.query(sql).item())


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Two request drops, one image drop and two months of daily demand, built once for the
    module."""
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("platform") / "data_home"
        env.setenv("MLOPS_DATA_HOME", str(home))
        env.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
        settings = Settings.from_env()
        write_request_drop(settings, "jan.csv", rows=700, seed=1)
        write_request_drop(settings, "feb.csv", rows=300, seed=2)
        cells = Path(settings.defect_drops_uri) / "line1" / "cells.zip"
        cells.parent.mkdir(parents=True)
        cells.write_bytes(image_drop_zip(generate_cell_images(40, seed=3, size=48)))
        defs = build_definitions(settings, small_demand_source(settings))
        instance = DagsterInstance.ephemeral()
        run = run_platform(defs, instance, DataHome(path=str(home)))
        yield Platform(settings, defs, instance, run)


def test_the_whole_graph_materializes_with_every_check_passing(platform: Platform) -> None:
    assert platform.run.success, {n: r.success for n, r in platform.run.results.items()}
    passed, failed = platform.run.check_outcomes()
    assert failed == 0 and passed >= 29
    # Beyond the warehouse, each stage has its own tests: the annotation loop needs Label Studio
    # (test_annotation_loop.py), the models train and register (test_request_models.py,
    # test_forecasting.py, test_defect_models.py), serving and drift run on a served champion
    # (test_serving.py, test_inspect.py, test_drift_loop.py), the lineage snapshot before
    # training (test_lineage_snapshot.py), the pricing after training and the monitoring pages
    # on served traffic (test_request_models.py, test_serving_pages.py); prediction_logs is
    # written by the service, not materialized.
    beyond_the_warehouse = {
        "annotation_candidates",
        "annotation_batch",
        "annotated_batch",
        "labeled_requests",
        "lineage_snapshot",
        "request_test_set",
        "request_baseline",
        "request_classifier",
        "request_classifier_promotion",
        "request_tuned_linear",
        "request_ensemble",
        "store_attributes",
        "demand_backtests",
        "demand_forecaster",
        "demand_forecaster_promotion",
        "demand_forecasts",
        "demand_forecast_errors",
        "champion_bento",
        "prediction_logs",
        "reference_profiles",
        "serving_profiles",
        "drift_report",
        "demand_forecast_drift",
        "defect_test_set",
        "defect_baseline",
        "defect_cnn",
        "defect_classifier_promotion",
        "defect_annotation_candidates",
        "defect_annotation_batch",
        "defect_annotated_batch",
        "labeled_defect_images",
        "defect_image_reference",
        "defect_image_drift",
        "request_classifier_roi",
        "demand_forecaster_roi",
        "defect_classifier_roi",
        "request_dashboard",
        "defect_dashboard",
        "demand_dashboard",
    }
    for key in platform.defs.resolve_asset_graph().get_all_asset_keys():
        if key.to_user_string() not in beyond_the_warehouse:
            assert platform.instance.get_latest_materialization_event(key) is not None, key


def test_every_row_of_every_drop_is_valid_or_quarantined(platform: Platform) -> None:
    raw_dir = Path(platform.data_home.raw_location) / "requests"
    drops = sorted(raw_dir.glob("*.parquet"))
    assert len(drops) == 2
    total_quarantined = 0
    for path in drops:
        rows_in = pl.read_parquet(path).height
        drop_id = path.stem
        valid = platform.count(
            f"select count(*) from validated_requests where drop_id = '{drop_id}'"
        )
        quarantined = platform.count(
            f"select count(*) from quarantine_requests where drop_id = '{drop_id}'"
        )
        assert rows_in == valid + quarantined
        total_quarantined += quarantined
    assert total_quarantined > 0, "the generator repeats a few rows verbatim: they are duplicates"
    assert (
        platform.count("select count(*) from quarantine_requests where duplicate_of is null") == 0
    )


def test_dbt_models_and_tests_are_in_the_same_run_history(platform: Platform) -> None:
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in platform.run.results["warehouse"].get_asset_check_evaluations()
    }
    assert evaluations[("request_splits", "no_text_key_straddles_splits")]
    assert evaluations[("mart_demand", "unique_combination_mart_demand_store__item__period_start")]
    assert platform.count("select count(*) from request_splits") == platform.count(
        "select count(*) from validated_requests"
    )


def test_near_duplicate_texts_share_one_split(platform: Platform) -> None:
    splits = platform.warehouse.query(
        "select split, count(*) as n from request_splits group by split"
    )
    shares = dict(zip(splits["split"], splits["n"], strict=True))
    assert set(shares) == {"train", "validation", "test"}
    assert (
        platform.count(
            "select count(*) from (select text_key from request_splits "
            "group by text_key having count(distinct split) > 1)"
        )
        == 0
    )
    same = platform.warehouse.query(
        "select distinct split from request_splits where text_key = 'i lost my card'"
    )
    assert same.height <= 1


def test_missing_demand_periods_are_explicit_never_zero(platform: Platform) -> None:
    grid = platform.count("select count(*) from mart_demand")
    valid = platform.count("select count(*) from validated_demand")
    missing = platform.count("select count(*) from mart_demand where is_missing")
    assert missing > 0 and grid == valid + missing
    assert (
        platform.count("select count(*) from mart_demand where is_missing and units is not null")
        == 0
    )
    holidays = platform.warehouse.query(
        "select distinct holidays from mart_demand where has_holiday"
    )["holidays"].to_list()
    assert "New Year's Day" in holidays


def test_ui_metadata_has_counts_schema_preview_and_pictures(platform: Platform) -> None:
    event = platform.instance.get_latest_materialization_event(AssetKey("validated_requests"))
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value > 0
    assert {c.name for c in metadata["dagster/column_schema"].value.columns} >= {"text", "intent"}
    assert metadata["preview"].value.startswith("| request_id |")
    assert "data:image/png;base64," in metadata["intents"].value
    demand = platform.instance.get_latest_materialization_event(AssetKey("validated_demand"))
    assert "data:image/png;base64," in demand.asset_materialization.metadata["units"].value


def test_reingesting_is_idempotent_and_a_redrop_is_a_recorded_no_op(platform: Platform) -> None:
    before = platform.count("select count(*) from validated_requests")
    demand_before = platform.count("select count(*) from validated_demand")
    drops = Path(platform.settings.request_drops_uri) / "synthetic"
    shutil.copy(drops / "jan.csv", drops / "jan_again.csv")
    run = PipelineRun()
    ingest_request_drops(platform.defs, platform.instance, platform.data_home, run)
    assert run.results == {} and run.redrops == [str(drops / "jan_again.csv")]
    drop_id = next(iter(platform.instance.get_dynamic_partitions("request_drops")))
    again = platform.defs.resolve_job_def("request_ingest_job").execute_in_process(
        instance=platform.instance, partition_key=drop_id
    )
    ingest_demand(platform.defs, platform.instance, run)
    assert again.success and run.success
    assert platform.count("select count(*) from validated_requests") == before
    assert platform.count("select count(*) from validated_demand") == demand_before
    assert len(platform.instance.get_dynamic_partitions("request_drops")) == 2


# --- bad input, each in its own data home ----------------------------------------------------


def ingest_only(
    settings: Settings, **source_overrides: object
) -> tuple[Definitions, DagsterInstance]:
    defs = build_definitions(settings, small_demand_source(settings, **source_overrides))
    return defs, DagsterInstance.ephemeral()


def step_errors(result) -> str:
    return " ".join(
        e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    )


def test_a_malformed_drop_fails_its_run_naming_the_file_and_line(settings: Settings) -> None:
    folder = Path(settings.request_drops_uri) / "synthetic"
    folder.mkdir(parents=True)
    (folder / "broken.csv").write_text("request_id,text\nr1,hello\nr2,one,too many\n")
    defs, instance = ingest_only(settings)
    run = PipelineRun()
    ingest_request_drops(defs, instance, DataHome(path=str(settings.data_home)), run)
    (result,) = run.results.values()
    assert not result.success
    assert "broken.csv: line 3: expected 2 fields (request_id, text), found 3" in step_errors(
        result
    )
    assert not Warehouse(path=str(settings.warehouse_path)).table_exists("validated_requests")


def test_a_drop_with_too_many_empty_texts_is_blocked_by_its_null_rate_check(
    settings: Settings,
) -> None:
    folder = Path(settings.request_drops_uri) / "synthetic"
    folder.mkdir(parents=True)
    rows = "".join(f"r{i},{'' if i % 3 == 0 else 'text number ' + str(i)}\n" for i in range(30))
    (folder / "sparse.csv").write_text("request_id,text\n" + rows)
    defs, instance = ingest_only(settings)
    run = PipelineRun()
    ingest_request_drops(defs, instance, DataHome(path=str(settings.data_home)), run)
    (result,) = run.results.values()
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["null_rates_within_limits"].passed
    assert checks["rows_reconcile"].passed
    assert "blocking asset check failed" in step_errors(result)
    warehouse = Warehouse(path=str(settings.warehouse_path))
    assert warehouse.query("select count(*) from quarantine_requests").item() == 10


def test_a_stale_live_feed_fails_its_freshness_check(settings: Settings) -> None:
    defs, instance = ingest_only(settings, max_age_days=2.0)
    run = PipelineRun()
    ingest_demand(defs, instance, run)
    checks = {e.check_name: e for e in run.results["demand"].get_asset_check_evaluations()}
    assert not checks["fresh"].passed
    assert checks["fresh"].metadata["age_days"].value > 2


def test_a_period_with_no_data_materializes_empty_and_says_so(settings: Settings) -> None:
    defs, instance = ingest_only(settings, end=date(2025, 3, 10))
    result = defs.resolve_job_def("demand_ingest_job").execute_in_process(
        instance=instance, partition_key="2025-03-05"
    )
    assert result.success
    raw = instance.get_latest_materialization_event(AssetKey("raw_demand")).asset_materialization
    assert raw.metadata["dagster/row_count"].value == 0
    assert raw.metadata["empty_partitions"].value == 1
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_a_demand_source_that_points_nowhere_says_where(settings: Settings, tmp_path: Path) -> None:
    defs, instance = ingest_only(settings, uri=str(tmp_path / "no_such_file.csv"))
    run = PipelineRun()
    ingest_demand(defs, instance, run)
    assert "no_such_file.csv: file not found" in step_errors(run.results["demand"])


def test_settings_that_point_nowhere_are_named(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from assets.resources import RequestIntake
    from ml.data.sources import demand_source_of

    monkeypatch.setenv("MLOPS_DEMAND_SOURCE", "bogus")
    with pytest.raises(ValueError, match="MLOPS_DEMAND_SOURCE='bogus': expected one of"):
        demand_source_of(Settings.from_env())
    monkeypatch.setenv("MLOPS_REQUESTS_MAX_AGE_DAYS", "soon")
    with pytest.raises(ValueError, match="MLOPS_REQUESTS_MAX_AGE_DAYS='soon'"):
        Settings.from_env()
    intake = RequestIntake(drops_uri=str(tmp_path), taxonomy_path=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match=r"missing\.json: taxonomy file not found"):
        intake.taxonomy()


def test_picking_candidates_before_the_warehouse_exists_says_what_to_do(settings: Settings) -> None:
    defs, instance = ingest_only(settings)
    result = defs.resolve_job_def("annotation_candidates_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    assert "stg_requests does not exist yet" in step_errors(result)
