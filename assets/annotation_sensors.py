"""The annotation loop's two sensors, the same for every domain: a newly registered batch is
sent to Label Studio, and a batch whose every task two people have answered is collected and
gated, once (cursor and run key)."""

import json

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.annotation_loop import AnnotationLoop
from assets.resources import LabelStudioResource
from ml.annotation.agreement import doubly_annotated
from ml.annotation.label_studio_client import LabelStudioClient


def batches_to_send(instance: DagsterInstance, loop: AnnotationLoop, sent_asset: str) -> list[str]:
    """Batches registered but not yet created in Label Studio."""
    registered = instance.get_dynamic_partitions(loop.partitions.name)
    sent = instance.get_materialized_partitions(AssetKey(sent_asset))
    return sorted(set(registered) - sent)


def batch_progress(
    instance: DagsterInstance,
    client: LabelStudioClient,
    loop: AnnotationLoop,
    sent_asset: str,
    collected_asset: str,
) -> dict[str, tuple[int, int]]:
    """(tasks done by two people, tasks) of every batch in Label Studio not yet collected."""
    sent = instance.get_materialized_partitions(AssetKey(sent_asset))
    collected = instance.get_materialized_partitions(AssetKey(collected_asset))
    progress = {}
    for batch_id in sorted(sent - collected):
        project = client.find_project(loop.project_title(batch_id))
        tasks = client.tasks(project) if project is not None else []
        progress[batch_id] = (sum(doubly_annotated(t.annotations) for t in tasks), len(tasks))
    return progress


def annotation_sensors(
    loop: AnnotationLoop,
    prefix: str,
    batch_job: str,
    collect_job: str,
    sent_asset: str,
    collected_asset: str,
) -> tuple[SensorDefinition, SensorDefinition]:
    """`<prefix>annotation_batch_sensor` and `<prefix>annotation_complete_sensor` of a loop,
    launching the jobs named `batch_job` and `collect_job`."""

    @sensor(
        name=f"{prefix}annotation_batch_sensor",
        job_name=batch_job,
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Creates each newly registered annotation batch's tasks in Label Studio.",
    )
    def batch_sensor(context: SensorEvaluationContext):
        batches = batches_to_send(context.instance, loop, sent_asset)
        if not batches:
            return SkipReason("no new annotation batch")
        return [RunRequest(partition_key=b, run_key=f"send:{b}") for b in batches]

    @sensor(
        name=f"{prefix}annotation_complete_sensor",
        job_name=collect_job,
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Notices when every task of a batch has two annotations by distinct people and "
            "launches its collection and kappa gate, once per batch (cursor and run key)."
        ),
    )
    def complete_sensor(context: SensorEvaluationContext, label_studio: LabelStudioResource):
        cursor = json.loads(context.cursor or "{}")
        fired, seen = set(cursor.get("fired", [])), cursor.get("progress", {})
        progress = batch_progress(
            context.instance, label_studio.client(), loop, sent_asset, collected_asset
        )
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
                    asset_key=sent_asset,
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

    return batch_sensor, complete_sensor
