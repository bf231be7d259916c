"""Snapshots of the warehouse tables nothing can rebuild (frozen test versions, label versions,
split assignments, annotation history): Parquet files beside a manifest of row counts and hashes,
and a restore that checks every file and every row against that manifest before it commits.

A snapshot is a timestamped folder under `<data home>/snapshots/`, written under a hidden
temporary name and renamed into place once its manifest is written: a folder with that name is
complete, anything else is not a snapshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from ml.data.ingestion import file_sha256

if TYPE_CHECKING:  # a runtime alias would keep DuckDB's classes in typing's cache past exit
    OpenWarehouse = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
"""Opens a warehouse connection for one `with` block (the Warehouse resource's `connect`)."""

LINEAGE_TABLES: dict[str, str] = {
    "request_test_sets": "frozen test versions: each cut once from the labels of its day",
    "labeled_requests": "every label version, with its provenance per row",
    "labeled_request_versions": "each label version's row count, content hash and time",
    "split_assignments": (
        "dbt's incremental model with full refresh off: a split depends on the order texts "
        "arrived in, so a rebuild would move texts between splits"
    ),
    "annotation_items": "which request went out in which batch and round, and its status",
    "batch_annotations": "every collected annotation: who answered what, when",
    "annotation_batch_agreement": "the kappa gate's decision for each batch",
}
"""The source of truth for what models were trained and scored on, and why. Everything else in
the warehouse is rebuilt: validated rows from the raw drops, dbt's other models from these."""

SNAPSHOTS_FOLDER = "snapshots"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SNAPSHOT_NAME = re.compile(r"^\d{8}T\d{12}Z$")
"""`20261202T065429123456Z`: UTC time to the microsecond, so names sort by time."""
INCOMPLETE_PREFIX = ".incomplete-"


class SnapshotError(ValueError):
    """A snapshot that is missing, incomplete or changed, or a restore that would overwrite."""


def snapshots_dir(data_home: Path) -> Path:
    return data_home / SNAPSHOTS_FOLDER


@dataclass(frozen=True)
class TableSnapshot:
    name: str
    file: str
    rows: int
    row_sha256: str
    """sha256 over the sorted md5s of every row as JSON: independent of row order."""
    file_sha256: str
    columns: tuple[tuple[str, str], ...]
    """(name, DuckDB type) in table order: the restore recreates the table with these types."""


@dataclass(frozen=True)
class Snapshot:
    folder: Path
    created_at: datetime
    reason: str
    tables: tuple[TableSnapshot, ...]
    absent: tuple[str, ...]
    """Lineage tables the warehouse did not have yet (e.g. no batch annotated)."""

    @property
    def name(self) -> str:
        return self.folder.name

    def manifest(self) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "snapshot": self.name,
            "created_at": self.created_at.isoformat(),
            "reason": self.reason,
            "duckdb_version": duckdb.__version__,
            "tables": {
                table.name: {
                    "file": table.file,
                    "rows": table.rows,
                    "row_sha256": table.row_sha256,
                    "file_sha256": table.file_sha256,
                    "columns": [{"name": name, "type": kind} for name, kind in table.columns],
                }
                for table in self.tables
            },
            "absent": list(self.absent),
        }

    @classmethod
    def from_manifest(cls, folder: Path, manifest: dict) -> Snapshot:
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
        tables = []
        for name, entry in manifest["tables"].items():
            if Path(entry["file"]).name != entry["file"]:
                raise ValueError(f"table {name}: file {entry['file']!r} is not in the folder")
            tables.append(
                TableSnapshot(
                    name=name,
                    file=entry["file"],
                    rows=int(entry["rows"]),
                    row_sha256=str(entry["row_sha256"]),
                    file_sha256=str(entry["file_sha256"]),
                    columns=tuple((c["name"], c["type"]) for c in entry["columns"]),
                )
            )
        return cls(
            folder=folder,
            created_at=datetime.fromisoformat(manifest["created_at"]),
            reason=str(manifest.get("reason", "")),
            tables=tuple(tables),
            absent=tuple(manifest.get("absent", ())),
        )


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def sql_path(path: Path) -> str:
    """`path` as a DuckDB string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def row_digest(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    """(rows, sha256 over the sorted md5 of each row as JSON) of `relation`: the same for the
    same rows in any order. The connection's TimeZone must be UTC (see `utc_session`)."""
    rows, digest = con.execute(
        "select count(*), sha256(coalesce(string_agg(h, '' order by h), '')) "
        f"from (select md5(to_json(r)::varchar) as h from {relation} as r)"
    ).fetchone()
    return int(rows), str(digest)


def utc_session(con: duckdb.DuckDBPyConnection) -> None:
    """Timestamps with a time zone print in the session's zone: hash them in one zone."""
    con.execute("set TimeZone = 'UTC'")


def _export(
    open_warehouse: OpenWarehouse, folder: Path, tables: Iterable[str]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """Copy each present table to `<folder>/<table>.parquet` in one read transaction (one
    consistent state of every table); the connection is held only for the copies."""
    wanted = list(tables)
    columns: dict[str, tuple[tuple[str, str], ...]] = {}
    with open_warehouse() as con:
        con.execute("begin transaction")
        try:
            found = con.execute(
                "select table_name, column_name, data_type from information_schema.columns "
                "where table_schema = 'main' and table_name in (select table_name from "
                "information_schema.tables where table_schema = 'main' "
                "and table_type = 'BASE TABLE') order by table_name, ordinal_position"
            ).fetchall()
            for table, column, kind in found:
                if table in wanted:
                    columns[table] = (*columns.get(table, ()), (column, kind))
            for table in columns:
                target = sql_path(folder / f"{table}.parquet")
                con.execute(f"copy (select * from {_quoted(table)}) to {target} (format parquet)")
        finally:
            con.execute("rollback")
    return {table: columns[table] for table in wanted if table in columns}


def take_snapshot(
    open_warehouse: OpenWarehouse,
    snapshots: Path,
    reason: str,
    tables: Iterable[str] = tuple(LINEAGE_TABLES),
    now: datetime | None = None,
) -> Snapshot:
    """Copy the lineage `tables` to a new snapshot folder under `snapshots`, with its manifest.
    Counts and hashes are computed from the written files, after the warehouse is released."""
    wanted = tuple(tables)
    created = (now or datetime.now(UTC)).astimezone(UTC)
    final = snapshots / created.strftime("%Y%m%dT%H%M%S%fZ")
    if final.exists():
        raise FileExistsError(f"snapshot {final} already exists")
    snapshots.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{INCOMPLETE_PREFIX}{final.name}-", dir=snapshots))
    try:
        exported = _export(open_warehouse, staging, wanted)
        entries = []
        with duckdb.connect() as files:
            utc_session(files)
            for table, columns in exported.items():
                path = staging / f"{table}.parquet"
                rows, digest = row_digest(files, f"read_parquet({sql_path(path)})")
                entries.append(
                    TableSnapshot(table, path.name, rows, digest, file_sha256(path), columns)
                )
        snapshot = Snapshot(
            final, created, reason, tuple(entries), tuple(t for t in wanted if t not in exported)
        )
        with (staging / MANIFEST).open("w", encoding="utf-8") as handle:
            json.dump(snapshot.manifest(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return snapshot


def complete_snapshots(snapshots: Path) -> list[Path]:
    """Every complete snapshot folder, oldest first (half-written ones have another name)."""
    if not snapshots.is_dir():
        return []
    return sorted(
        path
        for path in snapshots.iterdir()
        if path.is_dir() and SNAPSHOT_NAME.match(path.name) and (path / MANIFEST).is_file()
    )


def resolve_snapshot(spec: str, snapshots: Path) -> Path:
    """`latest` (the newest complete snapshot under `snapshots`) or a snapshot folder's path."""
    if spec != "latest":
        return Path(spec).expanduser().resolve()
    found = complete_snapshots(snapshots)
    if not found:
        raise SnapshotError(f"no complete snapshot under {snapshots}: nothing is 'latest'")
    return found[-1]


def verify_snapshot(folder: Path) -> Snapshot:
    """The snapshot's manifest, once every table file is there with the sha256 it was written
    with; else a SnapshotError naming the snapshot and the table."""
    if not folder.is_dir():
        raise SnapshotError(f"snapshot {folder} does not exist")
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise SnapshotError(
            f"snapshot {folder} is incomplete: it has no {MANIFEST} (written last, once every "
            "table file is in place)"
        )
    try:
        snapshot = Snapshot.from_manifest(folder, json.loads(manifest.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SnapshotError(f"snapshot {folder}: {MANIFEST} is unreadable ({error})") from error
    for table in snapshot.tables:
        path = folder / table.file
        if not path.is_file():
            raise SnapshotError(
                f"snapshot {folder}: table {table.name} is incomplete, its file {table.file} is "
                "missing"
            )
        digest = file_sha256(path)
        if digest != table.file_sha256:
            raise SnapshotError(
                f"snapshot {folder}: table {table.name}'s file {table.file} changed after the "
                f"snapshot (sha256 {digest[:12]}…, the manifest says {table.file_sha256[:12]}…)"
            )
    return snapshot


@dataclass(frozen=True)
class Restored:
    snapshot: Snapshot
    rows: dict[str, int]
    """Rows restored per table."""
    replaced: dict[str, int]
    """Rows the warehouse held before, per table it replaced (only with force)."""


def _rows_held(con: duckdb.DuckDBPyConnection, table: str) -> int | None:
    """Rows of `table` in the warehouse, or None where it has no such table."""
    ((found,),) = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'main' and table_name = ?",
        [table],
    ).fetchall()
    if not found:
        return None
    return int(con.execute(f"select count(*) from {_quoted(table)}").fetchone()[0])


def restore_snapshot(folder: Path, open_warehouse: OpenWarehouse, force: bool = False) -> Restored:
    """Restore every table of the snapshot at `folder`, all or nothing: the files are checked
    first, each table is read back against its row count and row hash before the commit, and a
    table that holds rows is replaced only with `force`."""
    snapshot = verify_snapshot(folder)
    with open_warehouse() as con:
        held = {table.name: _rows_held(con, table.name) for table in snapshot.tables}
        occupied = {name: rows for name, rows in held.items() if rows}
        if occupied and not force:
            listed = ", ".join(f"{name} ({rows} rows)" for name, rows in occupied.items())
            raise SnapshotError(
                f"restoring snapshot {snapshot.name}: the warehouse already holds rows in "
                f"{listed}; refusing to overwrite them (pass --force to replace them)"
            )
        utc_session(con)
        con.execute("begin transaction")
        try:
            for table in snapshot.tables:
                name = _quoted(table.name)
                columns = ", ".join(f"{_quoted(c)} {kind}" for c, kind in table.columns)
                con.execute(f"drop table if exists {name}")
                con.execute(f"create table {name} ({columns})")
                source = sql_path(folder / table.file)
                con.execute(f"insert into {name} by name select * from read_parquet({source})")
                rows, digest = row_digest(con, name)
                if (rows, digest) != (table.rows, table.row_sha256):
                    raise SnapshotError(
                        f"restoring snapshot {snapshot.name}: table {table.name} reads back as "
                        f"{rows} rows with row hash {digest[:12]}…, the manifest says "
                        f"{table.rows} rows with {table.row_sha256[:12]}…; nothing was restored"
                    )
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return Restored(
        snapshot,
        {table.name: table.rows for table in snapshot.tables},
        {name: rows for name, rows in occupied.items()},
    )
