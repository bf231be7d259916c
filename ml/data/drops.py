"""The drop registry and the drops folder: each dropped file registered once by its content hash
(re-drops recorded, never re-ingested).

The drops folder is scanned one file at a time: a file still being written waits until a second
scan sees it unchanged, and a file that cannot be a drop (not a regular file, a symlink out of
the folder, too large, unreadable, a source folder name that cannot key a partition) is refused
with its reason and a quarantine manifest, never stopping the other files of the same scan.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import fsspec.implementations.local
import polars as pl

from ml.data.atomic_files import (
    append_line_atomically,
    write_text_atomically,
)
from ml.data.ingestion import (
    DEFAULT_MAX_DROP_BYTES,
    SOURCE_NAME,
    SUPPORTED_SUFFIXES,
    IngestionError,
    content_sha256,
    file_suffix,
    read_bytes,
    read_raw_table,
)
from ml.data.objects import write_bytes


@dataclass(frozen=True)
class Drop:
    """One file handed to the platform, identified by its content."""

    drop_id: str
    source: str
    uri: str
    sha256: str
    size_bytes: int
    registered_at: str


@dataclass(frozen=True)
class DropRegistration:
    drop: Drop
    is_new: bool
    """False when identical content was already registered: re-dropping a file is a no-op."""
    seen_uri: str

    @property
    def is_redrop(self) -> bool:
        """Known content under another name: recorded, never ingested again."""
        return not self.is_new and self.seen_uri != self.drop.uri


def drop_id_for(source: str, sha256: str) -> str:
    return f"{source}-{sha256[:12]}"


def check_source_name(source: str, uri: str) -> None:
    """A source name that cannot key a partition (or name a file) is refused, naming the file."""
    if not SOURCE_NAME.fullmatch(source):
        raise IngestionError(
            f"{uri}: source folder {source!r} is not a usable source name; expected 1-64 "
            "letters, digits, '_' or '-' starting with a letter or digit (it becomes part of "
            "the drop's partition key); rename the folder"
        )


def register_drop(
    uri: str,
    source: str,
    registry_dir: Path,
    now: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_DROP_BYTES,
) -> DropRegistration:
    """Record a drop once per content; the same bytes dropped again are reported, not re-read."""
    check_source_name(source, uri)
    sha256, size = content_sha256(uri, max_bytes)
    drop_id = drop_id_for(source, sha256)
    manifest = registry_dir / f"{drop_id}.json"
    if manifest.exists():
        existing = load_drop(drop_id, registry_dir)
        if existing.uri != uri:
            _append_sighting(registry_dir, drop_id, uri, now)
        return DropRegistration(drop=existing, is_new=False, seen_uri=uri)
    registered_at = (now or datetime.now(UTC)).isoformat()
    drop = Drop(drop_id, source, uri, sha256, size, registered_at)
    write_text_atomically(manifest, json.dumps(asdict(drop), indent=2))
    return DropRegistration(drop=drop, is_new=True, seen_uri=uri)


def _append_sighting(registry_dir: Path, drop_id: str, uri: str, now: datetime | None) -> None:
    """Keep a trace of every re-drop of known content, so the no-op is on record."""
    log = registry_dir / f"{drop_id}.redrops.jsonl"
    line = json.dumps({"uri": uri, "seen_at": (now or datetime.now(UTC)).isoformat()})
    append_line_atomically(log, line)


def redrops_of(drop_id: str, registry_dir: Path) -> list[dict[str, str]]:
    log = registry_dir / f"{drop_id}.redrops.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]


def load_drop(drop_id: str, registry_dir: Path) -> Drop:
    manifest = registry_dir / f"{drop_id}.json"
    if not manifest.exists():
        raise IngestionError(
            f"drop {drop_id!r} is not registered (no manifest at {manifest}); "
            "drop the file into the drops folder or register it first"
        )
    return Drop(**json.loads(manifest.read_text(encoding="utf-8")))


def read_drop(drop: Drop) -> pl.DataFrame:
    """Read a registered drop, refusing a file whose content changed since it was registered."""
    data = read_bytes(drop.uri)
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != drop.sha256:
        raise IngestionError(
            f"{drop.uri}: content changed since it was registered as drop {drop.drop_id} "
            f"(sha256 {drop.sha256[:12]}… → {sha256[:12]}…); drop the new version as a new file"
        )
    return read_raw_table(drop.uri, data)


@dataclass(frozen=True)
class FoundFile:
    uri: str
    relative_parts: tuple[str, ...]
    """Its path below the folder that was listed, split into parts."""
    stamp: str
    """Size and modification mark: a file whose stamp is unchanged need not be read again."""
    size: int = 0
    problem: str = ""
    """Why this entry cannot be read as a drop at all ('' when it can)."""


def _is_within(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _local_entry(name: str, info: dict, root: str) -> tuple[int, str, str]:
    """(size, stamp, problem) of a local entry, following a symlink only inside `root`: a FIFO
    would block the reader forever, a link out of the folder would read someone else's file."""
    if info.get("islink"):
        target = os.path.realpath(name)
        if not os.path.exists(target):
            gone = info.get("destination", target)
            return 0, "", f"{name}: broken symlink (its target {gone} is gone)"
        if not _is_within(target, root):
            outside = f"symlink to {target}, outside the watched folder {root}"
            return 0, "", f"{name}: {outside}; copy the file into the folder instead"
    try:
        status = os.stat(name)
    except OSError as error:
        return 0, "", f"{name}: vanished or unreadable while being listed ({error.strerror})"
    stamp = f"{status.st_size}:{status.st_mtime_ns}"
    if not stat.S_ISREG(status.st_mode):
        kind = "not a regular file (a folder, FIFO, socket or device)"
        return 0, stamp, f"{name}: {kind}; expected a CSV or Parquet file"
    return status.st_size, stamp, ""


def list_supported_files(
    root: str, suffixes: tuple[str, ...] = SUPPORTED_SUFFIXES
) -> list[FoundFile]:
    """Every entry below `root` (a path or any fsspec URI) whose name ends in one of `suffixes`
    (CSV or Parquet unless a domain says otherwise), in a stable order; hidden names (a
    writer's temporary files) are skipped, entries that are not readable files come back with
    their `problem`."""
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path) or not fs.isdir(path):
        return []
    local = isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    real_root = os.path.realpath(path) if local else ""
    found = []
    for name, info in sorted(fs.find(path, detail=True).items()):
        relative = name[len(path.rstrip("/")) + 1 :]
        parts = tuple(relative.split("/"))
        if file_suffix(name) not in suffixes or any(p.startswith(".") for p in parts):
            continue
        if local:
            size, stamp, problem = _local_entry(name, info, real_root)
        else:
            modified = next(
                (info[k] for k in ("mtime", "LastModified", "ETag", "created") if info.get(k)), ""
            )
            size, stamp = int(info.get("size") or 0), f"{info.get('size')}:{modified}"
            problem = "" if info.get("type") == "file" else f"{name}: not a file"
        found.append(
            FoundFile(
                uri=name if local else fs.unstrip_protocol(name),
                relative_parts=parts,
                stamp=stamp,
                size=size,
                problem=problem,
            )
        )
    return found


def discover_drop_files(
    root: str, suffixes: tuple[str, ...] = SUPPORTED_SUFFIXES
) -> list[tuple[str, FoundFile]]:
    """(source, file) for every supported file under `root/<source>/`."""
    return [
        (f.relative_parts[0], f)
        for f in list_supported_files(root, suffixes)
        if len(f.relative_parts) > 1
    ]


# --- scanning the drops folder ----------------------------------------------------------------

PENDING, REGISTERED, REFUSED = "pending", "registered", "refused"


@dataclass(frozen=True)
class RefusedFile:
    """A file in the drops folder that is not a drop, with why; kept as a quarantine manifest."""

    uri: str
    source: str
    reason: str
    stamp: str
    refused_at: str
    manifest: str


@dataclass(frozen=True)
class DropScan:
    registrations: list[DropRegistration]
    refusals: list[RefusedFile]
    pending: list[str]
    """Files seen for the first time or changed since the last scan: looked at once a later
    scan finds them unchanged (a file still being copied is never registered half-written)."""
    cursor: dict[str, dict[str, str]]
    """Per file listed: its stamp and state (pending, registered or refused)."""


def _cursor_entry(value: object) -> tuple[str, str]:
    if isinstance(value, dict):
        return str(value.get("stamp", "")), str(value.get("state", REGISTERED))
    return str(value), REGISTERED  # cursors written before files had to settle


def refusal_manifest_path(quarantine_dir: Path, uri: str) -> Path:
    return quarantine_dir / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}.json"


def refuse_file(
    quarantine_dir: Path, uri: str, source: str, reason: str, stamp: str, now: datetime
) -> RefusedFile:
    """Record why a file is not a drop (its latest refusal), where the UI and people look."""
    manifest = refusal_manifest_path(quarantine_dir, uri)
    refused = RefusedFile(uri, source, reason, stamp, now.isoformat(), str(manifest))
    write_text_atomically(manifest, json.dumps(asdict(refused), indent=2))
    return refused


def refused_files(quarantine_dir: Path) -> list[RefusedFile]:
    """Every refusal on record, most recent first."""
    if not quarantine_dir.is_dir():
        return []
    records = [
        RefusedFile(**json.loads(p.read_text(encoding="utf-8")))
        for p in quarantine_dir.glob("*.json")
    ]
    return sorted(records, key=lambda r: r.refused_at, reverse=True)


def scan_drops(
    root: str,
    registry_dir: Path,
    quarantine_dir: Path,
    cursor: dict[str, object],
    *,
    settle: bool,
    max_bytes: int = DEFAULT_MAX_DROP_BYTES,
    now: datetime | None = None,
    suffixes: tuple[str, ...] = SUPPORTED_SUFFIXES,
) -> DropScan:
    """Register every file under `root/<source>/` not yet handled with its current stamp, one
    file at a time: a file that cannot be a drop is refused and recorded, the rest go on.

    `settle`: look at a file (register or refuse it) only once a previous scan saw it with the
    same size and mtime (the sensor's ticks); a one-shot scan of files known to be complete
    passes False.
    """
    now = now or datetime.now(UTC)
    registrations, refusals, pending = [], [], []
    state: dict[str, dict[str, str]] = {}
    for source, found in discover_drop_files(root, suffixes):
        stamp, seen = _cursor_entry(cursor.get(found.uri, {"stamp": "", "state": ""}))
        if stamp == found.stamp and seen in (REGISTERED, REFUSED):
            state[found.uri] = {"stamp": stamp, "state": seen}
            continue
        if settle and not (seen == PENDING and stamp == found.stamp):
            pending.append(found.uri)
            state[found.uri] = {"stamp": found.stamp, "state": PENDING}
            continue
        problem = found.problem
        if not problem and found.size > max_bytes:
            problem = (
                f"{found.uri}: {found.size} bytes, over the drop size cap of {max_bytes} "
                "(MLOPS_MAX_DROP_BYTES); split the file or raise the cap"
            )
        if not problem:
            try:
                registrations.append(register_drop(found.uri, source, registry_dir, now, max_bytes))
                state[found.uri] = {"stamp": found.stamp, "state": REGISTERED}
                continue
            except IngestionError as error:
                problem = str(error)
            except Exception as error:  # one bad file must not stop the scan of the others
                problem = f"{found.uri}: cannot be registered ({type(error).__name__}: {error})"
        refusals.append(refuse_file(quarantine_dir, found.uri, source, problem, found.stamp, now))
        state[found.uri] = {"stamp": found.stamp, "state": REFUSED}
    return DropScan(registrations, refusals, pending, state)


def write_drop(drops_uri: str, source: str, name: str, data: bytes) -> str:
    """Put a file into the drops folder whole, as `<drops>/<source>/<name>`; its URI."""
    check_source_name(source, f"{drops_uri}/{source}/{name}")
    return write_bytes(f"{drops_uri.rstrip('/')}/{source}/{name}", data)
