"""Nothing unvetted reaches serving, against the real MLflow registry (SQLite under a private
data home, artifacts on local disk): the gate decides only on scores it computed itself, every
artifact is verified against the sha256 digests recorded at registration and stored encrypted,
alias moves are serialized and audited, and a crash between an alias move and its audit outcome
is repaired."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from cryptography.fernet import Fernet
from dagster import materialize
from mlflow import MlflowClient

from assets.resources import BentoStore, ModelRegistry
from assets.serving.bento import champion_bento
from ml.lifecycle.aliases import (
    CHALLENGER,
    CHAMPION,
    GATE_DECISION,
    GATE_SCORE,
    REGISTRATION,
    REJECTED,
)
from ml.lifecycle.artifacts import ARTIFACT_ENCRYPTION, ARTIFACT_SHA256, ArtifactIntegrityError
from ml.lifecycle.model_card import ModelCard
from ml.lifecycle.promotion import GateOutcome, gate_pending_versions
from ml.lifecycle.pyfunc import INTENT_CLASSIFIER_ENTRY, pip_requirements
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registration import Candidate, register_candidate
from ml.lifecycle.registry import ModelVersion, Registry, TrainingRun
from ml.metrics import score_classification
from ml.requests.classifiers import BaselineClassifier, LabeledTexts
from ml.security.encryption import KEYS_VARIABLE, EncryptionError
from ml.settings import PROJECT_ROOT, REGISTRY_PAUSE_VARIABLE, environment_set
from serving.package import bentoml_environment
from tests.conftest import Baselines, classifier_rescorer, free_port, running_mlflow_server

"""The served model's name: `champion_bento` packages it."""
TEST_VERSION = "1"
METRIC = "test_f1_macro"
MARGIN = 0.01


def registry_in(home: Path) -> Registry:
    registry = Registry(
        f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", str(home / "mlflow" / "artifacts")
    )
    registry.ping()
    return registry


def register(
    registry: Registry,
    baselines: Baselines,
    model: BaselineClassifier,
    role: str,
    folder: Path,
    forged: dict[str, str] | None = None,
) -> ModelVersion:
    """Register `model` as the request models asset does; `forged` tags ride along as if its
    trainer had claimed them."""
    model.save(folder / "classifier")
    honest = score_classification(
        baselines.test.intents, model.predict_proba(baselines.test.texts), baselines.classes
    ).as_metrics("test")
    return registry.log_and_register(
        REQUEST_CLASSIFIER,
        TrainingRun(
            run_name=folder.name,
            params={"kind": "baseline"},
            metrics=honest,
            version_tags={
                "kind": "baseline",
                "role": role,
                "test_version": TEST_VERSION,
                **{key: f"{value:.6f}" for key, value in honest.items()},
                **(forged or {}),
            },
        ),
        INTENT_CLASSIFIER_ENTRY,
        {"classifier": str(folder / "classifier")},
        pd.DataFrame({"text": baselines.test.texts[:3]}),
        pip_requirements(),
        {"classes": list(baselines.classes), "kind": "baseline"},
    )


def gate(
    registry: Registry, test: LabeledTexts, calls: list[str] | None = None
) -> list[GateOutcome]:
    """The real gate, scoring on `test` as request_classifier_promotion does (digests verified)."""
    return gate_pending_versions(
        registry,
        REQUEST_CLASSIFIER,
        TEST_VERSION,
        METRIC,
        MARGIN,
        classifier_rescorer(registry, REQUEST_CLASSIFIER, test, calls),
    )


def decisions_per_version(registry: Registry) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in registry.audit(REQUEST_CLASSIFIER):
        if entry.action in ("promote", "challenger", "reject"):
            counts[entry.version] = counts.get(entry.version, 0) + 1
    return counts


def assert_alias_and_history_agree(registry: Registry) -> None:
    history = registry.champion_history(REQUEST_CLASSIFIER)
    champion = registry.champion(REQUEST_CLASSIFIER)
    assert champion is not None and history and history[-1] == champion.version, (
        f"champion {champion} but history {history}"
    )
    registry.reconcile(REQUEST_CLASSIFIER)  # raises RegistryDiverged when alias and record disagree


def test_a_weak_model_with_forged_test_scores_is_made_challenger_not_champion(
    baselines: Baselines, tmp_path: Path
) -> None:
    registry = registry_in(tmp_path / "home")
    champion = register(registry, baselines, baselines.strong, "baseline", tmp_path / "strong")
    assert [o.decision.alias for o in gate(registry, baselines.test)] == [CHAMPION]
    forged = {METRIC: "0.990000", "test_version": TEST_VERSION, GATE_SCORE: "0.99"}
    weak = register(registry, baselines, baselines.shuffled, "candidate", tmp_path / "weak", forged)
    # And again afterwards, straight through MLflow's own client, as anyone with write access can.
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    for key, value in {**forged, "test_accuracy": "0.99"}.items():
        client.set_model_version_tag(REQUEST_CLASSIFIER, weak.version, key, value)
    assert registry.version(REQUEST_CLASSIFIER, weak.version).metric(METRIC) == 0.99

    calls: list[str] = []
    (outcome,) = gate(registry, baselines.test, calls)
    assert outcome.version == weak.version
    assert outcome.decision.alias == CHALLENGER
    assert outcome.score < 0.3, "the gate scored the shuffled-label model itself"
    assert sorted(set(calls)) == sorted({champion.version, weak.version})
    assert len(calls) == 2, "each version is scored once per gate run"
    tags = registry.version(REQUEST_CLASSIFIER, weak.version).tags
    assert float(tags[GATE_SCORE]) == pytest.approx(outcome.score, abs=1e-6)
    assert "0.99" not in tags["gate_reason"]
    assert f"v{weak.version} {METRIC} {outcome.score:.4f}" in tags["gate_reason"]
    assert registry.champion(REQUEST_CLASSIFIER).version == champion.version
    assert registry.by_alias(REQUEST_CLASSIFIER, CHALLENGER).version == weak.version


def test_a_version_registered_around_the_registry_is_rejected_and_never_loaded(
    baselines: Baselines, tmp_path: Path
) -> None:
    registry = registry_in(tmp_path / "home")
    champion = register(registry, baselines, baselines.strong, "baseline", tmp_path / "strong")
    gate(registry, baselines.test)
    weak = register(registry, baselines, baselines.shuffled, "candidate", tmp_path / "weak")
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    gate(registry, baselines.test)  # the weak one is decided: the challenger
    # A version made straight through MlflowClient from the weak model's files, claiming a
    # perfect score and a complete registration, with no digest.
    source = client.get_model_version_download_uri(REQUEST_CLASSIFIER, weak.version)
    forged = client.create_model_version(REQUEST_CLASSIFIER, source, run_id=weak.run_id)
    for key, value in {
        REGISTRATION: "complete",
        "role": "candidate",
        "kind": "transformer",
        "test_version": TEST_VERSION,
        METRIC: "0.99",
    }.items():
        client.set_model_version_tag(REQUEST_CLASSIFIER, forged.version, key, value)

    with pytest.raises(
        ArtifactIntegrityError, match=f"v{forged.version} carries no {ARTIFACT_SHA256}"
    ):
        registry.load(REQUEST_CLASSIFIER, forged.version)
    (outcome,) = gate(registry, baselines.test)
    assert outcome.version == str(forged.version) and outcome.decision.alias == REJECTED
    tags = registry.version(REQUEST_CLASSIFIER, str(forged.version)).tags
    assert tags[GATE_DECISION] == REJECTED and ARTIFACT_SHA256 in tags["gate_reason"]
    assert (
        str(forged.version) not in registry.version(REQUEST_CLASSIFIER, str(forged.version)).aliases
    )
    assert registry.champion(REQUEST_CLASSIFIER).version == champion.version
    assert registry.by_alias(REQUEST_CLASSIFIER, CHALLENGER).version == weak.version


def strong_baseline_registered(baselines: Baselines, folder: Path) -> tuple[Path, Registry, str]:
    """A data home in `folder` whose registry holds the strong baseline, not yet gated: the
    home, its registry and the version."""
    home = folder / "home"
    registry = registry_in(home)
    version = register(registry, baselines, baselines.strong, "baseline", folder / "strong")
    return home, registry, version.version


def stored_file(registry: Registry, home: Path, name: str) -> Path:
    """The one stored copy of `name` under the data home's MLflow artifacts folder."""
    found = list((home / "mlflow" / "artifacts").rglob(name))
    assert len(found) == 1, found
    return found[0]


def test_a_changed_artifact_file_fails_loading_and_packaging_naming_model_version_and_file(
    baselines: Baselines, tmp_path: Path
) -> None:
    home, registry, version = strong_baseline_registered(baselines, tmp_path)
    gate(registry, baselines.test)
    manifest = json.loads(registry.version(REQUEST_CLASSIFIER, version).tags[ARTIFACT_SHA256])
    assert {"MLmodel", "artifacts/classifier/pipeline.skops"} <= set(manifest)
    assert (
        registry.load(REQUEST_CLASSIFIER, version).predict(pd.DataFrame({"text": ["hi"]})).shape[0]
        == 1
    )

    stored = stored_file(registry, home, "pipeline.skops")
    stored.write_bytes(stored.read_bytes() + b"\0")  # one byte appended, on disk, for real
    expected = (
        f"{REQUEST_CLASSIFIER} v{version}: file artifacts/classifier/pipeline.skops has sha256"
    )
    with pytest.raises(ArtifactIntegrityError, match=expected):
        registry.load(REQUEST_CLASSIFIER, version)

    result = materialize(
        [champion_bento],
        resources={
            "model_registry": ModelRegistry(
                tracking_uri=registry.tracking_uri, artifact_root=registry.artifact_root
            ),
            "bento_store": BentoStore(home=str(home / "bentoml")),
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = str(result.get_step_failure_events()[0].event_specific_data)
    assert expected in failure
    assert not (home / "bentoml" / "bentos").exists() or not any(
        (home / "bentoml" / "bentos").rglob("bento.yaml")
    ), "no Bento was built on the changed artifact"


def test_a_file_planted_beside_a_registered_artifact_is_refused(
    baselines: Baselines, tmp_path: Path
) -> None:
    home, registry, version = strong_baseline_registered(baselines, tmp_path)
    folder = stored_file(registry, home, "pipeline.skops").parent
    (folder / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactIntegrityError, match=r"artifacts/classifier/extra\.pkl"):
        registry.load(REQUEST_CLASSIFIER, version)


def test_an_artifact_changed_in_the_bentoml_store_is_neither_packaged_nor_served(
    baselines: Baselines, tmp_path: Path
) -> None:
    home, registry, version = strong_baseline_registered(baselines, tmp_path)
    store = BentoStore(home=str(home / "bentoml"))
    store.package(registry.tracking_uri, {REQUEST_CLASSIFIER: version})
    assert "intent" in served_by_bentoml(home / "bentoml", version)
    (imported,) = (home / "bentoml" / "models").rglob("pipeline.skops")
    imported.write_bytes(b"not the pipeline")
    expected = r"artifacts/classifier/pipeline\.skops has sha256"
    with pytest.raises(RuntimeError, match=expected):
        store.package(registry.tracking_uri, {REQUEST_CLASSIFIER: version})
    with pytest.raises(RuntimeError, match=expected):
        served_by_bentoml(home / "bentoml", version)


def test_a_registered_model_is_stored_and_packaged_as_ciphertext_and_still_loads_and_serves(
    baselines: Baselines, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    registry = registry_in(home)
    texts = baselines.test.texts
    version, _ = register_candidate(
        registry,
        Candidate(
            model_name=REQUEST_CLASSIFIER,
            kind="baseline",
            role="baseline",
            run_name="encrypted",
            card=ModelCard("baseline", "The strong baseline.", {}, {}, None, []),
            entry_point=INTENT_CLASSIFIER_ENTRY,
            artifacts={"classifier": baselines.strong.save},
            input_example=pd.DataFrame({"text": texts[:3]}),
            params={},
            metrics={},
            tagged_scores={},
            model_metadata={"classes": list(baselines.classes), "kind": "baseline"},
        ),
    )
    assert version.tags[ARTIFACT_ENCRYPTION] == "fernet"
    manifest = json.loads(version.tags[ARTIFACT_SHA256])
    weights = {path for path in manifest if path.startswith("artifacts/")}
    assert weights == {
        "artifacts/classifier/classifier.json.enc",
        "artifacts/classifier/pipeline.skops.enc",
    }

    classes = [name.encode() for name in baselines.classes]
    stored = [stored_file(registry, home, path.rsplit("/", 1)[1]) for path in sorted(weights)]
    assert not list((home / "mlflow" / "artifacts").rglob("pipeline.skops"))
    for path in stored:
        data = path.read_bytes()
        assert data.startswith(b"gAAAAA"), f"{path} is a Fernet token"
        assert not data.startswith(b"PK") and not any(name in data for name in classes), path

    expected = baselines.strong.predict(texts)
    answer = registry.load(REQUEST_CLASSIFIER, version.version).predict(
        pd.DataFrame({"text": texts})
    )
    assert answer["intent"].tolist() == expected
    with (
        environment_set(**{KEYS_VARIABLE: Fernet.generate_key().decode()}),
        pytest.raises(EncryptionError, match=r"artifacts/classifier/classifier\.json\.enc"),
    ):
        registry.load(REQUEST_CLASSIFIER, version.version)

    store = BentoStore(home=str(home / "bentoml"))
    store.package(registry.tracking_uri, {REQUEST_CLASSIFIER: version.version})
    packaged = [
        p for p in (home / "bentoml" / "models").rglob("*") if p.parent.name == "classifier"
    ]
    assert sorted(p.name for p in packaged) == ["classifier.json.enc", "pipeline.skops.enc"]
    served = json.loads(served_by_bentoml(home / "bentoml", version.version))
    assert served["intent"]["0"] == baselines.strong.predict(["card arrival"])[0]


SERVICE_LOAD = """
import sys
import bentoml
import pandas as pd
from serving.package import load_verified
model = load_verified(bentoml.models.BentoModel(sys.argv[1]))
print(model.predict(pd.DataFrame({"text": ["card arrival"]})).to_json())
"""


def served_by_bentoml(bentoml_home: Path, version: str) -> str:
    """What the service's verified load answers, in a process of its own (BENTOML_HOME)."""
    done = subprocess.run(
        [sys.executable, "-c", SERVICE_LOAD, f"{REQUEST_CLASSIFIER}:v{version}"],
        cwd=PROJECT_ROOT,
        env=bentoml_environment(bentoml_home),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout


def test_two_gates_and_a_rollback_racing_leave_one_decision_per_version_and_one_history(
    baselines: Baselines, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    registry = registry_in(home)
    register(registry, baselines, baselines.middling, "baseline", tmp_path / "first")
    gate(registry, baselines.test)
    register(registry, baselines, baselines.strong, "candidate", tmp_path / "second")
    gate(registry, baselines.test)
    assert len(registry.champion_history(REQUEST_CLASSIFIER)) == 2
    register(registry, baselines, baselines.shuffled, "candidate", tmp_path / "weak")
    register(registry, baselines, baselines.strong, "candidate", tmp_path / "strong-again")
    register(registry, baselines, baselines.middling, "baseline", tmp_path / "middling-again")

    start = threading.Barrier(3)
    outcomes: list[list[GateOutcome]] = [[], []]
    errors: list[BaseException] = []

    def run_gate(slot: int) -> None:
        try:
            own = registry_in(home)  # a registry (and MLflow client) of its own, as a process has
            start.wait()
            outcomes[slot] = gate(own, baselines.test)
        except BaseException as error:
            errors.append(error)

    def run_rollback() -> None:
        try:
            own = registry_in(home)
            start.wait()
            own.rollback(REQUEST_CLASSIFIER, "test: rollback racing the gates")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run_gate, args=(i,)) for i in (0, 1)]
    threads.append(threading.Thread(target=run_rollback))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors

    decided = [o.version for run in outcomes for o in run]
    assert sorted(decided, key=int) == ["3", "4", "5"], "each version decided by exactly one gate"
    assert decisions_per_version(registry) == {"1": 1, "2": 1, "3": 1, "4": 1, "5": 1}
    entries = registry.audit(REQUEST_CLASSIFIER)
    assert all(entry.outcome == "done" for entry in entries)
    assert [e.action for e in entries].count("rollback") == 1
    for version in registry.versions(REQUEST_CLASSIFIER):
        assert GATE_DECISION in version.tags
    assert_alias_and_history_agree(registry)


CRASHING_GATE = """
import sys
from pathlib import Path
from tests.integration.test_registry_trust import gate_in_subprocess
gate_in_subprocess(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
"""


def gate_in_subprocess(tracking_uri: str, artifact_root: str, test_file: Path) -> None:
    """What the crashing process runs: the real gate over the frozen test read from a file."""
    frame = pd.read_csv(test_file)
    test = LabeledTexts(frame["text"].tolist(), frame["intent"].tolist())
    gate(Registry(tracking_uri, artifact_root), test)


def champion_then_candidate(
    registry: Registry, baselines: Baselines, folder: Path
) -> tuple[str, str]:
    """The middling baseline gated to champion, then the strong candidate registered: the next
    gate promotes it. Returns both versions."""
    first = register(registry, baselines, baselines.middling, "baseline", folder / "first")
    gate(registry, baselines.test)
    second = register(registry, baselines, baselines.strong, "candidate", folder / "second")
    return first.version, second.version


def gate_paused_after_alias_move(
    tracking_uri: str, artifact_root: str, baselines: Baselines, folder: Path, **env: str
) -> tuple[subprocess.Popen, Path]:
    """The real gate in a process of its own, returned once the registry has paused it right
    after an alias move, before the audit outcome; with the marker file that holds it there."""
    test_file = folder / "test.csv"
    pd.DataFrame({"text": baselines.test.texts, "intent": baselines.test.intents}).to_csv(
        test_file, index=False
    )
    marker = folder / "paused-after-alias-move"
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_GATE, tracking_uri, artifact_root, str(test_file)],
        cwd=PROJECT_ROOT,
        env={**os.environ, REGISTRY_PAUSE_VARIABLE: str(marker), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        process.kill()
    assert marker.exists(), process.communicate(timeout=30)[0].decode()[-3000:]
    return process, marker


def assert_the_next_gate_repairs_the_crash(
    registry: Registry, baselines: Baselines, first: str, second: str
) -> None:
    """The alias moved and the history follows it, the audit entry open; the next gate repairs
    it before anything else and finds nothing left to decide."""
    assert registry.champion(REQUEST_CLASSIFIER).version == second
    last = registry.audit(REQUEST_CLASSIFIER)[-1]
    assert (last.action, last.version, last.outcome) == ("promote", second, None)
    assert registry.champion_history(REQUEST_CLASSIFIER) == [first, second], (
        "history follows the alias"
    )

    # Nothing left to decide: the crash is repaired first.
    assert gate(registry, baselines.test) == []
    last = registry.audit(REQUEST_CLASSIFIER)[-1]
    assert (last.action, last.version, last.outcome) == ("promote", second, "repaired")
    assert decisions_per_version(registry) == {first: 1, second: 1}
    assert_alias_and_history_agree(registry)


def test_a_gate_killed_between_the_alias_move_and_its_audit_outcome_is_repaired_next_run(
    baselines: Baselines, tmp_path: Path
) -> None:
    registry = registry_in(tmp_path / "home")
    first, second = champion_then_candidate(registry, baselines, tmp_path)
    process, _ = gate_paused_after_alias_move(
        registry.tracking_uri, registry.artifact_root, baselines, tmp_path
    )
    process.send_signal(signal.SIGKILL)  # the gate dies after the move, before the outcome
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert_the_next_gate_repairs_the_crash(registry, baselines, first, second)
    assert registry.version(REQUEST_CLASSIFIER, second).tags[GATE_DECISION] == CHAMPION
    assert registry.rollback(REQUEST_CLASSIFIER, "test: after the repair") == (second, first)
    assert_alias_and_history_agree(registry)


def test_an_alias_moved_around_the_gate_stops_the_next_move(
    baselines: Baselines, tmp_path: Path
) -> None:
    registry = registry_in(tmp_path / "home")
    first = register(registry, baselines, baselines.strong, "baseline", tmp_path / "first").version
    gate(registry, baselines.test)
    weak = register(registry, baselines, baselines.shuffled, "candidate", tmp_path / "weak").version
    MlflowClient(registry.tracking_uri, registry.tracking_uri).set_registered_model_alias(
        REQUEST_CLASSIFIER, CHAMPION, weak
    )
    with pytest.raises(Exception, match=rf"alias champion points at {weak}.*says {first}"):
        gate(registry, baselines.test)
    assert GATE_DECISION not in registry.version(REQUEST_CLASSIFIER, weak).tags


def test_an_mlflow_server_killed_between_the_alias_move_and_its_audit_outcome_is_repaired(
    baselines: Baselines, tmp_path: Path
) -> None:
    folder, port = tmp_path / "server", free_port()
    folder.mkdir()
    backend = f"sqlite:///{folder / 'mlflow.db'}"  # on disk: the server restarts on its state
    url = f"http://127.0.0.1:{port}"
    with running_mlflow_server(backend, folder, port) as server:
        registry = Registry(url)
        first, second = champion_then_candidate(registry, baselines, tmp_path)
        process, marker = gate_paused_after_alias_move(
            url,
            "",
            baselines,
            tmp_path,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
            MLFLOW_HTTP_REQUEST_TIMEOUT="5",
        )
        os.killpg(server.pid, signal.SIGKILL)  # MLflow dies after the move, before the outcome
        server.wait(timeout=30)
        marker.unlink()  # the gate goes on, and cannot write its outcome
        printed = process.communicate(timeout=120)[0].decode()
    assert process.returncode not in (0, -signal.SIGKILL), printed[-2000:]

    with running_mlflow_server(backend, folder, port):
        assert_the_next_gate_repairs_the_crash(Registry(url), baselines, first, second)
