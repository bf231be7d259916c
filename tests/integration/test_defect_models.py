"""Defect classifiers end to end, in-process on real DuckDB, dbt and MLflow: generated cell images
are ingested and split, the test version frozen, the feature baseline and a tiny CNN (one epoch
from the packaged ImageNet weights) trained, registered through the one life cycle and gated; a
registered version predicts from encoded images and refuses a bad one by name."""

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, Definitions
from mlflow import MlflowClient

from ml.defects.images import BadImage
from ml.lifecycle.aliases import GATE_DECISION, GATE_SCORE
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.settings import Settings
from ml.synthetic.defect_images import generate_cell_images, image_drop_zip
from orchestration.definitions import build_definitions
from orchestration.pipeline import execute_quietly
from tests.conftest import ingest_and_build_warehouse, small_demand_source

TINY_CNN = {"input_size": 64, "epochs": 1, "batch_size": 16, "max_train_samples": 96}
WEAK_BASELINE = 1e-6
"""The same baseline with almost no capacity left: a real, much weaker model."""


@dataclass
class Trained:
    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    registry: Registry
    runs: list


def training_config(regularization: float) -> dict:
    return {
        "ops": {
            "defect_baseline": {"config": {"regularization": regularization}},
            "defect_cnn": {"config": TINY_CNN},
        }
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A warehouse of 300 generated cells; two rounds of the training job: first with a weak
    baseline, then with the real one (each round also fine-tunes the tiny CNN)."""
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("defects") / "data_home"
        env.setenv("MLOPS_DATA_HOME", str(home))
        env.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings.from_env()
        cells = generate_cell_images(300, seed=8, size=64)
        drop = Path(settings.defect_drops_uri) / "line1" / "cells.zip"
        drop.parent.mkdir(parents=True)
        drop.write_bytes(image_drop_zip(cells))
        ingest_and_build_warehouse(settings)
        defs = build_definitions(settings, small_demand_source(settings))
        instance = DagsterInstance.ephemeral()
        runs = [
            execute_quietly(
                defs, instance, "defect_training_job", config=training_config(regularization)
            )
            for regularization in (WEAK_BASELINE, 1.0)
        ]
        registry = Registry(settings.tracking_uri, settings.artifact_root)
        yield Trained(settings, defs, instance, registry, runs)


def test_baseline_and_cnn_are_registered_and_the_baseline_learns(trained: Trained) -> None:
    assert all(run.success for run in trained.runs)
    versions = trained.registry.versions(DEFECT_CLASSIFIER)
    assert [v.tags["kind"] for v in versions] == ["baseline", "cnn", "baseline", "cnn"]
    client = MlflowClient(trained.settings.tracking_uri)
    for version in versions:
        run = client.get_run(version.run_id)
        assert run.data.tags["test_version"] == "1"
        assert {"test_defect_f1", "test_accuracy", "test_roc_auc", "threshold"} <= set(
            run.data.metrics
        )
        reports = {a.path for a in client.list_artifacts(version.run_id, "report")}
        # A champion, once priced by the job's defect_classifier_roi, has its economics too.
        priced = {"report/cost_effect.png", "report/economics.md"}
        assert reports - priced == {
            "report/confusion_matrix.png",
            "report/model_card.md",
            "report/per_module_type.md",
        }
    champion = trained.registry.champion(DEFECT_CLASSIFIER)
    assert priced <= {a.path for a in client.list_artifacts(champion.run_id, "report")}
    real_baseline = versions[2]
    weak_baseline = versions[0]
    test_defective = (
        trained.instance.get_latest_materialization_event(AssetKey("defect_test_set"))
        .asset_materialization.metadata["per_defective"]
        .value
    )
    assert "True" in str(test_defective) and "False" in str(test_defective)
    # Learning: far above the majority class's accuracy (about 0.67 of these cells are fine).
    assert real_baseline.metric("test_accuracy") >= 0.85
    assert real_baseline.metric("test_defect_f1") >= 0.75
    assert real_baseline.metric("test_defect_f1") > weak_baseline.metric("test_defect_f1")
    cnn_run = client.get_run(versions[1].run_id)
    assert cnn_run.data.params["cnn_epochs"] == "1"
    assert cnn_run.data.params["cnn_pretrained"] == "True"
    assert [m.step for m in client.get_metric_history(versions[1].run_id, "train_loss")] == [1]


def test_the_gate_promotes_on_its_own_scores_and_never_below_the_baseline(
    trained: Trained,
) -> None:
    versions = trained.registry.versions(DEFECT_CLASSIFIER)
    weak, real = versions[0], versions[2]
    score = {v.version: float(v.tags[GATE_SCORE]) for v in versions}
    assert weak.tags[GATE_DECISION] == "champion"
    assert "no champion yet" in weak.tags["gate_reason"]
    assert score[real.version] > score[weak.version], "the real baseline scores higher"
    for version in versions[1:]:
        baseline = weak if int(version.version) < int(real.version) else real
        if score[version.version] < score[baseline.version]:
            assert version.tags[GATE_DECISION] == "challenger"
            assert "loses to the baseline" in version.tags["gate_reason"]
    champion = trained.registry.champion(DEFECT_CLASSIFIER)
    best = max(score.values())
    assert score[champion.version] >= best - 0.005 - 1e-9, "the champion is the best, by margin"
    promotion = trained.instance.get_latest_materialization_event(
        AssetKey("defect_classifier_promotion")
    ).asset_materialization.metadata
    assert promotion["champion_version"].value == champion.version


def test_a_registered_version_predicts_from_encoded_images_and_names_a_bad_one(
    trained: Trained,
) -> None:
    champion = trained.registry.champion(DEFECT_CLASSIFIER)
    model = trained.registry.load(DEFECT_CLASSIFIER, champion.version)
    cells = generate_cell_images(6, seed=77, size=64)
    as_bytes = model.predict(pd.DataFrame({"image": [c.png for c in cells]}))
    as_text = model.predict(
        pd.DataFrame({"image": [base64.b64encode(c.png).decode() for c in cells]})
    )
    assert list(as_bytes.columns) == ["label", "defect_probability", "threshold"]
    pd.testing.assert_frame_equal(as_bytes, as_text)
    assert as_bytes["label"].isin(["functional", "defective"]).all()
    assert as_bytes["defect_probability"].between(0, 1).all()
    with pytest.raises(BadImage, match=r"image 1: truncated"):
        model.predict(pd.DataFrame({"image": [cells[0].png, cells[1].png[:200]]}))
    metadata = trained.instance.get_latest_materialization_event(
        AssetKey("defect_cnn")
    ).asset_materialization.metadata
    assert "data:image/png;base64," in metadata["confusion_matrix"].value
    assert metadata["device"].value == "cpu"
    assert "| metric | this model | baseline |" in metadata["model_card"].value
