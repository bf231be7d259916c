"""The prediction log: every answer the service gives, kept append-only under the data home (or
in an object store: MLOPS_PREDICTION_LOG_DIR=s3://bucket/prediction_logs).

Each serving worker buffers records in memory and a background thread flushes the buffer as one
new file per flush (JSON lines), written whole: locally under a temporary name renamed into
place, in an object store as one object published once complete. So
concurrent workers never share a file (no interleaving, no corruption), a file is either complete
or absent, and a worker killed mid-load loses at most its unflushed buffer: at most `max_records`
records, or `flush_seconds` of traffic, whichever comes first.

A failed write keeps its records buffered for the next flush, but the buffer is bounded
(`max_buffered`): under a persistent failure (a full or broken disk) the writer says so in
`health()` (the service turns it into metrics and a failing `/readyz`) and counts every record it
had to refuse, instead of growing without limit and hiding the error.

Files are grouped by the hour they were served in (`window=YYYY-MM-DDTHH/`), the monitoring
window that the Dagster assets read.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from cryptography.fernet import MultiFernet

from ml.data.objects import files_under, read_bytes, write_bytes
from ml.lifecycle.release import SHADOW_VARIANT
from ml.security.encryption import (
    ENCRYPTED_SUFFIX,
    EncryptionError,
    at_rest_cipher,
    decrypt,
    encrypt,
)
from ml.security.encryption import KEYS_VARIABLE as ENCRYPTION_KEYS_VARIABLE

LOGGER = logging.getLogger(__name__)

WINDOW_FORMAT = "%Y-%m-%dT%H"
WINDOW = timedelta(hours=1)
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8,
    "served_at": pl.Utf8,
    "endpoint": pl.Utf8,
    "model_name": pl.Utf8,
    "model_version": pl.Utf8,
    "input": pl.Utf8,
    "output": pl.Utf8,
    "text": pl.Utf8,
    "intent": pl.Utf8,
    "confidence": pl.Float64,
    "variant": pl.Utf8,
    "agrees": pl.Boolean,
}
"""One record per answered item: the input and output as JSON, plus the columns monitoring reads
directly (for classifications: the text, the predicted intent and its probability), and which
variant answered (`champion`, `challenger`, or `shadow`: a challenger's answer to champion
traffic that was never returned; `agrees` says whether it matched the champion's)."""


LOG_SUFFIXES = (".jsonl", f".jsonl{ENCRYPTED_SUFFIX}")
"""A log file, plain or encrypted at rest."""

FROM_ENVIRONMENT = object()
"""A writer's (or reader's) keys: the deployment's, from MLOPS_ENCRYPTION_KEYS."""


def now() -> datetime:
    return datetime.now(UTC)


def window_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_folder(root: str | Path, moment: datetime) -> str:
    return f"{str(root).rstrip('/')}/window={window_start(moment).strftime(WINDOW_FORMAT)}"


def prediction_record(
    endpoint: str,
    model_name: str,
    model_version: str,
    model_input: object,
    output: object,
    *,
    text: str | None = None,
    intent: str | None = None,
    confidence: float | None = None,
    request_id: str | None = None,
    served_at: datetime | None = None,
    variant: str | None = None,
    agrees: bool | None = None,
) -> dict[str, object]:
    """A record in the log's schema (input and output kept whole, as JSON)."""
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "served_at": (served_at or now()).astimezone(UTC).isoformat(),
        "endpoint": endpoint,
        "model_name": model_name,
        "model_version": model_version,
        "input": json.dumps(model_input, default=str),
        "output": json.dumps(output, default=str),
        "text": text,
        "intent": intent,
        "confidence": confidence,
        "variant": variant,
        "agrees": agrees,
    }


@dataclass(frozen=True)
class LogHealth:
    """What a writer has kept and refused so far, and why its last write failed (if it did)."""

    buffered: int
    written: int
    refused: int
    """Records not kept because the buffer was full under a persistent write failure."""
    failed_writes: int
    last_error: str | None
    """The error of the latest flush, None once a flush succeeds again."""

    @property
    def healthy(self) -> bool:
        return self.last_error is None


class PredictionLogWriter:
    """Buffered, append-only writer of one serving worker (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        writer_id: str,
        max_records: int = 256,
        flush_seconds: float = 2.0,
        clock: Callable[[], datetime] = now,
        max_buffered: int = 10_000,
        redact: Callable[[str], str] | None = None,
        cipher: MultiFernet | object | None = FROM_ENVIRONMENT,
    ):
        if max_buffered < max_records:
            raise ValueError(
                f"max_buffered ({max_buffered}) must be at least max_records ({max_records})"
            )
        self.root = str(root)
        self.writer_id = f"{writer_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_records = max_records
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.clock = clock
        self.cipher = at_rest_cipher() if cipher is FROM_ENVIRONMENT else cipher
        """Files are Fernet-encrypted (`*.jsonl.enc`) when the deployment has keys."""
        self.redact = redact
        """Applied to each record's `text` as it is written, in the writer's thread: the disk
        never holds the text as sent, and the request path never waits for it."""
        self._buffer: list[Mapping[str, object]] = []
        self._flushing = 0
        """Records taken out of the buffer by a flush still under way: they count against the
        bound, since a failed write puts them back."""
        self._written = self._refused = self._failed_writes = 0
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, records: Iterable[Mapping[str, object]]) -> int:
        """Queue records; the request path never waits for the disk. Returns how many were
        refused because the buffer is full (only while writes keep failing)."""
        records = list(records)
        with self._lock:
            room = max(0, self.max_buffered - len(self._buffer) - self._flushing)
            self._buffer.extend(records[:room])
            refused = len(records) - min(room, len(records))
            self._refused += refused
            full = len(self._buffer) >= self.max_records
        if refused:
            LOGGER.error(
                "prediction log %s: buffer full (%d records) since writes fail (%s); "
                "refused %d records",
                self.root,
                self.max_buffered,
                self._last_error,
                refused,
            )
        if full:
            self._wake.set()
        return refused

    def health(self) -> LogHealth:
        with self._lock:
            return LogHealth(
                buffered=len(self._buffer) + self._flushing,
                written=self._written,
                refused=self._refused,
                failed_writes=self._failed_writes,
                last_error=self._last_error,
            )

    def flush(self) -> int:
        """Write what is buffered as new files (one per window); the number of records written.
        On a failed write the records stay buffered for the next flush: nothing is lost."""
        with self._flush_lock:
            with self._lock:
                pending, self._buffer = self._buffer, []
                self._flushing = len(pending)
            if not pending:
                return 0
            try:
                self._write(pending)
            except Exception as error:
                with self._lock:
                    self._buffer[:0] = pending
                    self._flushing = 0
                    self._failed_writes += 1
                    first = self._last_error is None
                    self._last_error = f"{type(error).__name__}: {error}"
                if first:
                    LOGGER.error("prediction log %s: write failed: %s", self.root, error)
                raise
            with self._lock:
                self._flushing = 0
                self._written += len(pending)
                recovered, self._last_error = self._last_error, None
            if recovered:
                LOGGER.warning("prediction log %s: writing again (was: %s)", self.root, recovered)
            return len(pending)

    def _write(self, records: list[Mapping[str, object]]) -> None:
        by_window: dict[str, list[Mapping[str, object]]] = {}
        for record in records:
            served = datetime.fromisoformat(str(record["served_at"]))
            by_window.setdefault(window_folder(self.root, served), []).append(record)
        for folder, rows in by_window.items():
            self._sequence += 1
            name = f"{self.writer_id}-{self.clock():%Y%m%dT%H%M%S%f}-{self._sequence:06d}.jsonl"
            if self.cipher is not None:
                name += ENCRYPTED_SUFFIX
            if self.redact is not None:
                rows = [self._redacted(row) for row in rows]
            content = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode("utf-8")
            if self.cipher is not None:
                content = encrypt(self.cipher, content)
            write_bytes(f"{folder}/{name}", content)

    def _redacted(self, row: Mapping[str, object]) -> Mapping[str, object]:
        """`row` with its text redacted, where the model's input (JSON) repeats it too."""
        text = row.get("text")
        if not isinstance(text, str) or not text:
            return row
        clean = self.redact(text)
        if clean == text:
            return row
        redacted = {**row, "text": clean}
        if isinstance(row.get("input"), str):
            redacted["input"] = row["input"].replace(
                json.dumps(text)[1:-1], json.dumps(clean)[1:-1]
            )
        return redacted

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            # Kept buffered and reported in health(); the next tick retries. Any error, not only
            # OSError: a dead flush thread would buffer silently until the bound.
            with contextlib.suppress(Exception):
                self.flush()

    def close(self) -> None:
        """Flush what is left and stop the background thread."""
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def log_files(root: str | Path, start: datetime, end: datetime) -> list[str]:
    """Every complete log file of the windows overlapping [start, end) (a file being written
    has a hidden temporary name, never listed)."""
    files = []
    moment = window_start(start)
    while moment < end:
        folder = window_folder(root, moment)
        files += files_under(folder, LOG_SUFFIXES)
        moment += WINDOW
    return files


def log_file_content(
    path: str | Path, cipher: MultiFernet | object | None = FROM_ENVIRONMENT
) -> bytes:
    """A log file's JSON lines, decrypted when it is encrypted."""
    data = read_bytes(str(path))
    if not str(path).endswith(ENCRYPTED_SUFFIX):
        return data
    keys = at_rest_cipher() if cipher is FROM_ENVIRONMENT else cipher
    if keys is None:
        raise EncryptionError(f"{path} is encrypted: set {ENCRYPTION_KEYS_VARIABLE} to read it")
    return decrypt(keys, data, str(path))


def read_log(
    root: str | Path,
    start: datetime,
    end: datetime,
    schema: Mapping[str, pl.DataType] | None = None,
) -> pl.DataFrame:
    """The records of a log written by `PredictionLogWriter` served in [start, end), oldest
    first, with `served_at` as a UTC datetime (the prediction log's schema unless told)."""
    schema = dict(schema or RECORD_SCHEMA)
    files = log_files(root, start, end)
    if not files:
        frame = pl.DataFrame(schema=schema)
    else:
        frame = pl.concat(
            [pl.read_ndjson(io.BytesIO(log_file_content(path)), schema=schema) for path in files],
            how="vertical",
        )
    frame = frame.with_columns(
        pl.col("served_at").str.to_datetime(time_zone="UTC", time_unit="us")
    ).filter((pl.col("served_at") >= start) & (pl.col("served_at") < end))
    return frame.sort("served_at")


def read_predictions(
    root: str | Path,
    start: datetime,
    end: datetime,
    endpoint: str | None = None,
    include_shadow: bool = False,
) -> pl.DataFrame:
    """The answers served in [start, end), oldest first; shadow answers (never returned to a
    client) only when asked for."""
    frame = read_log(root, start, end)
    if endpoint is not None:
        frame = frame.filter(pl.col("endpoint") == endpoint)
    if not include_shadow:
        frame = frame.filter(pl.col("variant").is_null() | (pl.col("variant") != SHADOW_VARIANT))
    return frame
