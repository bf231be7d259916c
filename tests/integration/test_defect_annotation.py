"""Cell images through the one annotation loop with a real Label Studio: hidden labels kept
aside, candidates picked by the champion's uncertainty and pre-annotated with its guess, the
images inside the tasks, two simulated annotators, the kappa gate (a careless batch comes
back), review of disagreements, and versioned labels that reach the splits."""

import base64
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context

from assets.defects.sensors import defect_annotation_complete_sensor
from assets.resources import build_resources
from ml.annotation.label_studio_client import IMAGE_FROM_NAME, IMAGE_TO_NAME, LabelStudioClient
from ml.data.objects import read_bytes
from ml.settings import Settings
from ml.synthetic.defect_images import generate_cell_images, image_drop_zip
from orchestration.definitions import build_definitions
from orchestration.labelstudio import LabelStudioServer
from orchestration.pipeline import PipelineRun, build_warehouse, execute_quietly
from orchestration.simulated_annotators import simulated_annotator
from tests.conftest import SERVED_CNN, ingest_and_build_warehouse, small_demand_source

IMAGE_CHOICE = (IMAGE_FROM_NAME, IMAGE_TO_NAME)
LABELS = ("functional", "defective")


def test_image_batches_go_through_label_studio_with_the_kappa_gate(
    settings: Settings, label_studio: LabelStudioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_LABEL_STUDIO_URL", label_studio.config.url)
    monkeypatch.setenv("MLOPS_LABEL_STUDIO_TOKEN", label_studio.config.token)
    settings = Settings.from_env()
    drops = Path(settings.defect_drops_uri)
    for source, n, seed in (("line1", 140, 21), ("line1_unlabeled", 40, 22)):
        (drops / source).mkdir(parents=True)
        (drops / source / "cells.zip").write_bytes(
            image_drop_zip(generate_cell_images(n, seed=seed, size=64))
        )
    warehouse = ingest_and_build_warehouse(settings)
    unlabeled = warehouse.query(
        "select count(*) from validated_defect_images "
        "where source = 'line1_unlabeled' and defective is null"
    ).item()
    assert unlabeled == 40, "a hidden-label source arrives unlabeled"
    assert warehouse.query("select count(*) from hidden_defect_labels").item() == 40

    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    admin = LabelStudioClient(label_studio.config.url, label_studio.config.token)
    trained = execute_quietly(
        defs,
        instance,
        "defect_training_job",
        config={"ops": {"defect_cnn": {"config": SERVED_CNN}}},
    )
    assert trained.success

    def new_batch(size: int) -> str:
        config = {"ops": {"defect_annotation_candidates": {"config": {"batch_size": size}}}}
        run = execute_quietly(defs, instance, "defect_annotation_candidates_job", config=config)
        assert run.success
        event = instance.get_latest_materialization_event(AssetKey("defect_annotation_candidates"))
        metadata = event.asset_materialization.metadata
        assert metadata["strategy"].value == "smallest margin per guess"
        assert metadata["scored_by"].value.startswith("defect_classifier v")
        batch = metadata["batch"].value
        run = execute_quietly(defs, instance, "defect_annotation_batch_job", partition=batch)
        assert run.success
        return batch

    def answers(batch: str) -> dict[str, str]:
        rows = warehouse.query(
            "select i.ext_id, h.defective from defect_annotation_items i "
            "join hidden_defect_labels h using (image_id) where i.batch_id = ?",
            [batch],
        )
        return {ext: LABELS[bool(d)] for ext, d in rows.iter_rows()}

    def annotate(batch: str, rates: tuple[float, float]) -> None:
        project = admin.find_project(f"Defects {batch}")
        for name, rate in zip(("ivy", "jon"), rates, strict=True):
            person = simulated_annotator(admin, f"{name}-{int(rate * 100)}", rate, seed=1)
            assert person.annotate(project, answers(batch), LABELS, control=IMAGE_CHOICE) > 0

    first = new_batch(16)
    items = warehouse.query(
        "select image_id, image_uri, guess from defect_annotation_items where batch_id = ?",
        [first],
    )
    assert items.height == 16 and items["guess"].is_not_null().all()
    project = admin.find_project(f"Defects {first}")
    assert admin.sdk.projects.get(id=project).total_predictions_number == 16, "pre-annotated"
    task = admin.tasks(project)[0]
    stored = dict(zip(items["image_id"], items["image_uri"], strict=True))
    prefix = "data:image/png;base64,"
    assert task.data["image"].startswith(prefix)
    assert base64.b64decode(task.data["image"][len(prefix) :]) == read_bytes(
        stored[task.data["image_id"]]
    ), "the task shows the image as the data home keeps it"

    annotate(first, (0.0, 0.1))
    resources = {"label_studio": build_resources(settings)["label_studio"]}
    fired = defect_annotation_complete_sensor(
        build_sensor_context(instance=instance, resources=resources)
    )
    assert [(r.partition_key, r.run_key) for r in fired.run_requests] == [
        (first, f"annotated:{first}")
    ], "the sensor sees the batch done by two people"
    collected = execute_quietly(defs, instance, "defect_annotated_batch_job", partition=first)
    assert collected.success, warehouse.query(
        "select a.*, b.annotator, b.label from defect_annotation_batch_agreement a "
        "join defect_batch_annotations b using (batch_id)"
    ).rows()
    agreement = warehouse.query(
        "select status, kappa, disagreements from defect_annotation_batch_agreement "
        "where batch_id = ?",
        [first],
    ).row(0, named=True)
    assert agreement["status"] == "accepted" and agreement["kappa"] >= 0.7
    truth = answers(first)
    review = admin.find_project(f"Review {first}")
    if agreement["disagreements"]:
        reviewer = simulated_annotator(admin, "kim", 0.0, seed=5)
        key = {f"review:{ext}": label for ext, label in truth.items()}
        assert (
            reviewer.annotate(review, key, LABELS, control=IMAGE_CHOICE)
            == (agreement["disagreements"])
        )
    assert execute_quietly(defs, instance, "labeled_defect_images_job").success
    run = PipelineRun()
    build_warehouse(defs, instance, run)
    assert all(result.success for result in run.results.values())
    labeled = warehouse.query(
        "select image_id, defective, label_source, label_version from defect_image_splits "
        "where label_source = 'annotation'"
    )
    expected = {ext.split(":", 1)[1]: label == "defective" for ext, label in truth.items()}
    assert dict(zip(labeled["image_id"], labeled["defective"], strict=True)) == expected
    assert set(labeled["label_version"]) == {1}

    # A careless pair (one always wrong) is blocked: the batch comes back as its next round.
    second = new_batch(12)
    second_ids = set(
        warehouse.query(
            "select image_id from defect_annotation_items where batch_id = ?", [second]
        )["image_id"]
    )
    assert not second_ids & set(expected), "an accepted image is never sent again"
    annotate(second, (0.0, 1.0))
    collected = execute_quietly(defs, instance, "defect_annotated_batch_job", partition=second)
    assert not collected.success, "the blocking kappa check stops the run"
    rounds = warehouse.query(
        "select batch_id, status, count(*) as n from defect_annotation_items "
        "where batch_id like ? group by 1, 2 order by 1",
        [f"{second}%"],
    )
    assert rounds.rows() == [(second, "blocked", 12), (f"{second}-r2", "open", 12)]
