"""The one MLflow wrapper: log a training run, register its model as a version, move the
`champion` / `challenger` aliases for the promotion gate and the rollback, load a champion.
Assets, serving and CLIs all go through it.

A version is complete only once tagged `registration=complete`; anything that fails after the
version exists tags it `registration=failed`, and no alias ever points at such a version.

Trust. Every version carries `artifact_sha256`: the sha256 of each file of its logged model folder,
hashed from the files downloaded back from the artifact store right after registration (what was
really stored, not what was meant to be). `download` and `load` verify it before anything in the
folder is read, so a changed, missing or planted file fails naming the model, version and file.

Alias moves (serialized, compare-and-set, audited, repaired after a crash) are `AliasMoves`
(ml/lifecycle/aliases.py), mixed into `Registry`; digests are ml/lifecycle/artifacts.py.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import threading
import urllib.error
import urllib.parse
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

from ml.lifecycle.aliases import (
    CHAMPION,
    GATE_DECISION,
    REGISTRATION,
    AliasMoves,
    RegistrationFailed,
)
from ml.lifecycle.artifacts import (
    ARTIFACT_SHA256,
    ArtifactIntegrityError,
    artifact_manifest,
    verify_artifact,
)
from ml.settings import PROJECT_ROOT

URI_VARIABLES = (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI)
"""Exported by mlflow.set_*_uri; `Registry._active` puts them back as they were."""
QUIET_CLIENT = {
    MLFLOW_HTTP_REQUEST_MAX_RETRIES: "2",
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR: "false",
    MLFLOW_DISABLE_TELEMETRY: "true",
    MLFLOW_HTTP_REQUEST_TIMEOUT: "60",
}
"""Client settings unless the environment says otherwise: fail fast, no progress bars."""


_FLUENT_URIS = threading.RLock()
"""Held while MLflow's process-wide tracking and registry URIs are set for one registry."""


@dataclass(frozen=True)
class RunRecord:
    """What a version's training run recorded: when it started, its metrics and parameters."""

    started_at: datetime
    metrics: Mapping[str, float]
    params: Mapping[str, str]


class RegistryUnavailable(RuntimeError):
    """The tracking server cannot be reached: nothing was logged."""


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


@dataclass(frozen=True)
class Trial:
    """One setting a search tried (on validation): a child run of the training run."""

    name: str
    params: Mapping[str, object]
    metrics: Mapping[str, float]


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
    trials: Sequence[Trial] = ()
    """The search that chose the run's settings: one child run each."""


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


def refuse_credentials_in(tracking_uri: str) -> None:
    """A password inside the tracking URI would travel into logs, run metadata and `ps`:
    credentials come from the environment only."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.password is not None or (parts.username and parts.scheme.startswith("http")):
        raise ValueError(
            f"the MLflow tracking URI {parts.scheme}://…@{parts.hostname} carries credentials: "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead (for a database "
            "URI, PGPASSWORD or ~/.pgpass)"
        )


class Registry(AliasMoves):
    """MLflow at `tracking_uri` (SQLite file or `http://` server); `artifact_root` is where a
    file-backed store puts artifacts (a server keeps its own)."""

    def __init__(self, tracking_uri: str, artifact_root: str = "", lock_dir: str = ""):
        refuse_credentials_in(tracking_uri)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._lock_dir = lock_dir
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

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
        root = self.artifact_root
        if root and "://" not in root:  # a folder; an s3:// (or other) URI is used as it is
            root = Path(root).resolve().as_uri()
        location = f"{root.rstrip('/')}/{name}" if (root and not self.is_server) else None
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
                    for trial in run.trials:
                        with mlflow.start_run(
                            experiment_id=experiment, run_name=trial.name, nested=True
                        ):
                            mlflow.set_tag("trial_of", run.run_name)
                            mlflow.log_params({k: str(v)[:500] for k, v in trial.params.items()})
                            mlflow.log_metrics(dict(trial.metrics))
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

    def run_record(self, version: ModelVersion) -> RunRecord:
        run = self.client.get_run(version.run_id)
        return RunRecord(
            datetime.fromtimestamp(run.info.start_time / 1000, UTC),
            dict(run.data.metrics),
            dict(run.data.params),
        )

    def add_to_report(
        self, version: ModelVersion, files: Mapping[str, str | bytes], card_section: str
    ) -> None:
        """Write `files` into the version's `report/` and put `card_section` (a markdown section
        starting with its `## ` title) into its model card, replacing an earlier section of the
        same title: priced again, a card says the latest figures once."""
        title = card_section.splitlines()[0]
        with tempfile.TemporaryDirectory(prefix="report-") as folder:
            report = Path(folder) / "report"
            report.mkdir()
            for name, content in files.items():
                path = report / name
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content, encoding="utf-8")
            with self._active():
                card = Path(
                    mlflow.artifacts.download_artifacts(
                        run_id=version.run_id, artifact_path="report/model_card.md", dst_path=folder
                    )
                ).read_text(encoding="utf-8")
            kept = card.split(f"\n{title}\n")[0].rstrip("\n")
            after = card.split(f"\n{title}\n", 1)[1] if f"\n{title}\n" in card else ""
            rest = after[after.find("\n## ") :] if "\n## " in after else ""
            (report / "model_card.md").write_text(
                f"{kept}\n\n{card_section.rstrip()}\n{rest}", encoding="utf-8"
            )
            for path in sorted(report.iterdir()):
                self.client.log_artifact(version.run_id, str(path), "report")
