"""Package the champions as a versioned Bento: import each MLflow version into the BentoML model
store (tag `<model>:v<mlflow version>`) and build the `mlops_platform` Bento that serves them.

The Bento's version names the model versions it serves and the code (`rc3-df2-1a2b3c4d`), so
building for champions that already have a Bento (a rollback) returns that Bento again instead
of a new one. Run as its
own process (`python -m serving.package`): BentoML reads BENTOML_HOME once, at import.

Every model folder is verified against the sha256 digests recorded at registration before it is
imported, and a model imported earlier is verified again (its copy in the BentoML store against
the registry's digests) before a Bento is built on it; `load_verified` does the same in the
service before the model's files are read.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from ml.data import objects
from ml.data.atomic_files import write_text_atomically
from ml.lifecycle.artifacts import ARTIFACT_SHA256, verify_artifact
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, DEMAND_FORECASTER, REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.security.encryption import KEYS_VARIABLE as ENCRYPTION_KEYS_VARIABLE
from ml.settings import PROJECT_ROOT, REGISTRY_CLIENT_SECRETS, environment_with, executable
from ml.synthetic.defect_images import generate_cell_images

BENTO_NAME = "mlops_platform"
SERVICE = "serving.service:Champions"
SERVED = {REQUEST_CLASSIFIER: "rc", DEMAND_FORECASTER: "df", DEFECT_CLASSIFIER: "dc"}
"""Registered model → its short name in the Bento version."""
SMOKE_CELL_SEED = 20261
"""The generated cell image a new Bento is asked to inspect before it takes traffic."""
SOURCES = ("serving/*.py", "ml/**/*.py", "ml/**/*.json")
"""What the Bento carries besides the lock file: the service and the plain `ml` package."""
MLFLOW_MODEL_FOLDER = "mlflow_model"
"""Where bentoml.mlflow.import_model puts the MLflow model inside a BentoML model."""

POINTER_FILE = "champion_bento.json"
"""Which Bento `champion_bento` built last, under BENTOML_HOME: what `make serve` follows."""


MODEL_READER_SECRETS = (*REGISTRY_CLIENT_SECRETS, ENCRYPTION_KEYS_VARIABLE)
"""What a process that loads registered models needs: the registry client's secrets, and the
keys their artifacts are encrypted with (packaging loads the forecasting champion)."""


def bentoml_environment(
    bentoml_home: Path, passing: Iterable[str] = MODEL_READER_SECRETS, **overrides: str
) -> dict[str, str]:
    """This environment with BentoML's store set and no telemetry (packaging and serving),
    without its secrets but a model reader's (packaging reads the registry and loads a model)."""
    return environment_with(
        passing=passing,
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        **overrides,
    )


def current_bento(bentoml_home: Path) -> dict[str, object] | None:
    """What `champion_bento` last built for the current champions, or None before the first."""
    path = bentoml_home / POINTER_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def record_current_bento(
    bentoml_home: Path, packaged: dict[str, object], publish_uri: str = ""
) -> None:
    """Point `make serve` at `packaged` (written whole, then renamed: readers never see half),
    and the serving machines that follow `publish_uri` (MLOPS_BENTO_URI), once its archive is
    there (`publish_bento`)."""
    bentoml_home.mkdir(parents=True, exist_ok=True)
    write_text_atomically(bentoml_home / POINTER_FILE, json.dumps(packaged, indent=2))
    if publish_uri:
        if not packaged.get("archive"):
            raise ValueError(f"{packaged['bento']} has no archive in {publish_uri} to point at")
        objects.write_json(objects.join(publish_uri, POINTER_FILE), packaged)


def publish_bento(tag: str, publish_uri: str) -> str:
    """The Bento `tag`, with the models it serves, as one archive under `publish_uri` (an
    object-store prefix or a folder): exported once, then found again; its URI."""
    import bentoml

    name, version = tag.split(":")
    archive = objects.join(publish_uri, f"{name}-{version}.bento")
    if not objects.exists(archive):
        bentoml.export_bento(tag, archive)
    return archive


def published_bento(publish_uri: str) -> dict[str, object] | None:
    """What `champion_bento` last published under `publish_uri`, or None before the first."""
    pointer = objects.join(publish_uri, POINTER_FILE)
    return objects.read_json(pointer) if objects.exists(pointer) else None


def import_published(bentoml_home: Path, published: dict[str, object]) -> dict[str, object]:
    """`published` in this machine's BentoML store: its archive imported unless the Bento is
    there already; the pointer with the local path."""
    name, version = str(published["bento"]).split(":")
    local = bentoml_home / "bentos" / name / version
    if not (local / "bento.yaml").exists():
        done = subprocess.run(
            [executable("bentoml"), "import", str(published["archive"])],
            env=bentoml_environment(bentoml_home),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"importing {published['archive']} into {bentoml_home} failed (exit "
                f"{done.returncode}): {done.stderr[-2000:]}"
            )
    return {**published, "path": str(local)}


def source_files() -> list[Path]:
    files = [path for pattern in SOURCES for path in sorted(PROJECT_ROOT.glob(pattern))]
    return [*files, PROJECT_ROOT / "requirements.lock"]


def source_digest() -> str:
    """Eight hex digits of the code and pins a Bento carries: new code, new Bento."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def bento_version(versions: Mapping[str, str], challengers: Mapping[str, str] | None = None) -> str:
    """`rc3-df2-<code>`: which MLflow version of each model the Bento serves (`none` when
    absent), with its challenger where there is one (`rc3c5`), and which code serves them; a
    rollback on the same code finds its Bento again."""
    challengers = challengers or {}
    models = "-".join(
        f"{short}{versions.get(model) or 'none'}"
        + (f"c{challengers[model]}" if challengers.get(model) else "")
        for model, short in SERVED.items()
    )
    return f"{models}-{source_digest()}"


def model_tag(model: str, version: str) -> str:
    return f"{model}:v{version}"


def import_champion(registry: Registry, model: str, version: str) -> str:
    """The BentoML model for MLflow `model` v`version`, imported once."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = model_tag(model, version)
    manifest = registry.manifest(model, version)
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        verify_artifact(
            Path(existing.path_of(MLFLOW_MODEL_FOLDER)),
            manifest,
            f"{model} v{version} (BentoML model {existing.tag})",
        )
        return str(existing.tag)
    found = registry.version(model, version)
    with tempfile.TemporaryDirectory() as folder:
        imported = bentoml.mlflow.import_model(
            tag,
            model_uri=str(registry.download(model, version, Path(folder))),
            labels={"mlflow_version": version, "mlflow_run_id": found.run_id},
            metadata={
                "mlflow_tracking_uri": registry.tracking_uri,
                "kind": found.tags["kind"],
                ARTIFACT_SHA256: json.dumps(manifest, sort_keys=True),
            },
        )
    return str(imported.tag)


def load_verified(bento_model):
    """The MLflow pyfunc of a BentoML model imported by `import_champion`, loaded only after its
    files match the sha256 digests recorded at registration (carried in its metadata)."""
    import bentoml

    stored = (
        bento_model
        if isinstance(bento_model, bentoml.Model)
        else bentoml.models.get(bento_model.tag)
    )
    recorded = stored.info.metadata.get(ARTIFACT_SHA256)
    version = stored.info.labels.get("mlflow_version", "?")
    if not recorded:
        raise RuntimeError(
            f"BentoML model {stored.tag} (MLflow v{version}) carries no {ARTIFACT_SHA256}: "
            "it was not imported by serving.package; package it again"
        )
    verify_artifact(
        Path(stored.path_of(MLFLOW_MODEL_FOLDER)),
        json.loads(recorded),
        f"{stored.tag.name} v{version} (BentoML model {stored.tag})",
    )
    return bentoml.mlflow.load_model(stored)


def build_context(folder: Path) -> None:
    """A build context holding only what the Bento needs (not the venvs or the data home)."""
    for source in source_files():
        target = folder / source.relative_to(PROJECT_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def smoke_examples(registry: Registry, versions: Mapping[str, str]) -> dict[str, object]:
    """What the serving supervisor asks a new Bento before it takes traffic: a series the
    forecasting champion knows, and a cell image the defect champion can take (generated,
    always the same)."""
    examples: dict[str, object] = {}
    if versions.get(DEMAND_FORECASTER):
        model = registry.load(DEMAND_FORECASTER, versions[DEMAND_FORECASTER])
        store, item = model.unwrap_python_model().forecaster.keys[0]
        examples["forecast"] = {"series": [{"store": str(store), "item": str(item)}]}
    if versions.get(DEFECT_CLASSIFIER):
        cell = generate_cell_images(1, seed=SMOKE_CELL_SEED, size=64)[0]
        examples["inspect"] = {"images": [base64.b64encode(cell.png).decode("ascii")]}
    return examples


def package(
    registry: Registry, versions: Mapping[str, str], challengers: Mapping[str, str] | None = None
) -> dict[str, object]:
    """Build (or find) the Bento serving `versions` ({model: MLflow version}) and, beside each
    champion, its `challengers` ({model: MLflow version}) for a staged release."""
    import bentoml
    from bentoml.exceptions import NotFound

    challengers = {m: v for m, v in (challengers or {}).items() if v and versions.get(m)}
    tags = {model: import_champion(registry, model, v) for model, v in versions.items() if v}
    if not tags:
        raise ValueError("no champion to package: promote a model first")
    challenger_tags = {
        f"{model}_challenger": import_champion(registry, model, v)
        for model, v in challengers.items()
    }
    version = bento_version(versions, challengers)
    try:
        bento = bentoml.bentos.get(f"{BENTO_NAME}:{version}")
        built = False
    except NotFound:
        with tempfile.TemporaryDirectory() as context:
            build_context(Path(context))
            bento = bentoml.bentos.build(
                SERVICE,
                name=BENTO_NAME,
                version=version,
                build_ctx=context,
                labels={
                    **{f"{model}_version": v for model, v in versions.items() if v},
                    **{f"{model}_challenger": v for model, v in challengers.items()},
                },
                description=(
                    "The platform's champions and challengers: /classify, /forecast, /inspect."
                ),
                python={"requirements_txt": "requirements.lock", "lock_packages": False},
                args={**tags, **challenger_tags},
            )
        built = True
    return {
        "bento": str(bento.tag),
        "path": str(bento.path),
        "models": tags,
        "challenger_models": challenger_tags,
        "versions": {model: v for model, v in versions.items() if v},
        "challengers": challengers,
        "smoke": smoke_examples(registry, versions),
        "built": built,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracking-uri", required=True)
    for model in SERVED:
        parser.add_argument(f"--{model.replace('_', '-')}-version", default="")
        parser.add_argument(f"--{model.replace('_', '-')}-challenger", default="")
    parser.add_argument("--publish-uri", default="", help="also export the Bento there")
    args = parser.parse_args(argv)
    versions = {model: getattr(args, f"{model}_version") for model in SERVED}
    challengers = {model: getattr(args, f"{model}_challenger") for model in SERVED}
    packaged = package(Registry(args.tracking_uri), versions, challengers)
    if args.publish_uri:
        packaged["archive"] = publish_bento(str(packaged["bento"]), args.publish_uri)
    print(json.dumps(packaged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
