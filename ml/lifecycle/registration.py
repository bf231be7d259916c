"""Registering a trained model, the same for every domain: its model card and report files, its
saved artifacts, the training run and the version's tags, in one call (no alias moves here:
those are the promotion gate's). When the deployment has keys (`MLOPS_ENCRYPTION_KEYS`), the
saved artifacts are encrypted before they are logged: the artifact store and every Bento built
from it hold only ciphertext of the models' weights and pickles."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from mlflow.models import ModelSignature

from ml.lifecycle.artifacts import ARTIFACT_ENCRYPTION
from ml.lifecycle.model_card import ModelCard
from ml.lifecycle.pyfunc import pip_requirements
from ml.lifecycle.registry import ModelVersion, Registry, TrainingRun, Trial
from ml.security.encryption import at_rest_cipher, encrypt_folder


@dataclass(frozen=True)
class Candidate:
    """One trained model as a domain hands it over to become a version of `model_name`."""

    model_name: str
    kind: str
    """What the model is (`baseline`, `transformer`, `theta`, …): a run and version tag."""
    role: str
    """Why it is registered (`baseline`, `candidate`, `selected`): a run and version tag."""
    run_name: str
    card: ModelCard
    entry_point: Path
    """The models-from-code file that defines the version's pyfunc class."""
    artifacts: Mapping[str, Callable[[Path], None]]
    """The pyfunc's artifacts: name → what writes its files into a folder (a model's `save`)."""
    input_example: object
    params: Mapping[str, object]
    metrics: Mapping[str, float]
    tagged_scores: Mapping[str, float]
    """Scores copied onto the version's tags (six decimals) for people browsing the registry;
    the gate never reads them."""
    run_tags: Mapping[str, str] = field(default_factory=dict)
    version_tags: Mapping[str, str] = field(default_factory=dict)
    epoch_metrics: Sequence[Mapping[str, float]] = ()
    report: Mapping[str, str | Figure] = field(default_factory=dict)
    """Files logged under `report/` beside the card: text as written, figures as PNG."""
    model_metadata: Mapping[str, object] = field(default_factory=dict)
    signature: ModelSignature | None = None
    trials: Sequence[Trial] = ()
    """The search on validation that chose its settings (child runs in MLflow)."""


def lineage_tags(
    dataset_version: str, test_version: str | int, dagster_run_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(run tags, version tags) of a classifier candidate: what it learned from and the frozen
    test version it was scored on (the version tags are what the gate and lookups read)."""
    version_tags = {"dataset_version": dataset_version, "test_version": str(test_version)}
    return {**version_tags, "dagster_run_id": dagster_run_id}, version_tags


def role_of(kind: str) -> str:
    return "baseline" if kind == "baseline" else "candidate"


def _write_report(folder: Path, candidate: Candidate, card: str) -> None:
    folder.mkdir()
    for name, content in candidate.report.items():
        if isinstance(content, Figure):
            content.savefig(folder / name, dpi=80, bbox_inches="tight")
        else:
            (folder / name).write_text(content, encoding="utf-8")
    (folder / "model_card.md").write_text(card, encoding="utf-8")


def register_candidate(registry: Registry, candidate: Candidate) -> tuple[ModelVersion, str]:
    """Log the candidate's training run with its report and pyfunc model, and register it as a
    new version; returns the version and the rendered model card."""
    card = candidate.card.render()
    identity = {"kind": candidate.kind, "role": candidate.role}
    cipher = at_rest_cipher()
    with tempfile.TemporaryDirectory(prefix="candidate-") as folder:
        report = Path(folder) / "report"
        _write_report(report, candidate, card)
        artifacts = {}
        for name, save in candidate.artifacts.items():
            saved = Path(folder) / "artifacts" / name
            save(saved)
            if cipher is not None:
                encrypt_folder(cipher, saved)
            artifacts[name] = str(saved)
        version = registry.log_and_register(
            candidate.model_name,
            TrainingRun(
                run_name=candidate.run_name,
                params={**candidate.params, **identity},
                metrics=candidate.metrics,
                epoch_metrics=candidate.epoch_metrics,
                tags={**candidate.run_tags, **identity},
                version_tags={
                    **candidate.version_tags,
                    **identity,
                    **{key: f"{value:.6f}" for key, value in candidate.tagged_scores.items()},
                    ARTIFACT_ENCRYPTION: "none" if cipher is None else "fernet",
                },
                report_dir=report,
                trials=candidate.trials,
            ),
            candidate.entry_point,
            artifacts,
            candidate.input_example,
            pip_requirements(),
            candidate.model_metadata,
            candidate.signature,
        )
    return version, card
