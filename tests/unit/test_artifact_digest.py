"""Artifact digests: a model folder matches the sha256 per file recorded at registration, or the
error names the file and what differs."""

from pathlib import Path

import pytest

from ml.lifecycle.artifacts import ArtifactIntegrityError, artifact_manifest, verify_artifact


def model_folder(root: Path) -> Path:
    (root / "artifacts" / "classifier").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "artifacts" / "classifier" / "pipeline.skops").write_bytes(b"weights")
    return root


def test_an_unchanged_folder_verifies_and_the_download_marker_is_not_part_of_it(
    tmp_path: Path,
) -> None:
    folder = model_folder(tmp_path / "model")
    manifest = artifact_manifest(folder)
    assert set(manifest) == {"MLmodel", "artifacts/classifier/pipeline.skops"}
    (folder / "registered_model_meta").write_text("model_name: x\n")  # MLflow's download note
    verify_artifact(folder, manifest, "m v1")


def test_a_changed_missing_or_planted_file_is_named(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model")
    manifest = artifact_manifest(folder)
    weights = folder / "artifacts" / "classifier" / "pipeline.skops"
    weights.write_bytes(b"weightz")
    with pytest.raises(ArtifactIntegrityError, match=r"m v1: file artifacts/classifier/pipeline"):
        verify_artifact(folder, manifest, "m v1")
    weights.unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"pipeline\.skops is missing"):
        verify_artifact(folder, manifest, "m v1")
    weights.write_bytes(b"weights")
    (folder / "artifacts" / "extra.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(ArtifactIntegrityError, match=r"artifacts/extra\.pkl were not part"):
        verify_artifact(folder, manifest, "m v1")
