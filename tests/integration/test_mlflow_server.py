"""The MLflow wrapper against a real `mlflow server` (PostgreSQL backend, artifacts proxied by the
server), as a team deployment runs it: real baselines are logged and registered over HTTP, the
promotion gate moves the aliases, the champion loads and predicts, the rollback moves it back; a
server that is down fails fast and clearly."""

import re
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml.lifecycle.aliases import CHALLENGER, CHAMPION
from ml.lifecycle.promotion import GateOutcome, gate_pending_versions
from ml.lifecycle.pyfunc import INTENT_CLASSIFIER_ENTRY, pip_requirements
from ml.lifecycle.registry import (
    URI_VARIABLES,
    ModelVersion,
    Registry,
    RegistryUnavailable,
    TrainingRun,
    git_commit,
)
from ml.metrics import score_classification
from ml.requests.classifiers import BaselineClassifier, LabeledTexts
from tests.conftest import STARVED_C, STRONG_C, Baselines, classifier_rescorer, free_port

MODEL_NAME = "intent_classifier_on_server"
TEST_VERSION = "1"
MARGIN = 0.01


def register(
    registry: Registry, baselines: Baselines, model: BaselineClassifier, label: str, folder: Path
) -> ModelVersion:
    """Log and register `model` as the request models asset does: scored on the held-out test,
    a report folder, the classifier folder as the pyfunc's artifact."""
    scores = score_classification(
        baselines.test.intents, model.predict_proba(baselines.test.texts), baselines.classes
    )
    report = folder / "report"
    report.mkdir(parents=True)
    (report / "per_class_report.md").write_text(scores.report_markdown(), encoding="utf-8")
    (report / "model_card.md").write_text(f"# {label}\n", encoding="utf-8")
    model.save(folder / "classifier")
    return registry.log_and_register(
        MODEL_NAME,
        TrainingRun(
            run_name=label,
            params={"svm_c": model.pipeline.named_steps["svm"].C, "kind": "baseline"},
            metrics=scores.as_metrics("test"),
            tags={"kind": "baseline", "test_version": TEST_VERSION},
            version_tags={
                "kind": "baseline",
                "role": "baseline",
                "test_version": TEST_VERSION,
                **{key: f"{value:.6f}" for key, value in scores.as_metrics("test").items()},
            },
            report_dir=report,
        ),
        INTENT_CLASSIFIER_ENTRY,
        {"classifier": str(folder / "classifier")},
        pd.DataFrame({"text": baselines.test.texts[:3]}),
        pip_requirements(),
        {"classes": list(baselines.classes), "kind": "baseline"},
    )


def gate(registry: Registry, test: LabeledTexts) -> list[GateOutcome]:
    """The real gate: every version loaded over HTTP (digests verified) and scored on `test`."""
    return gate_pending_versions(
        registry,
        MODEL_NAME,
        TEST_VERSION,
        "test_f1_macro",
        MARGIN,
        classifier_rescorer(registry, MODEL_NAME, test),
    )


@dataclass(frozen=True)
class Registered:
    registry: Registry
    versions: list[ModelVersion]
    """weak (v1), strong (v2), weak again (v3)."""
    outcomes: list[GateOutcome]
    uris_before: dict[str, str | None]
    uris_after: dict[str, str | None]


def process_uris() -> dict[str, str | None]:
    return {variable.name: variable.get_raw() for variable in URI_VARIABLES}


@pytest.fixture(scope="module")
def registered(
    mlflow_server: str, baselines: Baselines, tmp_path_factory: pytest.TempPathFactory
) -> Registered:
    """The weak baseline first (the first champion), then the strong one (promoted over it), then
    the weak one once more (kept as the challenger); the gate runs after each."""
    uris_before = process_uris()
    registry = Registry(mlflow_server)
    folder = tmp_path_factory.mktemp("server_models")
    versions, outcomes = [], []
    for label, model in (
        ("weak", baselines.starved),
        ("strong", baselines.strong),
        ("weak-again", baselines.starved),
    ):
        versions.append(register(registry, baselines, model, label, folder / label))
        outcomes.extend(gate(registry, baselines.test))
    return Registered(registry, versions, outcomes, uris_before, process_uris())


@pytest.mark.postgres
def test_the_gate_promotes_the_better_model_and_the_rollback_moves_it_back(
    registered: Registered, baselines: Baselines
) -> None:
    registry = registered.registry
    weak, strong, weak_again = (v.version for v in registered.versions)
    assert [v.version for v in registry.versions(MODEL_NAME)] == [weak, strong, weak_again]
    assert [o.version for o in registered.outcomes] == [weak, strong, weak_again]
    first, second, third = (o.decision for o in registered.outcomes)
    assert first.promote and "no champion yet" in first.reason
    assert registered.outcomes[1].score > registered.outcomes[0].score + 0.1
    assert second.promote and "beats the champion" in second.reason
    assert not third.promote and "does not beat the champion" in third.reason

    assert registry.champion(MODEL_NAME).version == strong
    assert registry.by_alias(MODEL_NAME, CHALLENGER).version == weak_again
    challenger = registry.version(MODEL_NAME, weak_again)
    assert challenger.tags["gate_decision"] == CHALLENGER
    assert challenger.tags["gate_reason"] == third.reason
    assert registry.champion_history(MODEL_NAME) == [weak, strong]
    assert float(challenger.tags["gate_score"]) == pytest.approx(
        registered.outcomes[2].score, abs=1e-6
    )
    assert [(e.action, e.version, e.outcome) for e in registry.audit(MODEL_NAME)] == [
        ("promote", weak, "done"),
        ("promote", strong, "done"),
        ("challenger", weak_again, "done"),
    ]

    champion = registry.load(MODEL_NAME, strong)
    texts = ["I lost my card, please block it", "how do I activate my new card?"]
    answer = champion.predict(pd.DataFrame({"text": texts}))
    assert list(answer.columns) == ["intent", "confidence", "probabilities"]
    assert answer["intent"].tolist() == baselines.strong.predict(texts)
    assert set(answer["intent"]) <= set(champion.metadata.metadata["classes"])
    for _, row in answer.iterrows():
        assert len(row["probabilities"]) == len(baselines.classes)
        assert row["confidence"] == pytest.approx(max(row["probabilities"]))

    assert registry.rollback(MODEL_NAME, "test: strong model misbehaves") == (strong, weak)
    assert registry.champion(MODEL_NAME).version == weak
    assert registry.version(MODEL_NAME, strong).tags["rollback_reason"] == (
        "test: strong model misbehaves"
    )
    with pytest.raises(ValueError, match="no earlier champion"):
        registry.rollback(MODEL_NAME, "test: nothing older")
    assert registry.champion(MODEL_NAME).version == weak
    assert registry.by_alias(MODEL_NAME, CHAMPION).version == weak


@pytest.mark.postgres
def test_runs_carry_the_commit_and_their_artifacts_live_behind_the_server(
    registered: Registered, mlflow_server: str
) -> None:
    # The wrapper leaves the process's MLflow URIs as it found them (it once exported the
    # resolved ./mlflow.db default, and this client's registry calls went there).
    assert registered.uris_after == registered.uris_before
    client = MlflowClient(mlflow_server)
    for version in registered.versions:
        run = client.get_run(version.run_id)
        assert run.data.tags["mlflow.source.git.commit"] == git_commit() != "unknown"
        assert run.data.params["svm_c"] in (str(STRONG_C), str(STARVED_C))
        assert {"test_f1_macro", "test_accuracy", "test_ece"} <= set(run.data.metrics)
        # Proxied artifact storage: the client never sees the server's folder, only its API.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        reports = {a.path for a in client.list_artifacts(version.run_id, "report")}
        assert reports == {"report/model_card.md", "report/per_class_report.md"}
        model_files = {
            Path(a.path).name
            for a in mlflow.artifacts.list_artifacts(
                artifact_uri=client.get_model_version_download_uri(MODEL_NAME, version.version),
                tracking_uri=mlflow_server,
            )
        }
        assert {"MLmodel", "artifacts", "requirements.txt"} <= model_files


def test_a_server_that_is_down_fails_fast_naming_it_and_logs_nothing(
    baselines: Baselines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where MLflow's local fallbacks (mlruns/, mlflow.db) would land
    url = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on
    before = mlflow.get_tracking_uri()
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=re.escape(url)) as failure:
        register(Registry(url), baselines, baselines.strong, "down", tmp_path / "model")
    assert time.monotonic() - started < 10
    assert "nothing was logged or registered" in str(failure.value)
    assert mlflow.active_run() is None
    assert mlflow.get_tracking_uri() == before
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
