"""Sensors of the request domain: new files dropped, batches to send to Label Studio, and
batches fully annotated (the loop's sensors, assets/annotation_sensors.py)."""

import json

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    sensor,
)

from assets.annotation_sensors import annotation_sensors, batch_progress
from assets.annotation_sensors import batches_to_send as loop_batches_to_send
from assets.drop_sensors import drop_sensor_result
from assets.requests.annotation import REQUEST_ANNOTATION
from assets.requests.intake import request_drops
from assets.requests.jobs import (
    annotated_batch_job,
    annotation_batch_job,
    request_ingest_job,
)
from assets.resources import (
    DataHome,
    RequestIntake,
)
from ml.annotation.label_studio_client import LabelStudioClient
from ml.data.drops import DropScan, scan_drops


def scan_request_drops(
    data_home: DataHome,
    request_intake: RequestIntake,
    cursor: dict[str, object],
    *,
    settle: bool = False,
) -> DropScan:
    """Register every file under `<drops>/<source>/` not yet handled with this size and stamp;
    `settle` (the sensor) waits for a second look at an unchanged file before registering it."""
    return scan_drops(
        request_intake.drops_uri,
        data_home.drop_registry_dir,
        data_home.refused_drops_dir,
        cursor,
        settle=settle,
        max_bytes=request_intake.max_drop_bytes,
    )


@sensor(
    job=request_ingest_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Watches the request drops folder (<drops>/<source>/, any fsspec URI); each new file, "
        "once two ticks see it unchanged (no half-copied file is read), becomes a partition of "
        "raw_requests and one ingest run. Identical content dropped again is recorded only; a "
        "file that cannot be a drop (unreadable, not a regular file, a symlink out of the "
        "folder, over the size cap, a source folder name unfit for a partition key) is "
        "recorded with its reason on raw_requests and in the data home's quarantine/drops, and "
        "the other files go on."
    ),
)
def request_drop_sensor(
    context: SensorEvaluationContext, data_home: DataHome, request_intake: RequestIntake
):
    scan = scan_request_drops(
        data_home, request_intake, json.loads(context.cursor or "{}"), settle=True
    )
    return drop_sensor_result(context, scan, request_drops, "raw_requests")


def batches_to_send(instance: DagsterInstance) -> list[str]:
    """Request batches registered but not yet created in Label Studio."""
    return loop_batches_to_send(instance, REQUEST_ANNOTATION, "annotation_batch")


def completed_batches(instance: DagsterInstance, client: LabelStudioClient) -> list[str]:
    """Request batches in Label Studio, not yet collected, whose every task two people have
    answered."""
    progress = batch_progress(
        instance, client, REQUEST_ANNOTATION, "annotation_batch", "annotated_batch"
    )
    return [batch_id for batch_id, (done, total) in progress.items() if total and done == total]


annotation_batch_sensor, annotation_complete_sensor = annotation_sensors(
    REQUEST_ANNOTATION,
    "",
    annotation_batch_job.name,
    annotated_batch_job.name,
    "annotation_batch",
    "annotated_batch",
)
