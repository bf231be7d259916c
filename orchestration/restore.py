"""Restore the lineage tables (test versions, label versions, split assignments, annotation
history) from a snapshot into this data home's warehouse (MLOPS_DATA_HOME):

    .venv/bin/python -m orchestration.restore latest
    .venv/bin/python -m orchestration.restore /backup/snapshots/20261202T023000123456Z --force

Every file is checked against the snapshot's manifest and every table read back against its row
count and row hash before anything is committed; tables that hold rows are replaced only with
--force. The other tables are rebuilt by the platform itself (`make demo`, or the jobs).
"""

import argparse
import sys
from pathlib import Path

import duckdb

from assets.resources import warehouse_of
from ml.data.lineage_snapshot import (
    SnapshotError,
    resolve_snapshot,
    restore_snapshot,
    snapshots_dir,
)
from ml.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "snapshot", help="a snapshot folder, or 'latest' (the newest under <data home>/snapshots)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace tables that already hold rows"
    )
    parser.add_argument(
        "--data-home", type=Path, help="restore into this data home (default: MLOPS_DATA_HOME)"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.data_home:
        settings = settings.moved_to(args.data_home.expanduser().resolve())
    warehouse = warehouse_of(settings)
    if not warehouse.is_duckdb:
        print(
            "restore refused: snapshots hold the embedded DuckDB warehouse; the PostgreSQL "
            "warehouse (MLOPS_WAREHOUSE_DATABASE_URL) is restored with pg_restore",
            file=sys.stderr,
        )
        return 1
    try:
        folder = resolve_snapshot(args.snapshot, snapshots_dir(settings.data_home))
        restored = restore_snapshot(folder, warehouse.connect, force=args.force)
    except SnapshotError as error:
        print(f"restore refused: {error}", file=sys.stderr)
        return 1
    except duckdb.IOException as error:
        print(
            f"restore failed: the warehouse {warehouse.path} stayed locked by another process "
            f"({error}); stop what holds it (`make dev`, a running job) and retry",
            file=sys.stderr,
        )
        return 1
    print(f"restored snapshot {restored.snapshot.name} ({restored.snapshot.reason})")
    print(f"into {warehouse.path}")
    for table, rows in restored.rows.items():
        replaced = restored.replaced.get(table)
        note = f" (replaced {replaced:,} rows)" if replaced else ""
        print(f"  {table}: {rows:,} rows{note}")
    for table in restored.snapshot.absent:
        print(f"  {table}: not in the snapshot (the warehouse had none yet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
