"""Every file the platform writes is written atomically: a unique temporary name in the same
folder, fsync, rename (and the folder fsynced), so a reader sees the old file or the new one,
never half of either."""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import polars as pl

# --- writing whole files ----------------------------------------------------------------------


def write_bytes_atomically(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write to a unique hidden temporary file in the same folder, fsync, then rename: a reader
    (a sensor, a server) sees the old file or the whole new one, never half of it, and two
    writers never share a temporary file. `mode` 0o600 makes a private file private from its
    first byte."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: the name is this writer's alone; mode 0o666 lets the umask decide, as open() does.
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a platform without folder handles skips it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_text_atomically(path: Path, text: str) -> None:
    """UTF-8 text, written whole (see `write_bytes_atomically`)."""
    write_bytes_atomically(path, text.encode("utf-8"))


def append_line_atomically(path: Path, line: str) -> None:
    """`line` added at the end of a small append-only text file, the whole file written again
    atomically: a reader sees it with or without the line, never half of one."""
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    write_text_atomically(path, before + line + "\n")


def write_parquet_atomically(path: Path, frame: pl.DataFrame) -> None:
    """A Parquet file, written whole (see `write_bytes_atomically`)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_bytes_atomically(path, buffer.getvalue())
