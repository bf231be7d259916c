"""Retention, as the daily schedule runs it: what traffic left behind (prediction and request
logs, serving profiles, drift results, drifted traffic) is deleted once its hour is older than
the configured days, nothing newer or without an hour is touched, a second run deletes nothing
more, and each run is recorded on `prediction_logs`."""

from datetime import UTC, datetime, timedelta

from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter

from ml.settings import Settings
from orchestration.definitions import build_definitions
from tests.conftest import small_demand_source


def test_only_what_is_older_than_the_retention_period_is_deleted_and_recorded(
    settings: Settings,
) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=10), now - timedelta(days=2)
    hour = "%Y-%m-%dT%H"
    home = settings.data_home
    paths = {
        "old": [
            home / "prediction_logs" / f"window={old:{hour}}" / "w1.jsonl.enc",
            home / "request_log" / f"window={old:{hour}}" / "r1.jsonl.enc",
            home / "profiles" / "serving" / f"{old:{hour}}.bin",
            home / "profiles" / "drift" / f"{old:{hour}}.json",
            home / "drops" / "requests" / "serving" / f"window-{old:{hour}}.csv",
        ],
        "kept": [
            home / "prediction_logs" / f"window={recent:{hour}}" / "w2.jsonl.enc",
            home / "request_log" / f"window={recent:{hour}}" / "r2.jsonl.enc",
            home / "profiles" / "serving" / f"{recent:{hour}}.bin",
            home / "drops" / "requests" / "serving" / f"window-{recent:{hour}}.csv",
            home / "profiles" / "serving" / "README",
            home / "drops" / "requests" / "shop" / f"window-{old:{hour}}.csv",  # not traffic
        ],
    }
    for path in paths["old"] + paths["kept"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    run_config = {"ops": {"apply_retention": {"config": {"days": 7}}}}
    job = defs.resolve_job_def("retention_job")

    assert job.execute_in_process(run_config=run_config, instance=instance).success
    assert [p for p in paths["old"] if p.exists()] == [], "expired data was left"
    assert [p for p in paths["kept"] if not p.exists()] == [], "data within the period was lost"
    assert not (home / "prediction_logs" / f"window={old:{hour}}").exists()

    assert job.execute_in_process(run_config=run_config, instance=instance).success
    records = instance.get_event_records(
        EventRecordsFilter(
            DagsterEventType.ASSET_OBSERVATION, asset_key=AssetKey("prediction_logs")
        )
    )
    assert len(records) == 2, "each run is recorded"
    first, second = (
        r.event_log_entry.asset_observation.metadata["retention_deleted"].value
        for r in sorted(records, key=lambda r: r.storage_id)
    )
    assert "| prediction_logs | 1 |" in first and "| drifted_traffic | 1 |" in first
    assert "| prediction_logs | 0 |" in second, "a second run deletes nothing more"
