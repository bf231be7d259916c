"""The one MLflow wrapper: log a training run, register its model as a version, move the
`champion` / `challenger` aliases for the promotion gate and the rollback, load a champion.
Assets, serving and CLIs all go through it.

A version is complete only once tagged `registration=complete`; anything that fails after the
version exists tags it `registration=failed`, and no alias ever points at such a version.

Trust. Every version carries `artifact_sha256`: the sha256 of each file of its logged model folder,
hashed from the files downloaded back from the artifact store right after registration (what was
really stored, not what was meant to be). `download` and `load` verify it before anything in the
folder is read, so a changed, missing or planted file fails naming the model, version and file.

Alias moves are serialized by a lock (an OS file lock beside the SQLite registry; see
`Registry.lock_dir` for a server) and checked against the alias they were decided on
(compare-and-set). MLflow keeps no alias history, so each move is an append-only audit entry on
the registered model (`alias_audit/<n>`: who, when, from, to, why) written *before* the move and
closed by an outcome record after it; a crash in between is repaired by the next gate or rollback.
The champion history is read from that audit record, so it cannot disagree with the alias.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.environment_variables import (
    MLFLOW_DISABLE_TELEMETRY,
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
    MLFLOW_REGISTRY_URI,
    MLFLOW_TRACKING_URI,
)
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature

from ml.settings import PROJECT_ROOT, registry_pause_marker

CHAMPION = "champion"
CHALLENGER = "challenger"
REJECTED = "rejected"
"""A gate decision that moves no alias: the version's artifact failed verification."""
REGISTRATION = "registration"
GATE_DECISION = "gate_decision"
GATE_REASON = "gate_reason"
GATE_SCORE = "gate_score"
"""The score the gate computed itself, on `gate_test_version`: the one it decided on."""
GATE_TEST_VERSION = "gate_test_version"
ARTIFACT_SHA256 = "artifact_sha256"
"""Version tag: JSON {path in the logged model folder: sha256 of the file as stored}."""
DOWNLOAD_MARKERS = frozenset({"registered_model_meta"})
"""Written by MLflow into a `models:/` download folder; never part of the stored artifact."""
AUDIT_PREFIX = "alias_audit/"
"""Registered-model tags `alias_audit/000001` (the intent) and `…/outcome` (how it ended)."""
AUDIT_WHY_MAX_CHARS = 2000
"""A registered-model tag holds 5000 characters on a PostgreSQL backend."""
ALIAS_LOCK_WAIT_SECONDS = 120.0
"""For crash tests: a file path; after moving an alias, before writing the audit outcome, the
registry writes this file and waits (up to 5 minutes) until it is removed or the process killed."""
URI_VARIABLES = (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI)
QUIET_CLIENT = {
    MLFLOW_HTTP_REQUEST_MAX_RETRIES: "2",
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR: "false",
    MLFLOW_DISABLE_TELEMETRY: "true",
    MLFLOW_HTTP_REQUEST_TIMEOUT: "60",
}
"""Client settings unless the environment says otherwise: fail fast, no progress bars."""
"""Exported by mlflow.set_*_uri; `Registry._active` puts them back as they were."""


_FLUENT_URIS = threading.RLock()
"""Held while MLflow's process-wide tracking and registry URIs are set for one registry."""


class RegistryUnavailable(RuntimeError):
    """The tracking server cannot be reached: nothing was logged."""


class RegistrationFailed(RuntimeError):
    """Logging or registering failed part-way; the version (if any) is tagged failed."""


class ArtifactIntegrityError(RuntimeError):
    """A version's stored files do not match the sha256 digests recorded at registration."""


class AliasMoved(RuntimeError):
    """Compare-and-set failed: the champion moved after the decision was computed."""


class AlreadyDecided(RuntimeError):
    """Another gate run decided this version first: one decision per version."""


class RegistryDiverged(RuntimeError):
    """An alias points where the audit record says it should not: moved outside the gate and
    the rollback. Nothing is moved until a person sets it right."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str
    tags: Mapping[str, str]
    aliases: tuple[str, ...] = ()

    def metric(self, key: str) -> float | None:
        value = self.tags.get(key)
        return float(value) if value not in (None, "") else None


@dataclass
class TrainingRun:
    """What one training run records: the reviewer's view of how a version came to be."""

    run_name: str
    params: Mapping[str, object]
    metrics: Mapping[str, float]
    epoch_metrics: Sequence[Mapping[str, float]] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    version_tags: Mapping[str, str] = field(default_factory=dict)
    """Copied onto the registered version (kind, test version, test score…)."""
    report_dir: Path | None = None
    """Files logged under `report/`: confusion matrix, per-class report, model card."""


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_manifest(folder: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of every file of a model folder."""
    files = (path for path in sorted(folder.rglob("*")) if path.is_file())
    manifest = {path.relative_to(folder).as_posix(): sha256_of(path) for path in files}
    return {path: digest for path, digest in manifest.items() if path not in DOWNLOAD_MARKERS}


def verify_artifact(folder: Path, manifest: Mapping[str, str], what: str) -> None:
    """Every recorded file present with its recorded sha256, and no file besides them (a
    planted pickle is as bad as a changed one); `what` names the model and version."""
    found = artifact_manifest(folder)
    for path, expected in manifest.items():
        if path not in found:
            raise ArtifactIntegrityError(f"{what}: file {path} is missing from the artifact")
        if found[path] != expected:
            raise ArtifactIntegrityError(
                f"{what}: file {path} has sha256 {found[path]}, but {expected} was recorded at "
                "registration: the stored artifact was changed"
            )
    extra = sorted(set(found) - set(manifest))
    if extra:
        raise ArtifactIntegrityError(
            f"{what}: file(s) {', '.join(extra[:5])} were not part of the registered artifact"
        )


def default_actor() -> str:
    """Who moves an alias: the OS user, host and process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class AuditEntry:
    """One alias move (or a decision that moves none), as intended before it was made."""

    id: int
    action: str
    """promote, challenger, reject, rollback, or adopt (aliases found before any record)."""
    version: str
    moves: Mapping[str, tuple[str | None, str | None]]
    """alias → (from, to); None: the alias is absent."""
    version_tags: Mapping[str, Mapping[str, str]]
    """version → tags written with the move (the gate's decision, the rollback's reason)."""
    why: str
    who: str
    via: str
    when: str
    outcome: str | None = None
    """None while pending; done, or repaired (completed by a later run after a crash)."""

    def to_json(self) -> str:
        record = {
            "action": self.action,
            "version": self.version,
            "moves": {alias: list(move) for alias, move in self.moves.items()},
            "version_tags": self.version_tags,
            "why": self.why[:AUDIT_WHY_MAX_CHARS],
            "who": self.who,
            "via": self.via,
            "when": self.when,
        }
        return json.dumps(record)

    @classmethod
    def from_json(cls, number: int, text: str, outcome: str | None) -> AuditEntry:
        record = json.loads(text)
        moves = {alias: (move[0], move[1]) for alias, move in record["moves"].items()}
        return cls(
            number,
            record["action"],
            record["version"],
            moves,
            record["version_tags"],
            record["why"],
            record["who"],
            record["via"],
            record["when"],
            outcome,
        )


class Registry:
    """MLflow at `tracking_uri` (SQLite file or `http://` server); `artifact_root` is where a
    file-backed store puts artifacts (a server keeps its own)."""

    def __init__(self, tracking_uri: str, artifact_root: str = "", lock_dir: str = ""):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._lock_dir = lock_dir
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @property
    def lock_dir(self) -> Path:
        """Where the alias lock file lives: beside the SQLite registry (under the data home), so
        every process of the embedded default shares it. For a server, a folder per server URL
        on this machine: it serializes the gates and rollbacks of one host; a deployment whose
        runs move aliases from several hosts passes a `lock_dir` on a shared volume (or puts a
        PostgreSQL advisory lock here); Dagster's registry pool serializes its own runs."""
        if self._lock_dir:
            return Path(self._lock_dir)
        if self.tracking_uri.startswith("sqlite:///"):
            return Path(self.tracking_uri.removeprefix("sqlite:///")).parent
        key = hashlib.sha256(self.tracking_uri.encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / "mlops-registry-locks" / key

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def ping(self) -> None:
        """Fail fast and clearly when the server is down (MLflow itself retries for minutes)."""
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        if not self.is_server:
            return
        try:
            with urllib.request.urlopen(f"{self.tracking_uri.rstrip('/')}/health", timeout=5):
                pass
        except (urllib.error.URLError, OSError) as error:
            raise RegistryUnavailable(
                f"MLflow tracking server at {self.tracking_uri} is not reachable ({error}); "
                "nothing was logged or registered"
            ) from error

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """MLflow's fluent API (runs, log_model) reads process-wide URIs: set them for the call,
        one call at a time per process (threads interleaving set/restore would leak a URI)."""
        with _FLUENT_URIS:
            for variable, value in QUIET_CLIENT.items():
                if not variable.defined:
                    variable.set(value)
            # Restore what was *set*, not what get_*_uri() resolves to: setting the resolved
            # default back would pin it process-wide and export it as MLFLOW_TRACKING_URI /
            # REGISTRY_URI (then Settings.from_env and every later MlflowClient would use
            # ./mlflow.db). set_tracking_uri mirrors the URI it is given in its variable, so the
            # variables say what was set; None unsets.
            previous = {variable: variable.get_raw() for variable in URI_VARIABLES}
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(previous[MLFLOW_TRACKING_URI])
                mlflow.set_registry_uri(previous[MLFLOW_REGISTRY_URI])
                for variable, value in previous.items():
                    if value is None:
                        variable.unset()
                    else:
                        variable.set(value)

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (
            f"{Path(self.artifact_root).resolve().as_uri()}/{name}"
            if (self.artifact_root and not self.is_server)
            else None
        )
        return self.client.create_experiment(name, artifact_location=location)

    def log_and_register(
        self,
        model_name: str,
        run: TrainingRun,
        python_model: Path,
        model_artifacts: Mapping[str, str],
        input_example: object,
        pip_requirements: Sequence[str],
        model_metadata: Mapping[str, object] | None = None,
        signature: ModelSignature | None = None,
    ) -> ModelVersion:
        """Log `run` with its pyfunc model (the signature is inferred from the input example
        unless given) and register it as a new version of `model_name`. No alias moves here."""
        self.ping()
        with self._active():
            experiment = self._experiment_id(model_name)
            with mlflow.start_run(experiment_id=experiment, run_name=run.run_name) as active:
                run_id = active.info.run_id
                try:
                    mlflow.set_tags({**run.tags, "mlflow.source.git.commit": git_commit()})
                    mlflow.log_params({key: str(value)[:500] for key, value in run.params.items()})
                    for step, metrics in enumerate(run.epoch_metrics, start=1):
                        mlflow.log_metrics(dict(metrics), step=step)
                    mlflow.log_metrics(dict(run.metrics))
                    if run.report_dir is not None:
                        mlflow.log_artifacts(str(run.report_dir), "report")
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=str(python_model),
                        artifacts=dict(model_artifacts),
                        input_example=input_example,
                        pip_requirements=list(pip_requirements),
                        metadata=dict(model_metadata or {}),
                        signature=signature,
                    )
                except MlflowException as error:
                    raise RegistrationFailed(
                        f"logging run {run_id} of {model_name} failed: {error}"
                    ) from error
            return self._register(model_name, info.model_uri, run_id, run)

    def _register(self, name: str, model_uri: str, run_id: str, run: TrainingRun) -> ModelVersion:
        try:
            with contextlib.suppress(MlflowException):
                self.client.create_registered_model(name)
            created = mlflow.register_model(model_uri, name)
            for key, value in {**run.version_tags, "run_id": run_id}.items():
                self.client.set_model_version_tag(name, created.version, key, str(value))
            manifest = self._stored_manifest(name, created.version)
            self.client.set_model_version_tag(
                name, created.version, ARTIFACT_SHA256, json.dumps(manifest, sort_keys=True)
            )
            self.client.set_model_version_tag(name, created.version, REGISTRATION, "complete")
        except Exception as error:
            for version in self.client.search_model_versions(f"name='{name}'"):
                if version.run_id == run_id:
                    with contextlib.suppress(MlflowException):
                        self.client.set_model_version_tag(
                            name, version.version, REGISTRATION, "failed"
                        )
            raise RegistrationFailed(
                f"registering run {run_id} as a version of {name} failed: {error}"
            ) from error
        return self.version(name, created.version)

    def _stored_manifest(self, name: str, version: str) -> dict[str, str]:
        """The digests of the files as the artifact store holds them: downloaded back, hashed."""
        with tempfile.TemporaryDirectory(prefix="registered-") as folder:
            local = mlflow.artifacts.download_artifacts(
                f"models:/{name}/{version}", dst_path=folder
            )
            manifest = artifact_manifest(Path(local))
        if "MLmodel" not in manifest:
            raise RegistrationFailed(f"{name} v{version}: the stored artifact holds no MLmodel")
        return manifest

    # --- reading ------------------------------------------------------------------------

    def version(self, name: str, version: str) -> ModelVersion:
        found = self.client.get_model_version(name, version)
        return ModelVersion(
            name, str(found.version), found.run_id, dict(found.tags), tuple(found.aliases or ())
        )

    def versions(self, name: str) -> list[ModelVersion]:
        """Every complete version, oldest first."""
        if not self._model_exists(name):
            return []
        found = [
            self.version(name, version.version)
            for version in self.client.search_model_versions(f"name='{name}'")
        ]
        complete = [v for v in found if v.tags.get(REGISTRATION) == "complete"]
        return sorted(complete, key=lambda v: int(v.version))

    def _model_exists(self, name: str) -> bool:
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    def by_alias(self, name: str, alias: str) -> ModelVersion | None:
        if not self._model_exists(name):
            return None
        try:
            found = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
        return self.version(name, found.version)

    def champion(self, name: str) -> ModelVersion | None:
        return self.by_alias(name, CHAMPION)

    def awaiting_gate(self, name: str) -> list[ModelVersion]:
        """Complete versions the promotion gate has not decided on, oldest first."""
        return [v for v in self.versions(name) if GATE_DECISION not in v.tags]

    def manifest(self, name: str, version: str) -> dict[str, str]:
        """The sha256 per file recorded at registration; a version without one is refused."""
        text = self.version(name, version).tags.get(ARTIFACT_SHA256)
        if not text:
            raise ArtifactIntegrityError(
                f"{name} v{version} carries no {ARTIFACT_SHA256} digest (not registered through "
                "the platform's registry): its files cannot be verified, so they are not loaded"
            )
        return json.loads(text)

    def load(self, name: str, version: str) -> mlflow.pyfunc.PyFuncModel:
        """The version's pyfunc, loaded from a copy whose digests were verified first."""
        with tempfile.TemporaryDirectory(prefix="verified-") as folder:
            local = self.download(name, version, Path(folder))
            with self._active():
                return mlflow.pyfunc.load_model(str(local))

    def download(self, name: str, version: str, destination: Path) -> Path:
        """The version's MLflow model folder, copied to `destination` and verified against its
        recorded digests (for packaging, and for `load`)."""
        manifest = self.manifest(name, version)
        with self._active():
            local = Path(
                mlflow.artifacts.download_artifacts(
                    f"models:/{name}/{version}", dst_path=str(destination)
                )
            )
        verify_artifact(local, manifest, f"{name} v{version}")
        return local

    # --- the audit record of alias moves ------------------------------------------------

    def audit(self, name: str) -> list[AuditEntry]:
        """Every alias move of `name`, oldest first, with its outcome (None: pending)."""
        if not self._model_exists(name):
            return []
        tags = self.client.get_registered_model(name).tags
        entries = []
        for key, text in tags.items():
            rest = key.removeprefix(AUDIT_PREFIX)
            if rest == key or not rest.isdigit():
                continue
            outcome = tags.get(f"{key}/outcome")
            done = json.loads(outcome)["outcome"] if outcome else None
            entries.append(AuditEntry.from_json(int(rest), text, done))
        return sorted(entries, key=lambda entry: entry.id)

    def _aliases(self, name: str) -> dict[str, str]:
        if not self._model_exists(name):
            return {}
        found = self.client.get_registered_model(name).aliases or {}
        return {alias: str(version) for alias, version in dict(found).items()}

    @staticmethod
    def _applied(entry: AuditEntry, aliases: Mapping[str, str]) -> bool:
        """Done, or pending but its moves already made (a crash before the outcome)."""
        if entry.outcome is not None:
            return True
        return bool(entry.moves) and all(
            aliases.get(alias) == to for alias, (_, to) in entry.moves.items()
        )

    def champion_history(self, name: str) -> list[str]:
        """The versions that held `champion`, oldest first, from the audit record (a rollback
        pops the last one)."""
        aliases = self._aliases(name)
        history: list[str] = []
        for entry in self.audit(name):
            if CHAMPION not in entry.moves or not self._applied(entry, aliases):
                continue
            if entry.action == "rollback":
                del history[-1:]
            elif (to := entry.moves[CHAMPION][1]) is not None and history[-1:] != [to]:
                history.append(to)
        return history

    @contextlib.contextmanager
    def _alias_lock(self, name: str) -> Iterator[None]:
        """One alias-moving operation at a time per registered model, across processes."""
        path = self.lock_dir / f"{name}.aliases.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            deadline = time.monotonic() + ALIAS_LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{name}: another promotion gate or rollback held {path} for more "
                            f"than {ALIAS_LOCK_WAIT_SECONDS:.0f} s"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _move(self, name: str, alias: str, to: str | None) -> None:
        if to is None:
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, to)

    def _close(self, name: str, entry_id: int, outcome: str) -> None:
        self.client.set_registered_model_tag(
            name,
            f"{AUDIT_PREFIX}{entry_id:06d}/outcome",
            json.dumps({"outcome": outcome, "when": _now()}),
        )

    def _commit(
        self,
        name: str,
        action: str,
        version: str,
        moves: Mapping[str, tuple[str | None, str | None]],
        version_tags: Mapping[str, Mapping[str, str]],
        why: str,
        via: str,
    ) -> AuditEntry:
        """Intent first, then the tags and the moves, then the outcome (under the lock)."""
        entries = self.audit(name)
        entry = AuditEntry(
            (entries[-1].id + 1) if entries else 1,
            action,
            version,
            dict(moves),
            {v: dict(tags) for v, tags in version_tags.items()},
            why,
            default_actor(),
            via,
            _now(),
        )
        self.client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{entry.id:06d}", entry.to_json())
        self._apply(name, entry)
        if entry.moves and (marker := registry_pause_marker()):
            marker.write_text(json.dumps({"entry": entry.id, "pid": os.getpid()}))
            deadline = time.monotonic() + 300
            while Path(marker).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._close(name, entry.id, "done")
        return entry

    def _apply(self, name: str, entry: AuditEntry) -> None:
        for version, tags in entry.version_tags.items():
            for key, value in tags.items():
                self.client.set_model_version_tag(name, version, key, value)
        for alias, (_, to) in entry.moves.items():
            self._move(name, alias, to)

    def _reconcile(self, name: str) -> list[AuditEntry]:
        """Finish what a crashed gate or rollback began (its intent is recorded: redo the tags
        and the moves still at their `from`), then check every alias against the record."""
        repaired = []
        aliases = self._aliases(name)
        for entry in self.audit(name):
            if entry.outcome is not None:
                continue
            for alias, (before, to) in entry.moves.items():
                if aliases.get(alias) not in (before, to):
                    raise RegistryDiverged(
                        f"{name}: audit entry {entry.id} ({entry.action} v{entry.version}) moves "
                        f"{alias} from {before} to {to}, but it points at {aliases.get(alias)}"
                    )
            self._apply(name, entry)
            self._close(name, entry.id, "repaired")
            repaired.append(entry)
            aliases = self._aliases(name)
        entries = self.audit(name)
        if not entries and aliases:
            moves = {alias: (None, version) for alias, version in sorted(aliases.items())}
            self._commit(name, "adopt", "", moves, {}, "aliases set before the audit record", "")
            return repaired
        expected: dict[str, str | None] = {}
        for entry in entries:
            for alias, (_, to) in entry.moves.items():
                expected[alias] = to
        for alias, version in expected.items():
            if aliases.get(alias) != version:
                raise RegistryDiverged(
                    f"{name}: alias {alias} points at {aliases.get(alias)}, but the audit record "
                    f"(last entry {entries[-1].id}) says {version}: it was moved outside the "
                    "promotion gate and the rollback; set it back before the next move"
                )
        return repaired

    def reconcile(self, name: str) -> list[AuditEntry]:
        """Repair what a crash between an alias move and its audit outcome left; the entries
        repaired. Every gate and rollback does this first."""
        if not self._model_exists(name):
            return []
        with self._alias_lock(name):
            return self._reconcile(name)

    # --- moving aliases (the gate and the rollback only) --------------------------------

    def record_decision(
        self,
        name: str,
        version: str,
        decision: str,
        reason: str,
        score: float | None,
        test_version: str,
        expected_champion: str | None,
        via: str = "",
    ) -> AuditEntry:
        """Record the gate's `decision` (champion, challenger or rejected) with its own score
        and reason on the version and move the aliases, all as one audited operation. Refused
        (AliasMoved) when `champion` is no longer `expected_champion`, the version it was
        decided against; AlreadyDecided when another gate run decided the version first."""
        if decision not in (CHAMPION, CHALLENGER, REJECTED):
            raise ValueError(f"decision must be {CHAMPION}, {CHALLENGER} or {REJECTED}")
        with self._alias_lock(name):
            self._reconcile(name)
            current = self.version(name, version)
            if current.tags.get(REGISTRATION) != "complete":
                raise RegistrationFailed(f"{name} v{version} is not a complete registration")
            if GATE_DECISION in current.tags:
                raise AlreadyDecided(
                    f"{name} v{version} was already decided: {current.tags[GATE_DECISION]}"
                )
            aliases = self._aliases(name)
            if aliases.get(CHAMPION) != expected_champion:
                raise AliasMoved(
                    f"{name}: champion is v{aliases.get(CHAMPION)}, not v{expected_champion} "
                    f"as when v{version} was decided"
                )
            moves: dict[str, tuple[str | None, str | None]] = {}
            if decision == CHAMPION:
                moves[CHAMPION] = (expected_champion, version)
                if aliases.get(CHALLENGER) == version:
                    moves[CHALLENGER] = (version, None)
            elif decision == CHALLENGER:
                moves[CHALLENGER] = (aliases.get(CHALLENGER), version)
            tags = {
                GATE_DECISION: decision,
                GATE_REASON: reason[:AUDIT_WHY_MAX_CHARS],
                GATE_SCORE: "" if score is None else f"{score:.6f}",
                GATE_TEST_VERSION: test_version,
                "gate_decided_at": _now(),
            }
            action = {CHAMPION: "promote", CHALLENGER: "challenger", REJECTED: "reject"}
            return self._commit(
                name, action[decision], version, moves, {version: tags}, reason, via
            )

    def rollback(self, name: str, reason: str, via: str = "") -> tuple[str, str]:
        """Move `champion` back to the version that held it before; (from, to)."""
        with self._alias_lock(name):
            if self._model_exists(name):
                self._reconcile(name)
            history = self.champion_history(name)
            champion = self.champion(name)
            if champion is None or len(history) < 2:
                raise ValueError(f"{name} has no earlier champion to roll back to")
            rolled_back, restored = history[-1], history[-2]
            tags = {"rolled_back_at": _now(), "rollback_reason": reason}
            self._commit(
                name,
                "rollback",
                rolled_back,
                {CHAMPION: (champion.version, restored)},
                {rolled_back: tags},
                reason,
                via,
            )
            return rolled_back, restored
