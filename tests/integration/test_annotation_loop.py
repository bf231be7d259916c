"""The annotation loop with a real Label Studio: candidates → batch → two annotators → the
sensor fires once → kappa gate. A low-agreement batch is never merged: it comes back."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import requests
from dagster import (
    AssetKey,
    SensorResult,
    SkipReason,
    build_sensor_context,
)

from assets.requests.sensors import (
    annotation_complete_sensor,
    batches_to_send,
    completed_batches,
    scan_request_drops,
)
from assets.resources import DataHome, build_resources
from ml.data.lineage_snapshot import complete_snapshots, snapshots_dir, verify_snapshot
from ml.monitoring.prediction_log import PredictionLogWriter, prediction_record, read_predictions
from ml.requests.taxonomy import synthetic_taxonomy
from ml.security.erasure import erasure_records
from orchestration.labelstudio import LabelStudioServer
from orchestration.simulated_annotators import SIMULATED_DOMAIN, simulated_annotator
from tests.conftest import Loop, annotate


def test_hidden_labels_are_kept_aside_and_requests_arrive_unlabeled(loop: Loop) -> None:
    unlabeled = loop.warehouse.query(
        "select count(*) from validated_requests "
        "where drop_id like 'synthetic_unlabeled-%' and intent is null"
    ).item()
    hidden = loop.warehouse.query("select count(*) from hidden_labels").item()
    assert unlabeled > 70 and hidden == unlabeled


def test_an_agreeing_batch_is_collected_once_and_accepted(loop: Loop) -> None:
    batch = loop.new_batch(size=12)
    retry = loop.run("annotation_batch_job", batch)
    assert retry.success
    sent = loop.instance.get_latest_materialization_event(AssetKey("annotation_batch"))
    assert sent.asset_materialization.metadata["tasks_created_now"].value == 0
    assert completed_batches(loop.instance, loop.admin) == []

    annotate(loop, batch, error_rates=(0.0, 0.05))
    resources = {"label_studio": build_resources(loop.settings)["label_studio"]}
    first = annotation_complete_sensor(
        build_sensor_context(instance=loop.instance, resources=resources)
    )
    assert isinstance(first, SensorResult)
    assert [(r.partition_key, r.run_key) for r in first.run_requests] == [
        (batch, f"annotated:{batch}")
    ]
    again = annotation_complete_sensor(
        build_sensor_context(instance=loop.instance, cursor=first.cursor, resources=resources)
    )
    assert isinstance(again, SkipReason), "the sensor never fires twice for a batch"

    result = loop.run("annotated_batch_job", batch)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["kappa"].value >= 0.7
    assert loop.status(batch) == {"accepted"}
    assert (
        loop.warehouse.query(
            "select count(*) from batch_annotations where batch_id = ?", [batch]
        ).item()
        == 24
    )
    # Label Studio's own timing of each answer (the simulated annotators take 2–20 s): what
    # annotation cost, for the ROI assets.
    spent = loop.warehouse.query(
        "select min(lead_seconds), max(lead_seconds) from batch_annotations where batch_id = ?",
        [batch],
    ).row(0)
    assert 2 <= spent[0] <= spent[1] <= 20, spent
    metadata = loop.instance.get_latest_materialization_event(
        AssetKey("annotated_batch")
    ).asset_materialization.metadata
    assert "data:image/png;base64," in metadata["confusion"].value
    assert metadata["status"].value == "accepted"


def test_a_low_agreement_batch_is_blocked_and_comes_back_as_a_new_batch(loop: Loop) -> None:
    batch = loop.new_batch(size=10)
    annotate(loop, batch, error_rates=(0.9, 0.9))
    result = loop.run("annotated_batch_job", batch)
    assert not result.success, "a blocking check failed: nothing downstream may use this batch"
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["kappa"].value < 0.7
    assert loop.status(batch) == {"blocked"}
    requeued = f"{batch}-r2"
    assert check.metadata["requeued_as"].value == requeued
    assert batches_to_send(loop.instance) == [requeued]
    items = loop.warehouse.query(
        "select batch_id, request_id, ext_id, round from annotation_items where batch_id in (?, ?)",
        [batch, requeued],
    )
    old, new = (items.filter(pl.col("batch_id") == b) for b in (batch, requeued))
    assert sorted(old["request_id"]) == sorted(new["request_id"])
    assert set(old["ext_id"]).isdisjoint(new["ext_id"])
    assert set(new["round"]) == {2}
    archived = loop.warehouse.query(
        "select count(*) from batch_annotations where batch_id = ?", [batch]
    ).item()
    assert archived == 20, "the blocked batch keeps its annotations"
    assert loop.run("annotation_batch_job", requeued).success


def test_disagreements_are_adjudicated_by_a_third_person_and_labels_are_versioned(
    loop: Loop,
) -> None:
    batch = loop.new_batch(size=12)
    annotate(loop, batch, error_rates=(0.0, 0.5))
    lenient = {"ops": {"annotated_batch": {"config": {"kappa_threshold": 0.4}}}}
    assert loop.run("annotated_batch_job", batch, config=lenient).success
    collected = loop.instance.get_latest_materialization_event(AssetKey("annotated_batch"))
    disagreements = collected.asset_materialization.metadata["disagreements"].value
    assert disagreements >= 2
    assert collected.asset_materialization.metadata["reviews_opened"].value == disagreements

    first = loop.run(
        "labeled_requests_job",
        config={"ops": {"labeled_requests": {"config": {"kappa_threshold": 0.4}}}},
    )
    assert first.success
    v1 = loop.instance.get_latest_materialization_event(
        AssetKey("labeled_requests")
    ).asset_materialization.metadata
    assert v1["version"].value == 1
    assert v1["pending_review"].value == disagreements, "no review yet: disagreements wait"
    assert v1["dagster/row_count"].value == 12 - disagreements

    review, answers = loop.review(batch)
    intents = synthetic_taxonomy().intents
    one_of_the_pair = simulated_annotator(loop.admin, "ann-0", 0.0, seed=3)
    assert one_of_the_pair.annotate(review, answers, intents, limit=1) == 1
    reviewer = simulated_annotator(loop.admin, "cid-0", 0.0, seed=4)

    second = loop.run("labeled_requests_job")
    assert second.success
    v2 = loop.instance.get_latest_materialization_event(
        AssetKey("labeled_requests")
    ).asset_materialization.metadata
    assert "ann-0@" in v2["withdrawn_reviews"].value, "a review by one of the pair is discarded"
    assert v2["version"].value == 1 and not v2["new_version"].value

    assert reviewer.annotate(review, answers, intents) == disagreements, "the withdrawn one is back"
    assert loop.run("labeled_requests_job").success
    v3 = loop.instance.get_latest_materialization_event(
        AssetKey("labeled_requests")
    ).asset_materialization.metadata
    assert v3["version"].value == 2 and v3["pending_review"].value == 0
    per_annotator = v3["per_annotator"].value
    assert (
        "per hour" in per_annotator
        and "| ann-0@simulated.annotators.local | 12 / " in per_annotator
    )
    assert v3["adjudicated"].value == disagreements

    labels = loop.warehouse.query("select * from labeled_requests where version = 2")
    truth = loop.warehouse.query("select request_id, intent as truth from hidden_labels")
    joined = labels.join(truth, on="request_id")
    assert joined.height == 12
    assert (joined["intent"] == joined["truth"]).all(), (
        "the careful annotator and the reviewer were right"
    )
    adjudicated = labels.filter(pl.col("adjudicated"))
    assert set(adjudicated["adjudicator"]) == {reviewer.email}
    assert (
        loop.warehouse.query("select count(*) from labeled_requests where version = 1").item()
        == 12 - disagreements
    )


def test_labels_reach_the_request_splits_with_their_source_and_version(loop: Loop) -> None:
    batch = loop.new_batch(size=8)
    annotate(loop, batch, error_rates=(0.0, 0.0))
    assert loop.run("annotated_batch_job", batch).success
    assert loop.run("labeled_requests_job").success
    assert loop.run("warehouse_job").success
    splits = loop.warehouse.query(
        "select label_source, label_version, count(*) as n from request_splits "
        "where label_source = 'annotation' group by all"
    )
    assert splits.rows() == [("annotation", 1, 8)]


def test_deleted_tasks_and_foreign_labels_are_reported_not_fatal(
    loop: Loop, label_studio: LabelStudioServer
) -> None:
    batch = loop.new_batch(size=6)
    project = loop.admin.find_project(f"Requests {batch}")
    deleted = loop.admin.tasks(project)[0]
    loop.admin.sdk.tasks.delete(id=deleted.task_id)
    annotate(loop, batch, error_rates=(0.0, 0.0))
    stray = simulated_annotator(loop.admin, "stray", 0.0, seed=9)
    other = loop.admin.tasks(project)[0]
    stray.client.submit_choice(other.task_id, "not_an_intent", lead_time=1.0)
    assert completed_batches(loop.instance, loop.admin) == [batch]

    result = loop.run("annotated_batch_job", batch)
    assert result.success
    metadata = loop.instance.get_latest_materialization_event(
        AssetKey("annotated_batch")
    ).asset_materialization.metadata
    assert metadata["deleted_tasks"].value == deleted.ext_id
    assert "label not in taxonomy | 1" in metadata["not_counted"].value
    assert metadata["doubly_annotated"].value == 5

    token = label_studio.config.token
    for run in loop.instance.get_runs():
        for record in loop.instance.all_logs(run.run_id):
            assert token not in str(record), "the token must never reach logs or metadata"


def test_only_allow_listed_annotators_on_the_batchs_own_unchanged_tasks_are_counted(
    loop: Loop, label_studio: LabelStudioServer
) -> None:
    batch = loop.new_batch(size=6)
    project = loop.admin.find_project(f"Requests {batch}")
    walk_in = ("walk-in@outside.example", "a-password-1")
    with requests.Session() as browser:  # the sign-up form, without an invite link
        page = f"{label_studio.config.url}/user/signup/"
        browser.get(page, timeout=30)
        browser.post(
            page,
            data={
                "email": walk_in[0],
                "password": walk_in[1],
                "csrfmiddlewaretoken": browser.cookies.get("csrftoken", ""),
            },
            headers={"Referer": page},
            timeout=30,
        )
    with pytest.raises(PermissionError, match="could not sign up or log in"):
        loop.admin.log_in(*walk_in)  # no account was made
    outsider = simulated_annotator(loop.admin, "outsider", 0.0, seed=11, domain="outside.example")
    first, edited = loop.admin.tasks(project)[:2]
    loop.admin.sdk.tasks.update(id=edited.task_id, data={**edited.data, "text": "changed"})
    annotate(loop, batch, error_rates=(0.0, 0.0))
    loop.admin.import_missing(
        project, [{"data": {"ext_id": "other:r1", "request_id": "r1", "text": "not ours"}}]
    )
    outsider.client.submit_choice(first.task_id, "card_arrival", lead_time=1.0)

    assert loop.run("annotated_batch_job", batch).success
    metadata = loop.instance.get_latest_materialization_event(
        AssetKey("annotated_batch")
    ).asset_materialization.metadata
    assert metadata["refused_annotations"].value == 1
    assert metadata["edited_tasks"].value == 1
    assert metadata["foreign_tasks"].value == 1
    untrusted = metadata["untrusted"].value
    assert "outsider@outside.example, not allow-listed" in untrusted
    assert f"task {edited.task_id} ({edited.ext_id}): text changed since import" in untrusted
    assert "(other:r1): not an item of this batch" in untrusted
    assert metadata["doubly_annotated"].value == 5, "the edited task is not counted"
    counted = loop.warehouse.query(
        "select distinct annotator from batch_annotations where batch_id = ?", [batch]
    )["annotator"].to_list()
    assert counted and all(a.endswith(f"@{SIMULATED_DOMAIN}") for a in counted)


def test_an_outage_mid_batch_fails_clearly_and_the_retry_loses_and_duplicates_nothing(
    loop: Loop, label_studio: LabelStudioServer
) -> None:
    batch = loop.new_batch(size=6)
    project = loop.admin.find_project(f"Requests {batch}")
    early = simulated_annotator(loop.admin, "early", 0.0, seed=5)
    assert early.annotate(project, loop.answers(batch), synthetic_taxonomy().intents, limit=3) == 3
    label_studio.stop()
    try:
        during = loop.run("annotation_batch_job", batch)
        assert not during.success
        failure = " ".join(
            e.event_specific_data.error.to_string()
            for e in during.all_events
            if e.event_type_value == "STEP_FAILURE"
        )
        assert f"Label Studio at {label_studio.config.url}" in failure
        assert "failed after 5 attempts" in failure
        assert label_studio.config.token not in failure
    finally:
        label_studio.restart()
    assert loop.run("annotation_batch_job", batch).success
    tasks = loop.admin.tasks(project)
    assert len(tasks) == 6, "the retry created no task twice"
    assert sum(len(t.annotations) for t in tasks) == 3, "no annotation was lost"


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_an_erased_request_leaves_every_store_and_the_erasure_is_recorded(loop: Loop) -> None:
    batch = loop.new_batch(size=6)
    items = loop.warehouse.query(
        "select i.request_id, r.text from annotation_items i join validated_requests r "
        "using (request_id) where i.batch_id = ? and not exists (select 1 from "
        "validated_requests o where o.request_id <> r.request_id and contains(o.text, r.text)) "
        "order by i.request_id",
        [batch],
    )
    erased_id, erased_text = items.row(0)
    kept_id, kept_text = items.row(1)
    home = loop.settings.data_home
    served = datetime.now(UTC)
    writer = PredictionLogWriter(loop.settings.prediction_log_dir, "w", flush_seconds=60)
    for request_id, text in ((erased_id, erased_text), (kept_id, kept_text)):
        writer.log(
            [
                prediction_record(
                    "classify",
                    "request_classifier",
                    "1",
                    {"text": text},
                    {},
                    text=text,
                    intent="card_arrival",
                    confidence=0.9,
                    request_id=request_id,
                    served_at=served,
                )
            ]
        )
    writer.close()
    features = home / "profiles" / "serving" / f"{served:%Y-%m-%dT%H}.parquet"
    features.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {"request_id": [erased_id, kept_id], "text": [erased_text, kept_text]}
    ).write_parquet(features)
    assert loop.run("lineage_snapshot_job").success
    needle = erased_text.encode()
    assert _files_holding(home / "drops", needle) and _files_holding(home / "snapshots", needle)

    config = {
        "ops": {
            "erase_requests": {
                "config": {
                    "request_ids": [erased_id],
                    "requested_by": "ticket DSR-1",
                    "reason": "the customer asked for erasure",
                }
            }
        }
    }
    assert loop.run("erasure_job", config=config).success

    project = loop.admin.find_project(f"Requests {batch}")
    in_label_studio = {task.data["request_id"] for task in loop.admin.tasks(project)}
    assert erased_id not in in_label_studio and kept_id in in_label_studio
    assert _files_holding(home, needle) == [], "a file of the data home still holds the text"
    assert _files_holding(home, kept_text.encode()), "erasure took more than the one request"
    kept = read_predictions(
        loop.settings.prediction_log_dir, served - timedelta(hours=1), served + timedelta(hours=1)
    )
    assert kept["request_id"].to_list() == [kept_id]
    (snapshot,) = complete_snapshots(snapshots_dir(home))
    verify_snapshot(snapshot)  # the manifest follows the erased files: a restore still checks
    rescan = scan_request_drops(DataHome(path=str(home)), loop.defs.resources["request_intake"], {})
    assert not [r for r in rescan.registrations if r.is_new], "a rewritten drop is not a new drop"

    assert loop.run("erasure_job", config=config).success
    first, second = erasure_records(home / "erasure")
    assert first["request_ids"] == [erased_id] and first["requested_by"] == "ticket DSR-1"
    assert "dagster run" in first["erased_by"]
    assert first["removed"]["label_studio_tasks"] == 1
    assert first["removed"]["warehouse.validated_requests"] == 1
    assert first["removed"]["prediction_logs"] == 1 and first["removed"]["drops"] == 1
    assert sum(second["removed"].values()) == 0, "erasing again removes nothing more"
    assert erased_text not in json.dumps(first)
