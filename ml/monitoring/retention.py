"""How long the platform keeps what its traffic left behind: prediction and request logs,
serving profiles and drift results, and the drifted traffic queued for annotation are deleted
once the hour they belong to is older than the retention period. Every name here carries its
hour (`window=2026-12-01T10`, `2026-12-01T10.bin`, `window-2026-12-01T10.csv`), so what is
expired is read off the name, never guessed from a file's time stamp."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime

import fsspec

HOUR = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2})")
HOUR_FORMAT = "%Y-%m-%dT%H"


def hour_of(name: str) -> datetime | None:
    found = HOUR.search(name)
    if found is None:
        return None
    return datetime.strptime(found.group(1), HOUR_FORMAT).replace(tzinfo=UTC)


@dataclass
class RetentionReport:
    cutoff: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    """Per store, how many files or hour folders were deleted."""
    kept: dict[str, int] = field(default_factory=dict)


def expire(uri: str, store: str, cutoff: datetime, report: RetentionReport) -> list[str]:
    """Delete the entries directly under `uri` (a path or any fsspec URI) whose hour ends
    before `cutoff`; entries without an hour in their name are kept. Deleting again is a
    no-op (idempotent)."""
    fs, root = fsspec.core.url_to_fs(uri)
    if not fs.exists(root):
        report.deleted.setdefault(store, 0)
        report.kept.setdefault(store, 0)
        return []
    deleted, kept = [], 0
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        hour = hour_of(name)
        if hour is None or hour.timestamp() + 3600 > cutoff.timestamp():
            kept += 1
            continue
        if fs.isdir(entry):
            if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
                shutil.rmtree(entry)
            else:
                fs.rm(entry, recursive=True)
        else:
            fs.rm_file(entry)
        deleted.append(name)
    report.deleted[store] = report.deleted.get(store, 0) + len(deleted)
    report.kept[store] = report.kept.get(store, 0) + kept
    return deleted
