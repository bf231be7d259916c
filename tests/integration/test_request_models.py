"""Request classifiers end to end, in-process on real DuckDB, dbt and MLflow (SQLite registry):
the baseline and a small transformer are trained, logged and registered; the gate promotes a
better model and not a worse one; the rollback job moves the champion back."""

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from dagster import AssetKey, DagsterInstance, Definitions
from mlflow import MlflowClient

from assets.resources import DataHome, Warehouse
from ml.annotation.selection import prediction_margins
from ml.calibration import softmax
from ml.lifecycle.artifacts import ARTIFACT_ENCRYPTION, ARTIFACT_SHA256
from ml.lifecycle.economics import (
    load_business_case,
    priced_training_seconds,
    request_benefit_per_month,
)
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.settings import Settings
from orchestration.definitions import build_definitions
from orchestration.pipeline import execute_quietly, run_platform
from orchestration.serving import start_bento_server
from tests.conftest import (
    BASELINE_AND_TRANSFORMER,
    free_port,
    small_demand_source,
    write_request_drop,
)

SMALL_TRANSFORMER = {
    "epochs": 1,
    "batch_size": 16,
    "max_train_samples": 96,
    "max_validation_samples": 48,
    "max_length": 32,
}
WEAK_BASELINE_C = 0.0005
"""A real, much weaker baseline: the same model with almost no capacity left."""
SMALL_SEARCH = {"svm_c": [0.25, 1.0], "word_ngrams": ["1-2"], "char_ngrams": ["2-5"]}


def models_config(
    svm_c: float = 0.5, transformer: dict | None = None, linear_weight: float | None = None
) -> dict:
    return {
        "ops": {
            "request_baseline": {"config": {"svm_c": svm_c}},
            "request_tuned_linear": {"config": SMALL_SEARCH},
            "request_classifier": {"config": transformer or SMALL_TRANSFORMER},
            "request_ensemble": {"config": {"linear_weight": linear_weight}},
        }
    }


def only(config: dict, assets: list[str]) -> dict:
    """`config` for the ops of `assets` alone (a run of part of a job takes no other)."""
    return {"ops": {op: c for op, c in config["ops"].items() if op in assets}}


@dataclass
class Trained:
    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    registry: Registry
    first_run: object
    second_run: object


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A warehouse of generated requests; then two rounds of the request models job: first with
    a weak baseline, then with the real one (each round also trains a small transformer)."""
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("models") / "data_home"
        env.setenv("MLOPS_DATA_HOME", str(home))
        env.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings.from_env()
        write_request_drop(settings, "requests.csv", rows=2500, seed=1)
        unlabeled = write_request_drop(settings, "unlabeled.csv", rows=150, seed=5)
        hidden = Path(settings.request_drops_uri) / "synthetic_unlabeled"
        hidden.mkdir(parents=True)
        unlabeled.rename(hidden / unlabeled.name)
        defs = build_definitions(settings, small_demand_source(settings))
        instance = DagsterInstance.ephemeral()
        assert run_platform(defs, instance, DataHome(path=str(home))).success
        first, second = (
            execute_quietly(
                defs,
                instance,
                "request_models_job",
                config=only(models_config(svm_c), BASELINE_AND_TRANSFORMER),
                assets=BASELINE_AND_TRANSFORMER,
            )
            for svm_c in (WEAK_BASELINE_C, 0.5)
        )
        registry = Registry(settings.tracking_uri, settings.artifact_root)
        yield Trained(settings, defs, instance, registry, first, second)


def test_both_candidates_are_registered_with_what_a_reviewer_needs(trained: Trained) -> None:
    assert trained.first_run.success and trained.second_run.success
    versions = trained.registry.versions(REQUEST_CLASSIFIER)
    assert [v.tags["kind"] for v in versions] == [
        "baseline",
        "transformer",
        "baseline",
        "transformer",
    ]
    client = MlflowClient(trained.settings.tracking_uri)
    for version in versions:
        run = client.get_run(version.run_id)
        assert run.data.tags["mlflow.source.git.commit"]
        assert run.data.tags["dataset_version"].startswith("labels-v")
        assert run.data.tags["test_version"] == "1"
        assert {"test_f1_macro", "test_accuracy", "test_ece", "latency_per_sample_ms"} <= set(
            run.data.metrics
        )
        assert version.tags[ARTIFACT_ENCRYPTION] == "fernet"
        stored = [
            p for p in json.loads(version.tags[ARTIFACT_SHA256]) if p.startswith("artifacts/")
        ]
        assert stored and all(path.endswith(".enc") for path in stored), stored
        reports = {a.path for a in client.list_artifacts(version.run_id, "report")}
        assert reports == {
            "report/closest_intents.md",
            "report/confusion_matrix.png",
            "report/model_card.md",
            "report/per_class_report.md",
        }
    transformer_run = client.get_run(versions[1].run_id)
    assert transformer_run.data.params["transformer_epochs"] == "1"
    history = client.get_metric_history(versions[1].run_id, "validation_f1_macro_epoch")
    assert [m.step for m in history] == [1]


def test_a_registered_version_predicts_intents_with_probabilities_over_the_taxonomy(
    trained: Trained,
) -> None:
    champion = trained.registry.champion(REQUEST_CLASSIFIER)
    model = trained.registry.load(REQUEST_CLASSIFIER, champion.version)
    classes = model.metadata.metadata["classes"]
    assert len(classes) == 77
    assert model.metadata.signature is not None
    answer = model.predict(pd.DataFrame({"text": ["my card has not arrived yet", "top up"]}))
    assert list(answer.columns) == ["intent", "confidence", "probabilities"]
    for _, row in answer.iterrows():
        assert row["intent"] in classes
        assert len(row["probabilities"]) == 77
        assert abs(sum(row["probabilities"]) - 1) < 1e-6
        assert row["confidence"] == pytest.approx(max(row["probabilities"]))


def test_a_better_model_is_promoted_and_a_worse_one_is_not(trained: Trained) -> None:
    weak, _, strong, second_transformer = trained.registry.versions(REQUEST_CLASSIFIER)
    assert weak.tags["gate_decision"] == "champion"
    assert "no champion yet" in weak.tags["gate_reason"]
    assert strong.metric("test_f1_macro") > weak.metric("test_f1_macro") + 0.1
    assert strong.tags["gate_decision"] == "champion"
    assert "beats the champion" in strong.tags["gate_reason"]
    # The small transformer (96 rows, one epoch) is worse than the real baseline: never promoted.
    assert second_transformer.tags["gate_decision"] == "challenger"
    assert "loses to the baseline" in second_transformer.tags["gate_reason"]
    assert trained.registry.champion(REQUEST_CLASSIFIER).version == strong.version
    assert trained.registry.by_alias(REQUEST_CLASSIFIER, "challenger").version == (
        second_transformer.version
    )
    promotion = trained.instance.get_latest_materialization_event(
        AssetKey("request_classifier_promotion")
    ).asset_materialization.metadata
    assert promotion["champion_version"].value == strong.version
    assert "loses to the baseline" in promotion["decisions"].value


def test_training_metadata_shows_scores_against_the_baseline_and_a_picture(
    trained: Trained,
) -> None:
    metadata = trained.instance.get_latest_materialization_event(
        AssetKey("request_classifier")
    ).asset_materialization.metadata
    assert "data:image/png;base64," in metadata["confusion_matrix"].value
    assert metadata["baseline_test_f1_macro"].value > metadata["test_f1_macro"].value
    assert "| metric | this model | baseline |" in metadata["model_card"].value
    assert metadata["device"].value == "cpu"


def test_the_champion_is_priced_from_what_was_measured_and_its_card_says_so(
    trained: Trained,
) -> None:
    for _ in range(2):  # priced again: the model card's section is replaced, not repeated
        assert execute_quietly(trained.defs, trained.instance, "model_roi_job").success
    priced = {
        key: value.value
        for key, value in trained.instance.get_latest_materialization_event(
            AssetKey("request_classifier_roi")
        ).asset_materialization.metadata.items()
    }
    champion = trained.registry.champion(REQUEST_CLASSIFIER)
    versions = trained.registry.versions(REQUEST_CLASSIFIER)
    client = MlflowClient(trained.settings.tracking_uri)
    measured = sum(priced_training_seconds(client.get_run(v.run_id).data.metrics) for v in versions)
    case = load_business_case()
    assert priced["champion"] == f"v{champion.version}"
    assert priced["spent"] == pytest.approx(measured / 3600 * case.prices.cpu_hour)
    assert priced["benefit_per_month"] == pytest.approx(
        request_benefit_per_month(case.requests, champion.metric("test_accuracy"))
    )
    assert priced["serving_per_1000"] > 0
    assert priced["roi"] == pytest.approx(
        (12 * priced["benefit_per_month"] - priced["spent"] - 12 * priced["serving_per_month"])
        / (priced["spent"] + 12 * priced["serving_per_month"])
    )
    assert all(f"| v{v.version} |" in priced["versions"] for v in versions)
    assert "data:image/png;base64," in priced["cost_effect_curve"]
    assert "rent" in priced["rent_or_own_gpu"] or "own" in priced["rent_or_own_gpu"]
    card = Path(
        client.download_artifacts(
            champion.run_id, "report/model_card.md", str(trained.settings.data_home)
        )
    ).read_text(encoding="utf-8")
    assert card.count("## Cost and return") == 1
    assert card.index("## Scores on the frozen test version") < card.index("## Cost and return")
    assert "## Limits" in card
    reports = {a.path for a in client.list_artifacts(champion.run_id, "report")}
    assert {"report/cost_effect.png", "report/economics.md"} <= reports
    # Nothing else was trained or gated: the other domains have no champion to price.
    demand = trained.instance.get_latest_materialization_event(AssetKey("demand_forecaster_roi"))
    assert demand.asset_materialization.metadata["priced"].value == "no: no champion yet"


def test_rollback_moves_the_champion_back_and_shows_in_the_ui(trained: Trained) -> None:
    history = trained.registry.champion_history(REQUEST_CLASSIFIER)
    assert (
        len(history) >= 2 and history[-1] == trained.registry.champion(REQUEST_CLASSIFIER).version
    )
    while len(history) > 1:
        rolled_back, expected = history[-1], history[-2]
        result = execute_quietly(
            trained.defs,
            trained.instance,
            "rollback_champion_job",
            config={"ops": {"rollback_champion": {"config": {"reason": "test: bad outputs"}}}},
        )
        assert result.success
        assert trained.registry.champion(REQUEST_CLASSIFIER).version == expected
        tags = trained.registry.version(REQUEST_CLASSIFIER, rolled_back).tags
        assert tags["rollback_reason"] == "test: bad outputs"
        observed = trained.instance.fetch_observations(
            AssetKey("request_classifier_promotion"), limit=1
        ).records[0]
        assert observed.asset_observation.metadata["champion_version"].value == expected
        history = trained.registry.champion_history(REQUEST_CLASSIFIER)
    # Nothing older to go back to: a clear failure, and the alias stays where it is.
    again = execute_quietly(trained.defs, trained.instance, "rollback_champion_job")
    assert not again.success
    assert "no earlier champion" in str(again.get_step_failure_events()[0].event_specific_data)
    assert trained.registry.champion(REQUEST_CLASSIFIER).version == history[0]


def test_a_checkpoint_that_does_not_exist_fails_clearly_and_registers_nothing(
    trained: Trained, tmp_path: Path
) -> None:
    before = len(trained.registry.versions(REQUEST_CLASSIFIER))
    champion = trained.registry.champion(REQUEST_CLASSIFIER).version
    missing = tmp_path / "no-such-model"
    result = execute_quietly(
        trained.defs,
        trained.instance,
        "request_models_job",
        config=models_config(transformer={**SMALL_TRANSFORMER, "checkpoint": str(missing)}),
    )
    assert not result.success
    failure = str(result.get_step_failure_events()[0].event_specific_data)
    assert str(missing) in failure and "no such folder" in failure
    after = trained.registry.versions(REQUEST_CLASSIFIER)
    # The baseline and the tuned linear model of this run; no transformer, so no ensemble.
    assert [v.tags["kind"] for v in after[before:]] == ["baseline", "tuned_linear"]
    assert trained.registry.champion(REQUEST_CLASSIFIER).version == champion


def test_an_mlflow_server_that_is_down_fails_clearly_and_moves_nothing(
    trained: Trained,
) -> None:
    down = replace(trained.settings, mlflow_tracking_uri="http://127.0.0.1:9")
    defs = build_definitions(down, small_demand_source(trained.settings))
    before = [(v.version, v.aliases) for v in trained.registry.versions(REQUEST_CLASSIFIER)]
    result = execute_quietly(defs, trained.instance, "request_models_job", config=models_config())
    assert not result.success
    failure = str(result.get_step_failure_events()[0].event_specific_data)
    assert "MLflow tracking server at http://127.0.0.1:9 is not reachable" in failure
    assert [(v.version, v.aliases) for v in trained.registry.versions(REQUEST_CLASSIFIER)] == before


def test_the_champion_picks_the_requests_it_is_least_sure_of_for_annotation(
    trained: Trained,
) -> None:
    champion = trained.registry.champion(REQUEST_CLASSIFIER)
    result = execute_quietly(
        trained.defs,
        trained.instance,
        "annotation_candidates_job",
        config={"ops": {"annotation_candidates": {"config": {"batch_size": 10}}}},
    )
    assert result.success
    metadata = trained.instance.get_latest_materialization_event(
        AssetKey("annotation_candidates")
    ).asset_materialization.metadata
    assert metadata["strategy"].value == "smallest margin"
    assert metadata["scored_by"].value == f"{REQUEST_CLASSIFIER} v{champion.version}"
    batch = metadata["batch"].value
    chosen = (
        Warehouse(path=str(trained.settings.warehouse_path))
        .query("select text from annotation_items where batch_id = ?", [batch])["text"]
        .to_list()
    )
    pool = (
        Warehouse(path=str(trained.settings.warehouse_path))
        .query("select text from stg_requests where intent is null")["text"]
        .to_list()
    )
    model = trained.registry.load(REQUEST_CLASSIFIER, champion.version)
    margins = prediction_margins(
        np.array(model.predict(pd.DataFrame({"text": pool}))["probabilities"].tolist())
    )
    by_text = dict(zip(pool, margins, strict=True))
    assert max(by_text[t] for t in chosen) <= np.median(margins)


def test_the_tuned_linear_model_and_the_ensemble_go_through_the_same_gate(
    trained: Trained,
) -> None:
    """The whole job: the search's settings are child runs, the ensemble of this run's tuned
    linear model and transformer is one registered version that predicts like the two mixed,
    and the gate decides on every new version."""
    before = len(trained.registry.versions(REQUEST_CLASSIFIER))
    result = execute_quietly(
        trained.defs,
        trained.instance,
        "request_models_job",
        config=models_config(linear_weight=0.7),
    )
    assert result.success
    new = trained.registry.versions(REQUEST_CLASSIFIER)[before:]
    kinds = {v.tags["kind"]: v for v in new}
    ensemble_event = trained.instance.get_latest_materialization_event(AssetKey("request_ensemble"))
    assert ensemble_event is not None, [e.event_type_value for e in result.all_events][-20:]
    registered = ensemble_event.asset_materialization.metadata["registered"].value
    assert sorted(kinds) == ["baseline", "ensemble", "transformer", "tuned_linear"], registered
    for version in new:
        assert version.tags["gate_decision"] in ("champion", "challenger"), version.tags

    client = MlflowClient(trained.settings.tracking_uri)
    tuned = kinds["tuned_linear"]
    children = client.search_runs(
        [client.get_run(tuned.run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{tuned.run_id}'",
    )
    assert sorted(c.data.params["svm_c"] for c in children) == ["0.25", "1.0"]
    assert all("validation_f1_macro" in c.data.metrics for c in children)
    chosen = client.get_run(tuned.run_id).data.params["svm_c"]
    best = max(children, key=lambda c: c.data.metrics["validation_f1_macro"])
    assert chosen == best.data.params["svm_c"]
    search = trained.instance.get_latest_materialization_event(
        AssetKey("request_tuned_linear")
    ).asset_materialization.metadata["search"]
    assert search.value.count("\n") == 3  # header, rule and one row per setting

    ensemble = kinds["ensemble"]
    params = client.get_run(ensemble.run_id).data.params
    assert params["linear_weight"] == "0.7"
    assert params["tuned_linear_version"] == tuned.version
    assert params["transformer_version"] == kinds["transformer"].version
    texts = ["my card has not arrived yet", "how do I top up", "I forgot my PIN"]

    def probabilities(version: str) -> np.ndarray:
        model = trained.registry.load(REQUEST_CLASSIFIER, version)
        return np.array(model.predict(pd.DataFrame({"text": texts}))["probabilities"].tolist())

    mixed = probabilities(ensemble.version)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    loaded = trained.registry.load(REQUEST_CLASSIFIER, ensemble.version).unwrap_python_model()
    temperature = loaded.classifier.temperature
    mean = 0.7 * probabilities(tuned.version) + 0.3 * probabilities(kinds["transformer"].version)
    expected = softmax(np.log(np.clip(mean, 1e-12, None)), temperature)
    np.testing.assert_allclose(mixed, expected, atol=1e-5)
    card = client.download_artifacts(ensemble.run_id, "report/model_card.md")
    text = Path(card).read_text(encoding="utf-8")
    assert "## The closest intents" in text and "## F1 per intent" in text

    # Packaged and served like any other version: `bentoml serve` answers what it predicts.
    store = trained.defs.resources["bento_store"]
    packaged = store.package(trained.settings.tracking_uri, {REQUEST_CLASSIFIER: ensemble.version})
    log = trained.settings.data_home / "logs" / "ensemble-serve.log"
    server = start_bento_server(trained.settings, packaged["bento"], free_port(), log)
    try:
        answers = requests.post(
            f"{server.url}/classify", json={"texts": texts}, headers=server.headers(), timeout=60
        )
    finally:
        server.stop()
    assert answers.status_code == 200, answers.text
    classes = loaded.classifier.classes
    for answer, row in zip(answers.json(), mixed, strict=True):
        assert answer["model_version"] == ensemble.version
        assert answer["intent"] == classes[int(np.argmax(row))]
        assert answer["confidence"] == pytest.approx(float(row.max()), abs=1e-5)
