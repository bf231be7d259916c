"""The flywheel closes for cell images: generated cells are ingested and split, the image
reference is built from the training split, and each hour of /inspect traffic is measured and
compared with it. Cells like the training ones raise no alarm; blurred cells drift, re-enter as
an unlabeled `serving` image drop, and once that drop is ingested the defect drift sensor
requests exactly one retraining run, never a second.

Traffic is written as the service writes it: each inspected image kept under the image home as
`<image id>.png`, each answer logged by the prediction log writer with `served_at` in two past
hours, so both windows are complete when the sensor looks."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    SensorResult,
    SkipReason,
    build_sensor_context,
    materialize,
)
from PIL import Image, ImageFilter

from assets.monitoring.drift import read_drift_reports, window_partition_key
from assets.monitoring.image_drift import IMAGES, defect_image_reference
from assets.monitoring.sensors import defect_drift_sensor
from assets.resources import DataHome, Warehouse
from ml.defects.features import image_statistics
from ml.defects.images import decode, image_id_of
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER
from ml.monitoring.prediction_log import PredictionLogWriter, prediction_record
from ml.settings import Settings
from ml.synthetic.defect_images import generate_cell_images, image_drop_zip, png_bytes
from orchestration.definitions import build_definitions
from orchestration.pipeline import (
    PipelineRun,
    build_warehouse,
    execute_quietly,
    ingest_defect_drops,
    ingest_demand,
)
from tests.conftest import small_demand_source

CALM = datetime(2026, 11, 30, 10, tzinfo=UTC)
SHIFTED = datetime(2026, 11, 30, 11, tzinfo=UTC)
SERVED = 70


@dataclass
class Monitored:
    settings: Settings
    defs: Definitions
    instance: DagsterInstance


def served_cells(seed: int) -> list[np.ndarray]:
    return [decode(c.png)[1] for c in generate_cell_images(SERVED, seed=seed, size=64)]


def serve_into_log(settings: Settings, images: list[np.ndarray], hour: datetime) -> None:
    """Keep each image and log each answer as /inspect does."""
    writer = PredictionLogWriter(settings.prediction_log_dir, "test", flush_seconds=60)
    records = []
    for i, pixels in enumerate(images):
        image_id = image_id_of(pixels)
        kept = Path(settings.image_uri) / f"{image_id}.png"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(png_bytes(pixels))
        records.append(
            prediction_record(
                "inspect",
                DEFECT_CLASSIFIER,
                "1",
                {"image_id": image_id, **image_statistics(pixels)},
                {"image_id": image_id, "label": "functional"},
                intent="functional",
                confidence=0.1,
                served_at=hour + timedelta(seconds=30 * i),
                variant="champion",
            )
        )
    writer.log(records)
    writer.close()


def evaluate(monitored: Monitored, cursor: str | None):
    context = build_sensor_context(
        instance=monitored.instance,
        cursor=cursor,
        resources={"monitoring": monitored.defs.resources["monitoring"]},
    )
    return defect_drift_sensor(context)


def judge(monitored: Monitored, hour: datetime) -> None:
    result = execute_quietly(
        monitored.defs,
        monitored.instance,
        "defect_monitoring_job",
        partition=window_partition_key(hour),
    )
    assert result.success


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("image-drift") / "data_home"
        env.setenv("MLOPS_DATA_HOME", str(home))
        env.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings.from_env()
        drop = Path(settings.defect_drops_uri) / "line1" / "cells.zip"
        drop.parent.mkdir(parents=True)
        drop.write_bytes(image_drop_zip(generate_cell_images(240, seed=5, size=64)))
        defs = build_definitions(settings, small_demand_source(settings))
        instance = DagsterInstance.ephemeral()
        run = PipelineRun()
        ingest_defect_drops(defs, instance, DataHome(path=str(home)), run)
        ingest_demand(defs, instance, run)
        build_warehouse(defs, instance, run)
        assert run.success, [name for name, r in run.results.items() if not r.success]
        reference = materialize(
            [defect_image_reference], instance=instance, resources=defs.resources
        )
        assert reference.success
        monitored = Monitored(settings, defs, instance)
        calm = served_cells(seed=21)
        # A client's retry (the same image twice) counts once; an image the home does not
        # hold (served before images were kept) is counted, not judged.
        serve_into_log(settings, [*calm, calm[0]], CALM)
        missing = served_cells(seed=22)[0]
        serve_into_log(settings, [missing], CALM)
        (Path(settings.image_uri) / f"{image_id_of(missing)}.png").unlink()
        blurred = [
            np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(1.5)))
            for p in served_cells(seed=23)
        ]
        serve_into_log(settings, blurred, SHIFTED)
        for hour in (CALM, SHIFTED):
            judge(monitored, hour)
        yield monitored


def image_reports(monitored: Monitored) -> dict[str, dict]:
    monitoring = monitored.defs.resources["monitoring"]
    return {str(r["window"]): r for r in read_drift_reports(monitoring, IMAGES)}


def test_like_cells_do_not_drift_and_blurred_cells_drift_and_become_a_serving_drop(
    monitored: Monitored,
) -> None:
    reports = image_reports(monitored)
    calm, shifted = reports[f"{CALM:%Y-%m-%dT%H}"], reports[f"{SHIFTED:%Y-%m-%dT%H}"]
    assert (calm["rows"], calm["judged_rows"], calm["missing_images"]) == (SERVED, SERVED, 1)
    assert not calm["drifted"] and calm["drop_id"] is None, calm["reasons"]
    assert calm["complete"] and calm["reference_rows"] >= 2 * SERVED
    assert shifted["drifted"], shifted["columns"]
    assert {"sharpness", "embedding_distance"} <= set(shifted["drifted_columns"])
    assert not {"width", "height"} & set(shifted["drifted_columns"])
    assert shifted["drop_id"].startswith("serving-")
    assert any(reason.startswith("sharpness: ") for reason in shifted["reasons"])
    drop = Path(monitored.settings.defect_drops_uri) / "serving" / f"window-{SHIFTED:%Y-%m-%dT%H}"
    assert drop.with_suffix(".parquet").exists()
    event = monitored.instance.get_latest_materialization_event(AssetKey("defect_image_drift"))
    metadata = event.asset_materialization.metadata
    assert {"drift_chart", "columns", "drifted_images"} <= set(metadata)
    assert metadata["verdict"].value.startswith(f"drift in {shifted['drifted_columns'][0]}")
    monitoring = monitored.defs.resources["monitoring"]
    assert read_drift_reports(monitoring) == [], "image reports are not the requests'"


def test_image_drift_requests_exactly_one_retraining_run_once_its_images_are_ingested(
    monitored: Monitored,
) -> None:
    first = evaluate(monitored, None)
    assert isinstance(first, SensorResult) and not first.run_requests, "calm hour: no run"
    waiting = evaluate(monitored, first.cursor)
    assert isinstance(waiting, SkipReason), "the drifted images are not ingested yet"

    run = PipelineRun()
    ingest_defect_drops(
        monitored.defs, monitored.instance, DataHome(path=str(monitored.settings.data_home)), run
    )
    assert run.success and any(name.startswith("defects serving-") for name in run.results)
    drop_id = image_reports(monitored)[f"{SHIFTED:%Y-%m-%dT%H}"]["drop_id"]
    ingested = Warehouse(path=str(monitored.settings.warehouse_path)).query(
        "select source, defective, published from validated_defect_images where drop_id = ?",
        [drop_id],
    )
    assert ingested.height == SERVED and set(ingested["source"]) == {"serving"}
    assert ingested["defective"].is_null().all() and ingested["published"].all()

    fired = evaluate(monitored, first.cursor)
    assert isinstance(fired, SensorResult) and len(fired.run_requests) == 1
    request = fired.run_requests[0]
    assert request.run_key == f"retrain-defects:{SHIFTED:%Y-%m-%dT%H}"
    assert request.run_config == {
        "ops": {
            "defect_annotation_candidates": {
                "config": {"batch_size": 50, "prefer_sources": ["serving"]}
            }
        }
    }
    assert "sharpness" in request.tags["mlops/reason"]
    assert isinstance(evaluate(monitored, fired.cursor), SkipReason), "never twice a window"

    judge(monitored, SHIFTED)
    again = image_reports(monitored)[f"{SHIFTED:%Y-%m-%dT%H}"]
    assert again["drop_id"] == drop_id, "the same hour, the same drop"
    assert isinstance(evaluate(monitored, fired.cursor), SkipReason), "a re-run changes nothing"
