"""The drop sensor: a new file becomes a partition and one run; nothing fires twice."""

import json
import os
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from assets.requests.sensors import request_drop_sensor
from assets.resources import build_resources
from ml.settings import Settings
from tests.conftest import write_request_drop


def tick(instance: DagsterInstance, settings: Settings, cursor: str | None):
    resources = build_resources(settings)
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={k: resources[k] for k in ("data_home", "request_intake")},
    )
    return request_drop_sensor(context)


def test_a_new_drop_requests_one_run_and_a_redrop_is_only_observed(settings: Settings) -> None:
    instance = DagsterInstance.ephemeral()
    path = write_request_drop(settings, "jan.csv", rows=50, seed=1)

    seen = tick(instance, settings, None)
    assert isinstance(seen, SensorResult) and not seen.run_requests, "registered on first sight"
    first = tick(instance, settings, seen.cursor)
    assert isinstance(first, SensorResult)
    (run,) = first.run_requests
    (added,) = first.dynamic_partitions_requests
    assert added.partition_keys == [run.partition_key] and run.run_key == run.partition_key
    assert run.partition_key.startswith("synthetic-")
    instance.add_dynamic_partitions("request_drops", added.partition_keys)

    assert isinstance(tick(instance, settings, first.cursor), SkipReason)

    shutil.copy(path, path.with_name("jan_copy.csv"))
    copy_seen = tick(instance, settings, first.cursor)
    assert not copy_seen.run_requests and not copy_seen.asset_events
    third = tick(instance, settings, copy_seen.cursor)
    assert third.run_requests == [] and third.dynamic_partitions_requests == []
    (observation,) = third.asset_events
    assert observation.partition == run.partition_key
    assert observation.metadata["redropped_as"].value.endswith("jan_copy.csv")
    assert set(json.loads(third.cursor)) == {str(path), str(path.with_name("jan_copy.csv"))}


def settled(instance: DagsterInstance, settings: Settings, cursor: str | None):
    """Two ticks: the first sees the files, the second finds them unchanged and acts."""
    first = tick(instance, settings, cursor)
    assert not getattr(first, "run_requests", None), "a file was registered on first sight"
    return tick(instance, settings, first.cursor)


def test_bad_files_are_recorded_and_the_good_drop_beside_them_ingests_in_the_same_tick(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_MAX_DROP_BYTES", "20000")
    settings = Settings.from_env()
    drops = Path(settings.request_drops_uri)
    good = write_request_drop(settings, "good.csv", rows=40, seed=1)
    assert good.stat().st_size < 20000
    oversized = write_request_drop(settings, "oversized.csv", rows=600, seed=2)
    assert oversized.stat().st_size > 20000
    os.mkfifo(drops / "synthetic" / "pipe.csv")  # unreadable as a drop: reading it blocks
    (drops / "synthetic" / "vanished.csv").symlink_to(drops / "synthetic" / "removed.csv")
    (drops / "bad...folder").mkdir()
    shutil.copy(good, drops / "bad...folder" / "copy.csv")
    instance = DagsterInstance.ephemeral()

    result = settled(instance, settings, None)
    (run,) = result.run_requests
    assert run.partition_key.startswith("synthetic-")
    instance.add_dynamic_partitions(
        "request_drops", result.dynamic_partitions_requests[0].partition_keys
    )
    reasons = {
        Path(event.metadata["refused_file"].value).name: event.metadata["reason"].value
        for event in result.asset_events
    }
    assert set(reasons) == {"oversized.csv", "pipe.csv", "vanished.csv", "copy.csv"}
    assert "over the drop size cap of 20000" in reasons["oversized.csv"]
    assert "not a regular file" in reasons["pipe.csv"]
    assert "broken symlink" in reasons["vanished.csv"]
    assert "'bad...folder' is not a usable source name" in reasons["copy.csv"]
    for event in result.asset_events:
        instance.report_runless_asset_event(event)  # what the daemon records for the UI
        manifest = json.loads(Path(event.metadata["quarantine_manifest"].value).read_text())
        assert manifest["reason"] == event.metadata["reason"].value
    assert Path(event.metadata["quarantine_manifest"].value).parent == (
        settings.data_home / "quarantine" / "drops"
    )
    assert isinstance(tick(instance, settings, result.cursor), SkipReason), "cursor moved past"


def test_a_file_written_in_two_halves_across_two_ticks_is_registered_once_whole(
    settings: Settings,
) -> None:
    instance = DagsterInstance.ephemeral()
    source = write_request_drop(settings, "source.csv", rows=80, seed=4)
    whole = source.read_bytes()
    source.unlink()
    landing = source.with_name("landing.csv")
    landing.write_bytes(whole[: len(whole) // 2])
    first = tick(instance, settings, None)
    assert not first.run_requests
    with landing.open("ab") as handle:
        handle.write(whole[len(whole) // 2 :])
    second = tick(instance, settings, first.cursor)
    assert not second.run_requests, "it changed since the last tick: still being written"
    third = tick(instance, settings, second.cursor)
    (run,) = third.run_requests
    manifest = json.loads(
        (settings.data_home / "drop_registry" / f"{run.partition_key}.json").read_text()
    )
    assert manifest["size_bytes"] == len(whole) and manifest["uri"] == str(landing)
    instance.add_dynamic_partitions("request_drops", [run.partition_key])
    assert isinstance(tick(instance, settings, third.cursor), SkipReason)
    assert len(list((settings.data_home / "drop_registry").glob("*.json"))) == 1


def test_a_symlink_pointing_outside_the_drops_root_is_refused_with_its_reason(
    settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "not_the_drops_folder" / "passwords.csv"
    outside.parent.mkdir()
    outside.write_text("text\nhunter2\n")
    folder = Path(settings.request_drops_uri) / "synthetic"
    folder.mkdir(parents=True)
    (folder / "innocent.csv").symlink_to(outside)
    result = settled(DagsterInstance.ephemeral(), settings, None)
    assert result.run_requests == []
    (event,) = result.asset_events
    assert event.metadata["reason"].value == (
        f"{folder / 'innocent.csv'}: symlink to {outside}, outside the watched folder "
        f"{folder.parent}; copy the file into the folder instead"
    )
    assert not (settings.data_home / "drop_registry").exists()
