"""The flywheel closes: served traffic is profiled per hour with whylogs and scored against the
champion's reference; unshifted traffic requests no run, shifted traffic (another vocabulary and
class mix) requests exactly one retraining run, whose annotation candidates are the drifted
texts, and which ends with a champion Bento.

Traffic is written by the service's own log writer with `served_at` in two past hours, so that
both windows are complete when the sensor looks (the service itself is exercised in
test_serving)."""

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from dagster import AssetKey, SensorResult, SkipReason, build_sensor_context

from assets.monitoring.drift import read_drift_reports, window_partition_key
from assets.monitoring.sensors import drift_sensor, plan_retraining
from assets.resources import DataHome, Warehouse
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.monitoring.prediction_log import PredictionLogWriter, prediction_record
from ml.synthetic.requests import generate_requests
from orchestration.pipeline import PipelineRun, execute_quietly, ingest_request_drops
from tests.conftest import SERVED_TRANSFORMER, ServedPlatform

QUIET = datetime(2026, 11, 30, 9, tzinfo=UTC)
CALM = datetime(2026, 11, 30, 10, tzinfo=UTC)
SHIFTED = datetime(2026, 11, 30, 11, tzinfo=UTC)
TOPICS = [
    "football match",
    "pizza dough",
    "mountain hike",
    "guitar lesson",
    "garden roses",
    "chess club",
    "yoga retreat",
    "sourdough starter",
    "camping tent",
    "piano recital",
]
ASKS = [
    "How long should I prepare the",
    "When does the",
    "Where can I book the",
    "Any tips for the",
    "Who organises the",
    "What should I bring to the",
]
ENDINGS = ["this weekend", "next summer", "with my cousins"]


def shifted_texts(count: int) -> list[str]:
    """Requests about things a bank never hears of: another vocabulary altogether, each text
    distinct after normalization."""
    texts = [f"{a} {t} {e}" for a in ASKS for t in TOPICS for e in ENDINGS]
    assert count <= len(texts)
    return texts[:count]


def serve_into_log(
    platform: ServedPlatform, texts: list[str], hour: datetime, version: str | None = None
) -> None:
    """Answer `texts` with the champion and log each answer as the service does (as another
    model `version`'s answers, the canary's, when given)."""
    registry = Registry(platform.settings.tracking_uri, platform.settings.artifact_root)
    champion = registry.champion(REQUEST_CLASSIFIER)
    answers = registry.load(REQUEST_CLASSIFIER, champion.version).predict(
        pd.DataFrame({"text": texts})
    )
    writer = PredictionLogWriter(platform.settings.prediction_log_dir, "test", flush_seconds=60)
    writer.log(
        prediction_record(
            "classify",
            REQUEST_CLASSIFIER,
            version or champion.version,
            {"text": text},
            {"intent": intent},
            text=text,
            intent=intent,
            confidence=float(confidence),
            served_at=hour + timedelta(seconds=20 * i + (10 if version else 0)),
            variant="challenger" if version else "champion",
        )
        for i, (text, intent, confidence) in enumerate(
            zip(texts, answers["intent"], answers["confidence"], strict=True)
        )
    )
    writer.close()


def evaluate(platform: ServedPlatform, cursor: str | None):
    context = build_sensor_context(
        instance=platform.instance,
        cursor=cursor,
        resources={"monitoring": platform.defs.resources["monitoring"]},
    )
    return drift_sensor(context)


@pytest.fixture(scope="module")
def monitored(served_platform: ServedPlatform) -> ServedPlatform:
    # A sample of a large draw keeps the generator's natural class mix (a draw of 150 would
    # force every one of the 77 intents in: a near-uniform mix, itself a shift).
    calm = generate_requests(1500, seed=77, start=CALM, end=SHIFTED).sample(170, seed=0)
    serve_into_log(served_platform, calm["text"].to_list()[:150], CALM)
    # A canary's answers in the calm hour: another model's, never judged against this one's.
    serve_into_log(served_platform, shifted_texts(40), CALM, version="999")
    serve_into_log(served_platform, shifted_texts(150), SHIFTED)
    serve_into_log(served_platform, calm["text"].to_list()[150:], QUIET)
    for hour in (QUIET, CALM, SHIFTED):
        result = execute_quietly(
            served_platform.defs,
            served_platform.instance,
            "monitoring_job",
            partition=window_partition_key(hour),
        )
        assert result.success
    return served_platform


def test_unshifted_traffic_does_not_drift_and_shifted_traffic_does(
    monitored: ServedPlatform,
) -> None:
    reports = {r["window"]: r for r in read_drift_reports(monitored.defs.resources["monitoring"])}
    calm, shifted = reports[CALM.strftime("%Y-%m-%dT%H")], reports[SHIFTED.strftime("%Y-%m-%dT%H")]
    assert calm["rows"] == 150 and not calm["drifted"], calm["drifted_columns"]
    assert calm["judged_rows"] == 150 and calm["correction"] == "holm"
    assert shifted["drifted"]
    assert {"oov_rate", "embedding_distance"} <= set(shifted["drifted_columns"])
    assert calm["drop_id"] is None and shifted["drop_id"].startswith("serving-")
    assert any(r.startswith("oov_rate: ") and "median" in r for r in shifted["reasons"])
    event = monitored.instance.get_latest_materialization_event(AssetKey("drift_report"))
    metadata = event.asset_materialization.metadata
    assert "drift_chart" in metadata and "columns" in metadata
    assert metadata["verdict"].value.startswith(f"drift in {shifted['drifted_columns'][0]}")
    assert "since 2026-11-30 11:00 UTC (1 hour in a row)" in metadata["verdict"].value
    quiet = reports[QUIET.strftime("%Y-%m-%dT%H")]
    assert (quiet["rows"], quiet["drifted"], quiet["drop_id"]) == (20, False, None)
    assert quiet["note"].startswith("too little traffic: 20 answers")
    assert quiet["reference_rows"] >= 2 * 150, "the reference holds 2x the largest window"


def test_drift_requests_exactly_one_retraining_run_with_the_drifted_texts_as_candidates(
    monitored: ServedPlatform,
) -> None:
    first = evaluate(monitored, None)
    assert isinstance(first, SensorResult) and not first.run_requests, "calm hour: no run"
    waiting = evaluate(monitored, first.cursor)
    assert isinstance(waiting, SkipReason), "the drifted traffic is not ingested yet"
    run = PipelineRun()
    ingest_request_drops(
        monitored.defs, monitored.instance, DataHome(path=str(monitored.settings.data_home)), run
    )
    assert run.success and any(name.startswith("requests serving-") for name in run.results)
    fired = evaluate(monitored, first.cursor)
    assert isinstance(fired, SensorResult) and len(fired.run_requests) == 1
    request = fired.run_requests[0]
    assert request.run_key == f"retrain:{SHIFTED:%Y-%m-%dT%H}"
    assert "oov_rate" in request.tags["mlops/reason"]
    assert isinstance(evaluate(monitored, fired.cursor), SkipReason), "never twice a window"
    execute_quietly(
        monitored.defs,
        monitored.instance,
        "monitoring_job",
        partition=window_partition_key(SHIFTED),
    )
    assert isinstance(evaluate(monitored, fired.cursor), SkipReason), "a re-run changes nothing"

    config = {
        "ops": {
            **request.run_config["ops"],
            "request_classifier": {"config": SERVED_TRANSFORMER},
            "request_tuned_linear": {"config": {"svm_c": [0.5], "char_ngrams": ["2-5"]}},
        }
    }
    retraining = execute_quietly(
        monitored.defs,
        monitored.instance,
        "request_retraining_job",
        config=config,
        tags=request.tags,
    )
    assert retraining.success
    warehouse = Warehouse(path=str(monitored.settings.warehouse_path))
    batch = (
        monitored.instance.get_latest_materialization_event(AssetKey("annotation_candidates"))
        .asset_materialization.metadata["batch"]
        .value
    )
    items = warehouse.query(
        "select i.request_id, r.source, r.text from annotation_items i "
        "join stg_requests r using (request_id) where i.batch_id = ?",
        [batch],
    )
    assert items.height == 50 and set(items["source"]) == {"serving"}
    assert set(items["text"]) <= set(shifted_texts(150))
    materialized = {
        e.asset_key.to_user_string() for e in retraining.get_asset_materialization_events()
    }
    assert {"request_classifier_promotion", "champion_bento", "reference_profiles"} <= materialized


def test_with_persistence_2_a_drifted_hour_alone_requests_nothing_and_the_second_does() -> None:
    now = datetime(2026, 11, 30, 15, tzinfo=UTC)

    def hour(h: int, drifted: bool) -> dict:
        start = datetime(2026, 11, 30, h, tzinfo=UTC)
        return {
            "window": f"{start:%Y-%m-%dT%H}",
            "window_start": start.isoformat(),
            "complete": True,
            "drifted": drifted,
            "drifted_columns": ["oov_rate"] if drifted else [],
            "drop_id": f"d{h}",
        }

    drops = {"d11", "d12", "d13"}
    first = plan_retraining([hour(11, True), hour(12, False)], {}, drops, now, 6, persistence=2)
    assert (
        first.window is None
        and "1 drifted hour(s) in a row, 2 wanted" in first.notes["2026-11-30T11"]
    )
    both = [hour(11, True), hour(12, False), hour(13, True), hour(14, True)]
    second = plan_retraining(both, first.cursor, drops | {"d14"}, now, 6, persistence=2)
    assert second.window == "2026-11-30T14", second.notes
    assert "2 wanted" in second.notes["2026-11-30T13"]


def test_a_drifted_window_within_the_minimum_interval_requests_no_run() -> None:
    now = datetime(2026, 11, 30, 14, tzinfo=UTC)
    report = {
        "window": "2026-11-30T13",
        "window_start": datetime(2026, 11, 30, 13, tzinfo=UTC).isoformat(),
        "complete": True,
        "drifted": True,
        "drop_id": "d",
    }
    plan = plan_retraining(
        [{**report, "drifted_columns": ["oov_rate"]}],
        {"decided": [], "last_retraining_at": (now - timedelta(hours=1)).isoformat()},
        {"d"},
        now,
        min_interval_hours=6,
    )
    assert plan.window is None
    assert "within 6 h" in plan.notes["2026-11-30T13"]
    assert json.loads(json.dumps(plan.cursor))["decided"] == ["2026-11-30T13"]
    open_window = plan_retraining(
        [{**report, "complete": False, "drifted_columns": ["oov_rate"]}], {}, {"d"}, now, 6
    )
    assert open_window.window is None and not open_window.notes, "an hour in progress waits"
