"""Reading source files (CSV or Parquet, any fsspec URI) exactly as they are, with errors that
name the file and line, and registering file drops by content hash so that a re-drop is a no-op.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import fsspec.implementations.local
import polars as pl

ROW_COLUMN = "_row"
"""Line number of each record in its file (CSV: the header is line 1), so errors can point at it."""

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


class IngestionError(ValueError):
    """A source file cannot be read as a table; the message names the file and what was wrong."""


def _suffix(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1].lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return os.path.splitext(name)[1]


def read_bytes(uri: str) -> bytes:
    """The file's bytes, decompressed if its name says so."""
    try:
        with fsspec.open(uri, "rb", compression="infer") as handle:
            return handle.read()
    except FileNotFoundError as error:
        raise IngestionError(f"{uri}: file not found") from error
    except IsADirectoryError as error:
        raise IngestionError(f"{uri}: is a folder, expected a CSV or Parquet file") from error


def content_sha256(uri: str) -> str:
    """Hash of the file's content: the identity of a drop, whatever its name."""
    return hashlib.sha256(read_bytes(uri)).hexdigest()


def read_raw_table(uri: str, data: bytes | None = None) -> pl.DataFrame:
    """Every column as text, plus `_row`; nothing is typed, renamed or dropped here."""
    suffix = _suffix(uri)
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestionError(
            f"{uri}: unsupported file type {suffix or '(none)'!r}; expected one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    data = read_bytes(uri) if data is None else data
    if not data.strip():
        raise IngestionError(f"{uri}: file is empty; expected a header row and data rows")
    if suffix in (".parquet", ".pq"):
        return _read_parquet(uri, data)
    return _read_csv(uri, data)


def _read_parquet(uri: str, data: bytes) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except Exception as error:
        raise IngestionError(f"{uri}: not a readable Parquet file ({error})") from error
    frame = frame.select(pl.all().cast(pl.Utf8))
    return frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(ROW_COLUMN))


def _decode_utf8(uri: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise IngestionError(
            f"{uri}: not UTF-8 text: byte 0x{data[error.start]:02x} at line {line} "
            f"(byte offset {error.start}); re-export the file as UTF-8"
        ) from error


def _read_csv(uri: str, data: bytes) -> pl.DataFrame:
    text = _decode_utf8(uri, data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as error:
        raise IngestionError(f"{uri}: line 1: no readable header row ({error})") from error
    header = [name.strip() for name in header]
    blank = [index + 1 for index, name in enumerate(header) if not name]
    if blank:
        raise IngestionError(f"{uri}: line 1: header has empty column names at positions {blank}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise IngestionError(f"{uri}: line 1: header repeats column names {repeated}")
    columns: list[list[str | None]] = [[] for _ in header]
    rows: list[int] = []
    try:
        for record in reader:
            if not record:
                continue
            if len(record) != len(header):
                raise IngestionError(
                    f"{uri}: line {reader.line_num}: expected {len(header)} fields "
                    f"({', '.join(header)}), found {len(record)}"
                )
            rows.append(reader.line_num)
            for column, value in zip(columns, record, strict=True):
                column.append(value if value != "" else None)
    except csv.Error as error:
        raise IngestionError(f"{uri}: line {reader.line_num}: malformed CSV ({error})") from error
    series = zip(header, columns, strict=True)
    frame = pl.DataFrame([pl.Series(name, values, dtype=pl.Utf8) for name, values in series])
    return frame.with_columns(pl.Series(ROW_COLUMN, rows, dtype=pl.Int64))


def require_columns(uri: str, frame: pl.DataFrame, required: list[str], what: str) -> None:
    """A file-level error naming the missing columns and the ones found."""
    missing = [name for name in required if name not in frame.columns]
    if missing:
        found = [name for name in frame.columns if name != ROW_COLUMN]
        raise IngestionError(
            f"{uri}: missing required column(s) {missing} for {what}; found {found}"
        )


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


def register_drop(
    uri: str, source: str, registry_dir: Path, now: datetime | None = None
) -> DropRegistration:
    """Record a drop once per content; the same bytes dropped again are reported, not re-read."""
    data = read_bytes(uri)
    sha256 = hashlib.sha256(data).hexdigest()
    drop_id = drop_id_for(source, sha256)
    manifest = registry_dir / f"{drop_id}.json"
    if manifest.exists():
        existing = load_drop(drop_id, registry_dir)
        if existing.uri != uri:
            _append_sighting(registry_dir, drop_id, uri, now)
        return DropRegistration(drop=existing, is_new=False, seen_uri=uri)
    registered_at = (now or datetime.now(UTC)).isoformat()
    drop = Drop(drop_id, source, uri, sha256, len(data), registered_at)
    registry_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(manifest, json.dumps(asdict(drop), indent=2))
    return DropRegistration(drop=drop, is_new=True, seen_uri=uri)


def _append_sighting(registry_dir: Path, drop_id: str, uri: str, now: datetime | None) -> None:
    """Keep a trace of every re-drop of known content, so the no-op is on record."""
    log = registry_dir / f"{drop_id}.redrops.jsonl"
    line = json.dumps({"uri": uri, "seen_at": (now or datetime.now(UTC)).isoformat()})
    with log.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


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


def list_supported_files(root: str) -> list[FoundFile]:
    """Every CSV or Parquet file below `root` (a path or any fsspec URI), in a stable order."""
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path) or not fs.isdir(path):
        return []
    local = isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    found = []
    for name, info in sorted(fs.find(path, detail=True).items()):
        if _suffix(name) not in SUPPORTED_SUFFIXES:
            continue
        modified = next(
            (info[k] for k in ("mtime", "LastModified", "ETag", "created") if info.get(k)), ""
        )
        relative = name[len(path.rstrip("/")) + 1 :]
        found.append(
            FoundFile(
                uri=name if local else fs.unstrip_protocol(name),
                relative_parts=tuple(relative.split("/")),
                stamp=f"{info.get('size')}:{modified}",
            )
        )
    return found


def discover_drop_files(root: str) -> list[tuple[str, FoundFile]]:
    """(source, file) for every supported file under `root/<source>/`."""
    return [
        (f.relative_parts[0], f) for f in list_supported_files(root) if len(f.relative_parts) > 1
    ]


def write_text_atomically(path: Path, text: str) -> None:
    """Write whole, then rename: a reader (a sensor, a server) never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
