"""Sensors that turn drift into retraining, for requests, cell images and demand."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    AssetObservation,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.defects.jobs import defect_retraining_job
from assets.demand.jobs import demand_models_job
from assets.monitoring.drift import (
    DEMAND_DRIFT_FILE,
    SERVING_SOURCE,
    demand_drift_verdict,
    drift_report,
    drifted_since,
    drifted_starts,
    hours_between,
    read_drift_reports,
)
from assets.monitoring.image_drift import IMAGES, defect_image_drift
from assets.requests.jobs import request_retraining_job
from assets.resources import Monitoring
from ml.data import objects


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
    persistence: int = 1,
) -> RetrainingPlan:
    """Decide on each complete, not yet decided window: no drift → done; drift in fewer than
    `persistence` consecutive hours → noted, no run; drift whose traffic is not ingested yet →
    wait; drift within the minimum interval of the last retraining → noted, no run; else one
    run (at most one per evaluation)."""
    decided = set(cursor.get("decided", []))
    last = cursor.get("last_retraining_at")
    chosen, reason, notes = None, "", {}
    drifted = drifted_starts(reports)
    for report in reports:
        window = str(report["window"])
        if window in decided or not report.get("complete"):
            continue
        start = datetime.fromisoformat(str(report["window_start"]))
        in_a_row = (
            hours_between(drifted_since(drifted, start), start) + 1 if report["drifted"] else 0
        )
        if not report["drifted"]:
            notes[window] = str(report.get("note", "no drift"))
        elif in_a_row < persistence:
            notes[window] = (
                f"drift in {', '.join(report['drifted_columns'])}; no run: {in_a_row} drifted "
                f"hour(s) in a row, {persistence} wanted (drift_persistence)"
            )
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


@dataclass(frozen=True)
class DriftLoop:
    """One domain's way from drift to retraining: where its drift reports live, which asset
    says a drop is ingested, and which op of its retraining job takes the candidates' config."""

    domain: tuple[str, ...]
    """The reports' prefix in the profile store (() for requests)."""
    report_asset: AssetKey
    validated: AssetKey
    candidates_op: str
    run_key: str
    """Each run's key: this and the drifted window (never twice a window)."""


REQUEST_LOOP = DriftLoop(
    (), drift_report.key, AssetKey("validated_requests"), "annotation_candidates", "retrain"
)
DEFECT_LOOP = DriftLoop(
    (IMAGES,),
    defect_image_drift.key,
    AssetKey("validated_defect_images"),
    "defect_annotation_candidates",
    "retrain-defects",
)


def retraining_request(
    context: SensorEvaluationContext, monitoring: Monitoring, loop: DriftLoop, sensor_name: str
) -> SensorResult | SkipReason:
    """`plan_retraining` on `loop`'s reports: at most one run requested, and why each newly
    decided window does or does not trigger one recorded on its drift asset."""
    reports = read_drift_reports(monitoring, *loop.domain)
    partitions = {str(report["window"]): str(report["partition"]) for report in reports}
    plan = plan_retraining(
        reports,
        json.loads(context.cursor or "{}"),
        context.instance.get_materialized_partitions(loop.validated),
        datetime.now(UTC),
        monitoring.retrain_min_interval_hours,
        monitoring.drift_persistence,
    )
    observations = [
        AssetObservation(
            asset_key=loop.report_asset,
            partition=partitions[window],
            metadata={sensor_name: note},
        )
        for window, note in plan.notes.items()
    ]
    runs = []
    if plan.window is not None:
        runs.append(
            RunRequest(
                run_key=f"{loop.run_key}:{plan.window}",
                run_config={"ops": {loop.candidates_op: {"config": RETRAINING_CANDIDATES}}},
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
    job=request_retraining_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Reads each complete hour's drift report; when it drifted (for `drift_persistence` hours "
        "in a row, and the drifted traffic has been ingested as a `serving` drop) it requests "
        "one retraining run: "
        "re-annotation candidates from the drifted traffic, train, gate, Bento. Never twice for "
        "a window (cursor and run key), at most once per minimum interval; why it fired is "
        "recorded on the run's tags and as an observation of drift_report."
    ),
)
def drift_sensor(context: SensorEvaluationContext, monitoring: Monitoring):
    return retraining_request(context, monitoring, REQUEST_LOOP, "drift_sensor")


@sensor(
    job=defect_retraining_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "The drift sensor for cell images: reads each complete hour's defect_image_drift; when "
        "it drifted (for `drift_persistence` hours in a row, and the drifted images have been "
        "ingested as a `serving` image drop) it requests one defect retraining run: "
        "re-annotation candidates from the drifted images, train, gate, Bento. Never twice for "
        "a window, at most once per minimum interval; why is recorded on the run's tags and "
        "as an observation of defect_image_drift."
    ),
)
def defect_drift_sensor(context: SensorEvaluationContext, monitoring: Monitoring):
    return retraining_request(context, monitoring, DEFECT_LOOP, "defect_drift_sensor")


@sensor(
    job=demand_models_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Requests one demand retraining run when the champion's realized forecast errors drift "
        "from its backtest errors, once per forecast origin (run key)."
    ),
)
def demand_drift_sensor(context: SensorEvaluationContext, monitoring: Monitoring):
    path = monitoring.profile(DEMAND_DRIFT_FILE)
    if not objects.exists(path):
        return SkipReason("no demand drift evaluation yet")
    signal = objects.read_json(path)
    if not signal["drifted"]:
        return SkipReason(demand_drift_verdict(signal))
    key = f"demand:{signal['model_version']}:{signal['forecast_origin']}"
    return RunRequest(
        run_key=key,
        tags={"mlops/trigger": "drift", "mlops/reason": "; ".join(signal["reasons"])[:1000]},
    )
