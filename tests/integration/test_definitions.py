"""The code location a person opens in the UI: one graph, two domains and their serving, every
asset explained."""

from pathlib import Path

import pytest
from dagster import AssetKey

from ml.settings import Settings
from orchestration.definitions import build_definitions
from tests.conftest import small_demand_source


def test_every_asset_has_a_description_a_domain_an_owner_and_a_code_version(
    settings: Settings,
) -> None:
    graph = build_definitions(settings, small_demand_source(settings)).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description, f"{name} has no description"
        assert node.group_name in {"requests", "demand", "defects", "serving"}, (
            f"{name} is in group {node.group_name}"
        )
        assert node.owners, f"{name} has no owner"
        assert node.code_version, f"{name} has no code version"


def test_the_graph_runs_raw_to_validated_to_dbt_marts_to_serving_and_drift(
    settings: Settings,
) -> None:
    graph = build_definitions(settings, small_demand_source(settings)).resolve_asset_graph()

    def upstream(name: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(AssetKey(name)).parent_keys}

    assert upstream("validated_requests") == {"raw_requests"}
    assert upstream("stg_requests") == {"validated_requests"}
    assert upstream("request_splits") == {"stg_requests", "split_assignments", "labeled_requests"}
    assert upstream("labeled_requests") == {"annotated_batch"}
    assert upstream("annotated_batch") == {"annotation_batch"}
    assert upstream("validated_demand") == {"raw_demand"}
    assert upstream("stg_demand") == {"validated_demand"}
    assert upstream("mart_demand") == {"stg_demand", "calendar_days"}
    assert upstream("validated_defect_images") == {"raw_defect_images"}
    assert upstream("stg_defect_images") == {"validated_defect_images"}
    assert upstream("defect_image_splits") == {
        "stg_defect_images",
        "defect_split_assignments",
        "labeled_defect_images",
    }
    assert upstream("labeled_defect_images") == {"defect_annotated_batch"}
    assert upstream("defect_cnn") == {"defect_image_splits", "defect_test_set", "defect_baseline"}
    assert upstream("defect_classifier_promotion") == {"defect_baseline", "defect_cnn"}
    assert upstream("champion_bento") == {
        "request_classifier_promotion",
        "demand_forecaster_promotion",
        "defect_classifier_promotion",
    }
    for domain, model in (
        ("request", "request_classifier"),
        ("defect", "defect_classifier"),
        ("demand", "demand_forecaster"),
    ):
        assert upstream(f"{model}_roi") == {f"{model}_promotion"}
        assert (
            graph.get(AssetKey(f"{domain}_dashboard")).group_name
            == graph.get(AssetKey(f"{model}_roi")).group_name
        )
    assert upstream("reference_profiles") == {"champion_bento"}
    assert upstream("serving_profiles") == {"prediction_logs", "reference_profiles"}
    assert upstream("drift_report") == {"serving_profiles", "reference_profiles"}
    assert upstream("demand_forecast_drift") == {"demand_forecast_errors", "demand_backtests"}
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for asset in ("validated_requests", "validated_demand"):
        for check in (
            "rows_reconcile",
            "schema_conforms",
            "null_rates_within_limits",
            "no_duplicate_keys",
            "fresh",
        ):
            assert (asset, check) in checks
    assert ("request_splits", "no_text_key_straddles_splits") in checks
    for check in ("rows_reconcile", "no_duplicate_images", "quarantine_share_within_limit"):
        assert ("validated_defect_images", check) in checks


def test_a_setting_from_the_environment_reaches_a_run_as_its_variable(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UI shows which variable set a resource's value (a Dagster EnvVar), and a run reads
    the variable itself; a setting nobody set stays a plain value."""
    from dagster import EnvVar, asset, materialize

    from assets.resources import RequestIntake, build_resources

    drops = tmp_path / "elsewhere" / "drops"
    monkeypatch.setenv("MLOPS_REQUEST_DROPS_URI", str(drops))
    monkeypatch.delenv("MLOPS_LABEL_STUDIO_URL", raising=False)
    resources = build_resources(Settings.from_env())
    intake = resources["request_intake"]
    assert isinstance(intake.drops_uri, EnvVar)
    assert intake.drops_uri == "MLOPS_REQUEST_DROPS_URI"
    assert not isinstance(resources["label_studio"].url, EnvVar)

    @asset
    def where_drops_land(request_intake: RequestIntake) -> str:
        return request_intake.drops_uri

    result = materialize([where_drops_land], resources={"request_intake": intake})
    assert result.output_for_node("where_drops_land") == str(drops)
    moved = Settings.from_env().moved_to(tmp_path / "home")
    assert build_resources(moved)["request_intake"].drops_uri == str(
        tmp_path / "home" / "drops" / "requests"
    ), "a data home moved in code no longer follows the variable"
