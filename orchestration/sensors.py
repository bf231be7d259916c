"""Sensors: the platform reacting to the world (new files dropped, batches annotated, champions
moved, traffic drifting)."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.annotation import annotation_batches, labeled_requests, project_title
from assets.monitoring import (
    DEMAND_DRIFT_FILE,
    SERVING_SOURCE,
    drift_report,
    read_drift_reports,
)
from assets.requests import request_drops
from assets.resources import (
    BentoStore,
    DataHome,
    LabelStudioResource,
    ModelRegistry,
    Monitoring,
    RequestIntake,
)
from assets.warehouse_models import warehouse_dbt_models
from ml.annotation.agreement import doubly_annotated
from ml.annotation.label_studio_client import LabelStudioClient
from ml.data.ingestion import DropScan, RefusedFile, scan_drops
from ml.lifecycle.registered_models import champion_versions
from orchestration.jobs import (
    annotated_batch_job,
    annotation_batch_job,
    champion_bento_job,
    demand_models_job,
    request_ingest_job,
    request_retraining_job,
)
from serving.package import bento_version, current_bento


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


def refusal_observation(refused: RefusedFile) -> AssetObservation:
    """A refused file on raw_requests' timeline: it has no partition (it is not a drop)."""
    return AssetObservation(
        asset_key="raw_requests",
        metadata={
            "refused_file": refused.uri,
            "source_folder": refused.source,
            "reason": refused.reason,
            "quarantine_manifest": refused.manifest,
            "note": "not ingested; fix or replace the file and it is looked at again",
        },
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
    new, runs = [], []
    observations = [refusal_observation(refused) for refused in scan.refusals]
    for registration in scan.registrations:
        drop_id = registration.drop.drop_id
        known = context.instance.has_dynamic_partition(request_drops.name, drop_id)
        if registration.is_new or not known:
            new.append(drop_id)
            runs.append(RunRequest(partition_key=drop_id, run_key=drop_id))
        elif registration.is_redrop:
            observations.append(
                AssetObservation(
                    asset_key="raw_requests",
                    partition=drop_id,
                    metadata={
                        "redropped_as": registration.seen_uri,
                        "note": "identical content dropped again; not re-ingested",
                    },
                )
            )
    cursor = json.dumps(scan.cursor)
    if not runs and not observations:
        if cursor == (context.cursor or "{}"):
            return SkipReason("no new or changed files in the drops folder")
        return SensorResult(
            skip_reason=f"{len(scan.pending)} file(s) new or still changing: each is "
            "registered once a tick sees it unchanged",
            cursor=cursor,
        )
    return SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[request_drops.build_add_request(new)] if new else [],
        asset_events=observations,
        cursor=cursor,
    )


warehouse_automation_sensor = AutomationConditionSensorDefinition(
    "warehouse_automation_sensor",
    target=AssetSelection.assets(warehouse_dbt_models, labeled_requests),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Rebuilds the dbt models once new validated data lands (unless a blocking check upstream "
        "failed), and the labeled data once a batch is collected."
    ),
)


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


@sensor(
    job=champion_bento_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Notices when a champion alias moves (a gate's promotion, a rollback) and requests the "
        "Bento of the new champions, once per set of versions (run key)."
    ),
)
def champion_change_sensor(
    context: SensorEvaluationContext, model_registry: ModelRegistry, bento_store: BentoStore
):
    versions = champion_versions(model_registry.registry())
    if not any(versions.values()):
        return SkipReason("no champion yet")
    wanted = bento_version(versions)
    current = current_bento(Path(bento_store.home))
    if current is not None and str(current["bento"]).endswith(f":{wanted}"):
        return SkipReason(f"the champion Bento {current['bento']} is current")
    return RunRequest(run_key=f"bento:{wanted}", tags={"mlops/champions": wanted})


@dataclass(frozen=True)
class RetrainingPlan:
    window: str | None
    """The drifted window that triggers a retraining run now, if any."""
    reason: str
    cursor: dict[str, object]
    notes: dict[str, str]
    """Per window newly decided: why it does or does not trigger a run."""


def plan_retraining(
    reports: list[dict[str, object]],
    cursor: dict[str, object],
    ingested_drops: set[str],
    now: datetime,
    min_interval_hours: float,
) -> RetrainingPlan:
    """Decide on each complete, not yet decided window: no drift → done; drift whose traffic is
    not ingested yet → wait; drift within the minimum interval of the last retraining → noted,
    no run; else one run (at most one per evaluation)."""
    decided = set(cursor.get("decided", []))
    last = cursor.get("last_retraining_at")
    chosen, reason, notes = None, "", {}
    for report in reports:
        window = str(report["window"])
        if window in decided or not report.get("complete"):
            continue
        if not report["drifted"]:
            notes[window] = str(report.get("note", "no drift"))
        elif report["drop_id"] not in ingested_drops:
            continue  # decided once its traffic is ingested (the drop sensor's run)
        elif chosen is not None:
            notes[window] = f"drift; covered by the retraining run requested for {chosen}"
        elif last and now - datetime.fromisoformat(str(last)) < timedelta(hours=min_interval_hours):
            notes[window] = (
                f"drift in {', '.join(report['drifted_columns'])}; no run: within "
                f"{min_interval_hours:g} h of the last retraining ({last})"
            )
        else:
            chosen = window
            reason = f"drift in {', '.join(report['drifted_columns'])} in window {window}"
            notes[window] = f"retraining requested: {reason}"
            last = now.isoformat()
        decided.add(window)
    return RetrainingPlan(
        chosen,
        reason,
        {"decided": sorted(decided), "last_retraining_at": last},
        notes,
    )


RETRAINING_CANDIDATES = {"batch_size": 50, "prefer_sources": [SERVING_SOURCE]}


@sensor(
    job=request_retraining_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Reads each complete hour's drift report; when a threshold is crossed (and the drifted "
        "traffic has been ingested as a `serving` drop) it requests one retraining run: "
        "re-annotation candidates from the drifted traffic, train, gate, Bento. Never twice for "
        "a window (cursor and run key), at most once per minimum interval; why it fired is "
        "recorded on the run's tags and as an observation of drift_report."
    ),
)
def drift_sensor(context: SensorEvaluationContext, monitoring: Monitoring):
    reports = read_drift_reports(monitoring)
    partitions = {str(report["window"]): str(report["partition"]) for report in reports}
    plan = plan_retraining(
        reports,
        json.loads(context.cursor or "{}"),
        context.instance.get_materialized_partitions(AssetKey("validated_requests")),
        datetime.now(UTC),
        monitoring.retrain_min_interval_hours,
    )
    observations = [
        AssetObservation(
            asset_key=drift_report.key,
            partition=partitions[window],
            metadata={"drift_sensor": note},
        )
        for window, note in plan.notes.items()
    ]
    runs = []
    if plan.window is not None:
        runs.append(
            RunRequest(
                run_key=f"retrain:{plan.window}",
                run_config={"ops": {"annotation_candidates": {"config": RETRAINING_CANDIDATES}}},
                tags={
                    "mlops/trigger": "drift",
                    "mlops/drift_window": plan.window,
                    "mlops/reason": plan.reason[:250],
                },
            )
        )
    if not runs and not observations:
        return SkipReason("no newly complete drift report to act on")
    return SensorResult(
        run_requests=runs, asset_events=observations, cursor=json.dumps(plan.cursor)
    )


@sensor(
    job=demand_models_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Requests one demand retraining run when the champion's realized forecast error crosses "
        "its threshold, once per forecast origin (run key)."
    ),
)
def demand_drift_sensor(context: SensorEvaluationContext, monitoring: Monitoring):
    path = monitoring.profiles / DEMAND_DRIFT_FILE
    if not path.exists():
        return SkipReason("no demand drift evaluation yet")
    signal = json.loads(path.read_text(encoding="utf-8"))
    if not signal["drifted"]:
        return SkipReason(f"realized WAPE {signal['wape']:.3f} within {signal['threshold']}")
    key = f"demand:{signal['model_version']}:{signal['forecast_origin']}"
    return RunRequest(
        run_key=key,
        tags={
            "mlops/trigger": "drift",
            "mlops/reason": f"realized WAPE {signal['wape']:.3f} > {signal['threshold']}",
        },
    )
