"""Sensors of the request domain: new files dropped, batches to send to Label Studio, and
batches fully annotated."""

import json

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.drop_sensors import drop_sensor_result
from assets.requests.annotation import annotation_batches, project_title
from assets.requests.intake import request_drops
from assets.requests.jobs import (
    annotated_batch_job,
    annotation_batch_job,
    request_ingest_job,
)
from assets.resources import (
    DataHome,
    LabelStudioResource,
    RequestIntake,
)
from ml.annotation.agreement import doubly_annotated
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
    """Batches registered but not yet created in Label Studio."""
    registered = instance.get_dynamic_partitions(annotation_batches.name)
    sent = instance.get_materialized_partitions(AssetKey("annotation_batch"))
    return sorted(set(registered) - sent)


def batch_progress(
    instance: DagsterInstance, client: LabelStudioClient
) -> dict[str, tuple[int, int]]:
    """(tasks done by two people, tasks) of every batch in Label Studio not yet collected."""
    sent = instance.get_materialized_partitions(AssetKey("annotation_batch"))
    collected = instance.get_materialized_partitions(AssetKey("annotated_batch"))
    progress = {}
    for batch_id in sorted(sent - collected):
        project = client.find_project(project_title(batch_id))
        tasks = client.tasks(project) if project is not None else []
        progress[batch_id] = (sum(doubly_annotated(t.annotations) for t in tasks), len(tasks))
    return progress


def completed_batches(instance: DagsterInstance, client: LabelStudioClient) -> list[str]:
    """Batches in Label Studio, not yet collected, whose every task two people have answered."""
    return [
        batch_id
        for batch_id, (done, total) in batch_progress(instance, client).items()
        if total and done == total
    ]


@sensor(
    job=annotation_batch_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Creates each newly registered annotation batch's tasks in Label Studio.",
)
def annotation_batch_sensor(context: SensorEvaluationContext):
    batches = batches_to_send(context.instance)
    if not batches:
        return SkipReason("no new annotation batch")
    return [RunRequest(partition_key=b, run_key=f"send:{b}") for b in batches]


@sensor(
    job=annotated_batch_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Notices when every task of a batch has two annotations by distinct people and "
        "launches its collection and kappa gate, once per batch (cursor and run key)."
    ),
)
def annotation_complete_sensor(context: SensorEvaluationContext, label_studio: LabelStudioResource):
    cursor = json.loads(context.cursor or "{}")
    fired, seen = set(cursor.get("fired", [])), cursor.get("progress", {})
    progress = batch_progress(context.instance, label_studio.client())
    changed = {b: p for b, p in progress.items() if seen.get(b) != list(p)}
    complete = [
        b for b, (done, total) in progress.items() if total and done == total and b not in fired
    ]
    if not complete and not changed:
        return SkipReason("no progress on open annotation batches")
    return SensorResult(
        run_requests=[RunRequest(partition_key=b, run_key=f"annotated:{b}") for b in complete],
        asset_events=[
            AssetObservation(
                asset_key="annotation_batch",
                partition=b,
                metadata={"tasks_done": done, "tasks": total, "progress": f"{done} / {total}"},
            )
            for b, (done, total) in changed.items()
        ],
        cursor=json.dumps(
            {
                "fired": sorted(fired | set(complete)),
                "progress": {b: list(p) for b, p in progress.items()},
            }
        ),
    )
