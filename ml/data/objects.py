"""Files addressed by URI: a local path or any fsspec URI (s3://bucket/… for the production
profile's object store). Written whole either way: locally under a hidden temporary name renamed
in; an object store publishes an object only once it is whole."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fsspec
import fsspec.implementations.local
import polars as pl

from ml.data.atomic_files import write_bytes_atomically


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str, bool]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path, isinstance(fs, fsspec.implementations.local.LocalFileSystem)


def write_bytes(uri: str, data: bytes) -> str:
    """Write `data` whole at `uri`; the URI written."""
    fs, path, local = _filesystem(uri)
    if local:
        write_bytes_atomically(Path(path), data)
        return path
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)
    return fs.unstrip_protocol(path)


def join(root: str | Path, *parts: str) -> str:
    """`root`/`parts…`, for a folder and an object-store prefix alike."""
    return "/".join([str(root).rstrip("/"), *parts])


def write_json(uri: str, value: object) -> str:
    return write_bytes(uri, json.dumps(value, indent=1, default=str).encode())


def read_json(uri: str) -> object:
    return json.loads(read_bytes(uri))


def write_parquet(uri: str, frame: pl.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return write_bytes(uri, buffer.getvalue())


def read_parquet(uri: str) -> pl.DataFrame:
    fs, path, _ = _filesystem(uri)
    with fs.open(path, "rb") as handle:
        return pl.read_parquet(handle.read())


def exists(uri: str) -> bool:
    fs, path, _ = _filesystem(uri)
    return fs.exists(path)


def files_under(root: str, suffix: str | tuple[str, ...]) -> list[str]:
    """The URIs of the files below `root` whose names end in `suffix` (or one of them), in a
    stable order (none while `root` does not exist); one listing."""
    fs, path, local = _filesystem(root)
    if not fs.exists(path):
        return []
    found = sorted(name for name in fs.find(path) if name.endswith(suffix))
    return found if local else [fs.unstrip_protocol(name) for name in found]


def stem(uri: str) -> str:
    """The file name without its suffix (a drop id, a partition key)."""
    return Path(uri.rsplit("/", 1)[-1]).stem


def read_bytes(uri: str) -> bytes:
    fs, path, _ = _filesystem(uri)
    return fs.cat_file(path)


def remove(uri: str, missing_ok: bool = False) -> None:
    fs, path, _ = _filesystem(uri)
    if missing_ok and not fs.exists(path):
        return
    fs.rm_file(path)
