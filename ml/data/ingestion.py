"""Reading source files (CSV or Parquet, any fsspec URI) exactly as they are, with errors that
name the file and line, and hashing them by streaming (the identity of a drop).

Registering drops and scanning the drops folder is ml/data/drops.py; writing files,
ml/data/atomic_files.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from pathlib import Path

import fsspec
import fsspec.implementations.local
import polars as pl

ROW_COLUMN = "_row"
"""Line number of each record in its file (CSV: the header is line 1), so errors can point at it."""

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")

DEFAULT_MAX_DROP_BYTES = 2 * 1024**3
"""The largest file taken as a drop (2 GiB): the raw copy and the validation read it whole."""
_CHUNK_BYTES = 1 << 20

SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A source folder's name: it becomes part of the drop id, a Dagster partition key and a file
name, so only letters, digits, '_' and '-' (Dagster refuses keys with '...' or control
characters)."""


class IngestionError(ValueError):
    """A source file cannot be read as a table; the message names the file and what was wrong."""


def file_suffix(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1].lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return os.path.splitext(name)[1]


class DropTooLarge(IngestionError):
    """A file over the size cap: refused before it is read whole."""


def _read_error(uri: str, error: OSError) -> IngestionError:
    if isinstance(error, FileNotFoundError):
        return IngestionError(f"{uri}: file not found")
    if isinstance(error, IsADirectoryError):
        return IngestionError(f"{uri}: is a folder, expected a CSV or Parquet file")
    if isinstance(error, PermissionError):
        return IngestionError(f"{uri}: cannot be read: permission denied")
    return IngestionError(f"{uri}: cannot be read ({error})")


def _compression(uri: str) -> str | None:
    """gzip for a `.gz` name, else none: an archive (a ZIP image drop) is read as the bytes it
    is, not as its first member."""
    return "gzip" if uri.lower().endswith(".gz") else None


def read_bytes(uri: str) -> bytes:
    """The file's bytes, decompressed if its name ends in `.gz`."""
    try:
        with fsspec.open(uri, "rb", compression=_compression(uri)) as handle:
            return handle.read()
    except OSError as error:
        raise _read_error(uri, error) from error


def file_sha256(path: Path) -> str:
    """The sha256 of a local file, read in 1 MiB blocks (snapshots, model artifacts)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(uri: str, max_bytes: int = DEFAULT_MAX_DROP_BYTES) -> tuple[str, int]:
    """(sha256, size) of the file's content, hashed in chunks: the identity of a drop, whatever
    its name. More than `max_bytes` is refused as soon as the stream passes the cap."""
    digest, size = hashlib.sha256(), 0
    try:
        with fsspec.open(uri, "rb", compression=_compression(uri)) as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise DropTooLarge(
                        f"{uri}: larger than the drop size cap of {max_bytes} bytes "
                        "(MLOPS_MAX_DROP_BYTES); split the file or raise the cap"
                    )
                digest.update(chunk)
    except OSError as error:
        raise _read_error(uri, error) from error
    except EOFError as error:
        raise IngestionError(f"{uri}: compressed stream ends early ({error})") from error
    return digest.hexdigest(), size


def read_raw_table(uri: str, data: bytes | None = None) -> pl.DataFrame:
    """Every column as text, plus `_row`; nothing is typed, renamed or dropped here."""
    suffix = file_suffix(uri)
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
