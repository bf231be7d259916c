"""The S3-compatible object store, for real: `rclone serve s3` started by the tests, objects on
its disk. Request drops read from it land exactly as from local disk; MLflow artifacts written to
it load back verified and package into a Bento; the store stopped under a run gives a clear
error, and the retry after it is back completes without duplicating a row."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
import requests
import s3fs
from dagster import AssetKey, DagsterInstance

from assets.monitoring.drift import read_drift_reports, window_partition_key
from assets.resources import DataHome, Warehouse
from ml.data.drops import register_drop
from ml.data.objects import read_parquet, write_parquet
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.monitoring.prediction_log import PredictionLogWriter, prediction_record, read_predictions
from ml.monitoring.retention import RetentionReport, expire
from ml.security.encryption import at_rest_cipher
from ml.security.erasure import erase_from_logs, erase_from_parquet_files, erase_from_raw_copies
from ml.settings import Settings
from ml.synthetic.requests import generate_requests
from orchestration.definitions import build_definitions
from orchestration.object_store import BUCKET, ObjectStoreServer, start_object_store
from orchestration.pipeline import PipelineRun, execute_quietly, ingest_request_file, run_platform
from orchestration.serving import champion_behind_front_door
from serving.package import current_bento, published_bento, record_current_bento
from tests.conftest import (
    ServedPlatform,
    free_port,
    small_demand_source,
    upload,
    write_request_drop,
)

VALIDATED = (
    "select request_id, text, intent, source, received_at from validated_requests "
    "order by request_id"
)


def test_a_request_drop_read_from_the_object_store_lands_as_from_local_disk(
    settings: Settings, object_store: ObjectStoreServer, tmp_path: Path
) -> None:
    local = write_request_drop(settings, "requests.csv", rows=300, seed=2)
    uri = upload(local, "drops/requests/crm/requests.csv")
    assert (object_store.root / BUCKET / "drops/requests/crm/requests.csv").read_bytes() == (
        local.read_bytes()
    )
    tables = {}
    for where, home, path in (
        ("s3", settings, uri),
        ("disk", settings.moved_to(tmp_path / "disk_home"), str(local)),
    ):
        defs = build_definitions(home, small_demand_source(home))
        run = PipelineRun()
        ingest_request_file(
            defs, DagsterInstance.ephemeral(), DataHome(path=str(home.data_home)), path, "crm", run
        )
        assert run.success, where
        tables[where] = Warehouse(path=str(home.warehouse_path)).query(VALIDATED)
    assert tables["s3"].height > 250
    assert tables["s3"].equals(tables["disk"])


def test_model_artifacts_in_the_object_store_load_back_verified_and_package_into_a_bento(
    settings: Settings, object_store: ObjectStoreServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_ARTIFACT_ROOT", f"s3://{BUCKET}/mlflow")
    settings = Settings.from_env()
    write_request_drop(settings, "requests.csv", rows=1200, seed=1)
    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    assert run_platform(defs, instance, DataHome(path=str(settings.data_home))).success
    models = ["request_test_set", "lineage_snapshot", "request_baseline"]
    trained = execute_quietly(
        defs, instance, "request_models_job", assets=[*models, "request_classifier_promotion"]
    )
    assert trained.success

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    champion = registry.champion(REQUEST_CLASSIFIER)
    assert champion is not None and champion.tags["kind"] == "baseline"
    stored = list((object_store.root / BUCKET / "mlflow").rglob("*"))
    assert any(path.name == "MLmodel" for path in stored), stored[:20]
    assert not (settings.data_home / "mlflow" / "artifacts").exists()  # nothing on local disk
    model = registry.load(REQUEST_CLASSIFIER, champion.version)  # digests verified first
    assert model.metadata.metadata["kind"] == "baseline"

    packaged = execute_quietly(defs, instance, "champion_bento_job")
    assert packaged.success
    bento = instance.get_latest_materialization_event(AssetKey("champion_bento"))
    metadata = bento.asset_materialization.metadata
    assert metadata[f"{REQUEST_CLASSIFIER}_version"].value == champion.version


def test_the_store_stopped_under_a_run_fails_it_clearly_and_the_retry_completes(
    settings: Settings, object_store: ObjectStoreServer
) -> None:
    local = write_request_drop(settings, "requests.csv", rows=200, seed=4)
    uri = upload(local, "drops/requests/crm/requests.csv")
    data_home = DataHome(path=str(settings.data_home))
    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    drop = register_drop(uri, "crm", data_home.drop_registry_dir).drop
    instance.add_dynamic_partitions("request_drops", [drop.drop_id])

    object_store.stop()
    failed = execute_quietly(defs, instance, "request_ingest_job", partition=drop.drop_id)
    assert not failed.success
    errors = [
        event.step_failure_data.error.to_string()
        for event in failed.all_events
        if event.is_step_failure
    ]
    assert any(f"127.0.0.1:{object_store.port}" in error for error in errors), errors

    restarted = start_object_store(
        object_store.root, object_store.port, object_store.keys, object_store.log_path
    )
    try:
        s3fs.S3FileSystem.clear_instance_cache()
        retried = execute_quietly(defs, instance, "request_ingest_job", partition=drop.drop_id)
        assert retried.success
        again = execute_quietly(defs, instance, "request_ingest_job", partition=drop.drop_id)
        assert again.success
    finally:
        restarted.stop()
    rows = Warehouse(path=str(settings.warehouse_path)).query(VALIDATED)
    quarantined = Warehouse(path=str(settings.warehouse_path)).query(
        "select count(*) as n from quarantine_requests"
    )
    assert rows["request_id"].n_unique() == rows.height
    assert rows.height + int(quarantined.item()) == 200


def test_an_erasure_empties_the_erased_rows_of_raw_copies_kept_in_the_object_store(
    object_store: ObjectStoreServer,
) -> None:
    raw = f"s3://{BUCKET}/raw"
    copy = pl.DataFrame({"_row": [1, 2, 3], "text": ["keep me", "erase me", "keep me too"]})
    write_parquet(f"{raw}/requests/crm-abc.parquet", copy)
    write_parquet(f"{raw}/requests/crm-def.parquet", copy)

    assert erase_from_raw_copies(raw, {"crm-abc": {2}}, set()) == 1
    assert erase_from_raw_copies(raw, {"crm-abc": {2}}, set()) == 0, "a retry erases nothing more"
    erased = read_parquet(f"{raw}/requests/crm-abc.parquet")
    assert erased["text"].to_list() == ["keep me", None, "keep me too"]
    assert erased["_row"].to_list() == [1, 2, 3], "every other row keeps its id"
    assert read_parquet(f"{raw}/requests/crm-def.parquet").equals(copy)
    on_disk = object_store.root / BUCKET / "raw" / "requests" / "crm-abc.parquet"
    assert b"erase me" not in on_disk.read_bytes()


def test_the_prediction_log_in_the_object_store_survives_an_outage_and_is_erased_and_expired(
    object_store: ObjectStoreServer,
) -> None:
    root = f"s3://{BUCKET}/prediction_logs"
    served = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
    hour = (served - timedelta(hours=1), served + timedelta(hours=1))

    def answered(request_id: str, text: str) -> dict[str, object]:
        return prediction_record(
            "classify", "request_classifier", "1", {"text": text}, {}, text=text,
            request_id=request_id, served_at=served,
        )  # fmt: skip

    writer = PredictionLogWriter(root, "w", flush_seconds=3600)
    writer.log([answered("r1", "where is my card?")])
    assert writer.flush() == 1
    object_store.stop()
    writer.log([answered("r2", "my card was stolen")])
    with pytest.raises(Exception, match=f"127.0.0.1:{object_store.port}"):
        writer.flush()
    assert not writer.health().healthy and writer.health().buffered == 1, "kept, not lost"
    restarted = start_object_store(
        object_store.root, object_store.port, object_store.keys, object_store.log_path
    )
    try:
        writer.close()
        assert writer.health().healthy and writer.health().written == 2
        stored = list((object_store.root / BUCKET / "prediction_logs").rglob("*.jsonl.enc"))
        assert len(stored) == 2, "encrypted at rest, one object per flush"
        logged = read_predictions(root, *hour)
        assert sorted(logged["request_id"]) == ["r1", "r2"], "every record once"

        assert erase_from_logs(root, {"r1"}, at_rest_cipher()) == 1
        assert erase_from_logs(root, {"r1"}, at_rest_cipher()) == 0
        assert read_predictions(root, *hour)["request_id"].to_list() == ["r2"]

        report = RetentionReport(served + timedelta(days=2))
        assert expire(root, "prediction_logs", report.cutoff, report) == ["window=2026-01-05T10"]
        assert read_predictions(root, *hour).is_empty()
    finally:
        restarted.stop()


def test_whylogs_profiles_and_drift_reports_live_in_the_object_store(
    served_platform: ServedPlatform,
    object_store: ObjectStoreServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The monitoring graph with MLOPS_PROFILE_URI, the prediction log and the drops in the
    store: the reference, the hour's profile and features, and its drift report are objects
    (none on local disk); the drift sensor's reader, erasure and retention work on them."""
    monkeypatch.setenv("MLOPS_PROFILE_URI", f"s3://{BUCKET}/profiles")
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_DIR", f"s3://{BUCKET}/prediction_logs")
    monkeypatch.setenv("MLOPS_REQUEST_DROPS_URI", f"s3://{BUCKET}/drops/requests")
    settings = Settings.from_env()
    assert settings.data_home == served_platform.settings.data_home
    defs = build_definitions(settings, served_platform.demand_source)
    instance = DagsterInstance.ephemeral()
    reference = execute_quietly(defs, instance, "champion_bento_job", assets=["reference_profiles"])
    assert reference.success

    hour = datetime(2026, 11, 29, 8, tzinfo=UTC)
    texts = generate_requests(600, seed=5, start=hour, end=hour + timedelta(hours=1))
    texts = texts.sample(80, seed=1)["text"].to_list()
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    champion = registry.champion(REQUEST_CLASSIFIER).version
    answers = registry.load(REQUEST_CLASSIFIER, champion).predict(pd.DataFrame({"text": texts}))
    writer = PredictionLogWriter(settings.prediction_log_uri, "test", flush_seconds=60)
    writer.log(
        prediction_record(
            "classify",
            REQUEST_CLASSIFIER,
            champion,
            {"text": text},
            {},
            text=text,
            intent=intent,
            confidence=float(confidence),
            request_id=f"r{i}",
            served_at=hour + timedelta(seconds=30 * i),
        )
        for i, (text, intent, confidence) in enumerate(
            zip(texts, answers["intent"], answers["confidence"], strict=True)
        )
    )
    writer.close()
    window = window_partition_key(hour)
    assert execute_quietly(defs, instance, "monitoring_job", partition=window).success

    stored = object_store.root / BUCKET / "profiles"
    key = f"{hour:%Y-%m-%dT%H}"
    assert {p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file()} >= {
        "reference/current.json",
        f"reference/{REQUEST_CLASSIFIER}-v{champion}/profile.bin",
        f"reference/{REQUEST_CLASSIFIER}-v{champion}/text_reference.json",
        f"serving/{key}.bin",
        f"serving/{key}.parquet",
        f"drift/{key}.json",
    }
    local = settings.data_home / "profiles"
    assert not list(local.rglob(f"{key}.*")), "nothing of the hour on local disk"
    monitoring = defs.resources["monitoring"].process_config_and_initialize()
    report = {r["window"]: r for r in read_drift_reports(monitoring)}[key]
    assert (report["rows"], report["judged_rows"]) == (80, 80)
    assert report["reference_version"] == champion

    assert erase_from_parquet_files(monitoring.profile("serving"), {"r3"}) == 1
    assert "r3" not in read_parquet(monitoring.profile("serving", f"{key}.parquet"))["request_id"]
    report = RetentionReport(hour + timedelta(days=1))
    assert sorted(expire(monitoring.profile("serving"), "serving", report.cutoff, report)) == [
        f"{key}.bin",
        f"{key}.parquet",
    ]
    assert not (stored / "serving" / f"{key}.bin").exists()


def test_a_bento_published_to_the_object_store_is_served_by_a_machine_with_a_store_of_its_own(
    served_platform: ServedPlatform,
    object_store: ObjectStoreServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With MLOPS_BENTO_URI, `champion_bento` exports the Bento (models inside) to the store
    and points at it there; a serving machine that shares no disk with the packaging one
    imports it into its own BentoML store and serves it behind the front door."""
    monkeypatch.setenv("MLOPS_BENTO_URI", f"s3://{BUCKET}/bentos")
    settings = Settings.from_env()
    defs = build_definitions(settings, served_platform.demand_source)
    recorded = current_bento(settings.bentoml_home)
    try:
        packaged = execute_quietly(
            defs, DagsterInstance.ephemeral(), "champion_bento_job", assets=["champion_bento"]
        )
    finally:  # the session's platform as the other tests know it
        record_current_bento(settings.bentoml_home, recorded)
    assert packaged.success
    bento = packaged.asset_materializations_for_node("champion_bento")[0].metadata["bento"].value
    name, version = bento.split(":")
    archive = f"s3://{BUCKET}/bentos/{name}-{version}.bento"
    assert (object_store.root / BUCKET / "bentos" / f"{name}-{version}.bento").stat().st_size > 0
    published = published_bento(settings.bento_uri)
    assert (published["bento"], published["archive"]) == (bento, archive)

    machine_home = tmp_path / "serving-machine"
    monkeypatch.setenv("MLOPS_DATA_HOME", str(machine_home))
    monkeypatch.setenv("BENTOML_HOME", str(machine_home / "bentoml"))
    machine = Settings.from_env()
    assert not (machine.bentoml_home / "bentos").exists()
    with champion_behind_front_door(machine, free_port(), admin_port=free_port()) as served:
        assert served.bento == bento
        answer = requests.post(
            f"{served.url}/classify", json={"texts": "where is my card?"},
            headers=served.headers(), timeout=30,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()[0]["model_version"] == published["versions"][REQUEST_CLASSIFIER]
    assert (machine.bentoml_home / "bentos" / name / version / "bento.yaml").exists()
