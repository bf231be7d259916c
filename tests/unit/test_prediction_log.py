"""The prediction log: append-only, batched off the request path, safe with several writers, and
a writer killed mid-load loses at most its unflushed buffer."""

import json
import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ml.monitoring.prediction_log import (
    PredictionLogWriter,
    log_file_content,
    log_files,
    prediction_record,
    read_predictions,
)

START = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def record(i: int, served_at: datetime, writer: str = "w") -> dict[str, object]:
    return prediction_record(
        "classify",
        "request_classifier",
        "3",
        {"text": f"text {i}"},
        {"intent": "card_arrival"},
        text=f"text {i}",
        intent="card_arrival",
        confidence=0.5,
        request_id=f"{writer}-{i}",
        served_at=served_at,
    )


def test_records_are_flushed_by_size_and_by_time(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, "w", max_records=10, flush_seconds=0.3)
    writer.log([record(i, START) for i in range(10)])
    deadline = time.monotonic() + 5
    while (
        not log_files(tmp_path, START, START + timedelta(hours=1)) and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert len(log_files(tmp_path, START, START + timedelta(hours=1))) == 1, "size flush"
    writer.log([record(10, START)])  # below the size bound: the timer flushes it
    deadline = time.monotonic() + 10
    while (
        read_predictions(tmp_path, START, START + timedelta(hours=1)).height < 11
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert writer.health().buffered == 0, "the timer flushed the record without a size flush"
    assert read_predictions(tmp_path, START, START + timedelta(hours=1)).height == 11
    writer.close()


def test_a_flush_spanning_two_hours_files_each_record_under_its_own_window(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, "w", flush_seconds=60)
    writer.log([record(0, START + timedelta(minutes=59)), record(1, START + timedelta(minutes=61))])
    assert writer.flush() == 2
    first = read_predictions(tmp_path, START, START + timedelta(hours=1))
    second = read_predictions(tmp_path, START + timedelta(hours=1), START + timedelta(hours=2))
    assert first["request_id"].to_list() == ["w-0"]
    assert second["request_id"].to_list() == ["w-1"]
    assert first["served_at"].dtype.time_zone == "UTC"
    writer.close()


def test_a_failed_write_keeps_the_records_for_the_next_flush(tmp_path: Path) -> None:
    blocked = tmp_path / "logs"
    blocked.write_text("a file where the log folder should be")
    writer = PredictionLogWriter(blocked, "w", flush_seconds=60)
    writer.log([record(i, START) for i in range(3)])
    with pytest.raises(OSError):
        writer.flush()
    blocked.unlink()
    assert writer.flush() == 3
    assert read_predictions(blocked, START, START + timedelta(hours=1)).height == 3
    writer.close()


def test_a_persistent_disk_fault_is_reported_and_the_buffer_stays_bounded(tmp_path: Path) -> None:
    blocked = tmp_path / "logs"
    blocked.write_text("a file where the log folder should be")
    writer = PredictionLogWriter(blocked, "w", max_records=5, flush_seconds=0.05, max_buffered=20)
    assert writer.health().healthy
    refused = sum(writer.log([record(i, START)]) for i in range(50))
    deadline = time.monotonic() + 10
    while writer.health().failed_writes < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    health = writer.health()
    assert not health.healthy and "NotADirectoryError" in health.last_error
    assert health.failed_writes >= 2  # the background thread keeps trying, and says so
    assert health.buffered == 20 and refused == health.refused == 30
    blocked.unlink()  # the disk comes back
    deadline = time.monotonic() + 10
    while not writer.health().healthy and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.close()
    health = writer.health()
    assert health.healthy and health.buffered == 0 and health.written == 20
    kept = read_predictions(blocked, START, START + timedelta(hours=1))
    assert kept["request_id"].to_list() == [f"w-{i}" for i in range(20)]


def test_reading_filters_the_window_and_the_endpoint(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, "w", flush_seconds=60)
    forecast = prediction_record("forecast", "demand_forecaster", "2", {}, {}, served_at=START)
    writer.log([record(0, START - timedelta(seconds=1)), record(1, START), forecast])
    writer.close()
    window = read_predictions(tmp_path, START, START + timedelta(hours=1), endpoint="classify")
    assert window["request_id"].to_list() == ["w-1"]
    assert read_predictions(tmp_path, START, START + timedelta(hours=1)).height == 2


def _write_many(root: str, writer_id: str, count: int) -> None:
    writer = PredictionLogWriter(Path(root), writer_id, max_records=7, flush_seconds=0.05)
    for i in range(count):
        writer.log([record(i, START + timedelta(seconds=i % 3000), writer_id)])
        if i % 50 == 0:
            time.sleep(0.001)
    writer.close()


def test_concurrent_writers_never_corrupt_or_interleave_records(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_write_many, args=(str(tmp_path), f"p{n}", 400)) for n in range(4)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    for path in log_files(tmp_path, START, START + timedelta(hours=1)):
        lines = log_file_content(path).decode("utf-8").splitlines()
        writer_ids = {json.loads(line)["request_id"].split("-")[0] for line in lines}
        assert len(writer_ids) == 1, f"{path.name} mixes writers {writer_ids}"
    logged = read_predictions(tmp_path, START, START + timedelta(hours=1))
    assert logged.height == 1600
    assert logged["request_id"].n_unique() == 1600


def _write_until_killed(root: str) -> None:
    writer = PredictionLogWriter(Path(root), "victim", max_records=20, flush_seconds=0.05)
    i = 0
    while True:
        writer.log([record(i, START + timedelta(seconds=i % 3000), "victim")])
        i += 1
        if i % 20 == 0:
            time.sleep(0.002)


def test_a_writer_killed_mid_load_leaves_only_complete_files(tmp_path: Path) -> None:
    process = multiprocessing.get_context("spawn").Process(
        target=_write_until_killed, args=(str(tmp_path),)
    )
    process.start()
    deadline = time.monotonic() + 30
    while len(log_files(tmp_path, START, START + timedelta(hours=1))) < 5:
        assert time.monotonic() < deadline, "the writer never flushed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=10)
    files = log_files(tmp_path, START, START + timedelta(hours=1))
    for path in files:
        text = log_file_content(path).decode("utf-8")
        assert text.endswith("\n")
        [json.loads(line) for line in text.splitlines()]  # every line parses
    logged = read_predictions(tmp_path, START, START + timedelta(hours=1))
    numbers = sorted(int(rid.split("-")[1]) for rid in logged["request_id"])
    assert numbers == list(range(len(numbers))), "flushed records form an unbroken prefix"
