"""Registered artifacts are trusted only by their digests: the sha256 of every file, recorded at
registration and checked before anything in a model folder is read."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ml.data.ingestion import file_sha256

ARTIFACT_SHA256 = "artifact_sha256"
"""Version tag: JSON {path in the logged model folder: sha256 of the file as stored}."""
ARTIFACT_ENCRYPTION = "artifact_encryption"
"""Version tag: `fernet` when the model's artifact files are stored encrypted (`<name>.enc`,
ml/security/encryption.py), `none` when registered without keys; the digests are of the stored
files either way."""
DOWNLOAD_MARKERS = frozenset({"registered_model_meta"})
"""Written by MLflow into a `models:/` download folder; never part of the stored artifact."""


class ArtifactIntegrityError(RuntimeError):
    """A version's stored files do not match the sha256 digests recorded at registration."""


def artifact_manifest(folder: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of every file of a model folder."""
    files = (path for path in sorted(folder.rglob("*")) if path.is_file())
    manifest = {path.relative_to(folder).as_posix(): file_sha256(path) for path in files}
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
