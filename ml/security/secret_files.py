"""Files that hold secrets: created with mode 0600 from their first byte (in a folder of mode
0700), written whole, and refused when someone else could read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ml.data.atomic_files import write_bytes_atomically


class SecretFileError(ValueError):
    """A secret file that is missing or readable by others, naming the file."""


def private_dir(path: Path) -> Path:
    """`path`, created with mode 0700 (and tightened to it if it exists)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, text: str) -> None:
    private_dir(path.parent)
    write_bytes_atomically(path, text.encode("utf-8"), mode=0o600)


def read_private_file(path: Path, variable: str = "") -> str:
    """The file's text; a file that is missing or that group or others may read is refused."""
    where = f"{variable}={path}" if variable else str(path)
    if not path.is_file():
        raise SecretFileError(f"{where}: no such file")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretFileError(f"{where} is readable by others (mode {mode:o}): chmod 600 it first")
    return path.read_text(encoding="utf-8")
