"""The lineage snapshot on the graph: the warehouse tables nothing can rebuild, copied to Parquet
daily and before every training run, so no frozen test version, label version or split lives in
one file only. `python -m orchestration.restore` brings them back."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.metadata import counts_table
from assets.requests import GROUP, OWNERS
from assets.requests.annotation import annotated_batch, annotation_candidates
from assets.requests.datasets import request_test_set
from assets.requests.labels import labeled_requests
from assets.resources import DUCKDB_POOL, DataHome, Warehouse
from ml.data.lineage_snapshot import LINEAGE_TABLES, snapshots_dir, take_snapshot

TRIGGER_TAGS = ("mlops/trigger", "dagster/schedule_name", "dagster/sensor_name")


def _reason(context: AssetExecutionContext) -> str:
    """Which job took the snapshot, and what launched it (schedule, sensor, or a person)."""
    tags = context.run.tags
    trigger = next((tags[tag] for tag in TRIGGER_TAGS if tag in tags), "launched by hand")
    return f"{context.run.job_name} ({trigger}), run {context.run_id}"


@asset(
    deps=[
        "split_assignments",
        request_test_set,
        labeled_requests,
        annotated_batch,
        annotation_candidates,
    ],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"duckdb", "parquet"},
    pool=DUCKDB_POOL,
    description=(
        "A restorable copy of the warehouse tables nothing can rebuild: "
        + ", ".join(LINEAGE_TABLES)
        + ". One timestamped folder of Parquet files under <data home>/snapshots with a "
        "manifest (rows and a row hash per table), taken daily and before every training run "
        "(the classifiers wait for it). The warehouse is read in one read-only transaction. "
        "Restore: `python -m orchestration.restore <folder or latest>`."
    ),
)
def lineage_snapshot(
    context: AssetExecutionContext, data_home: DataHome, warehouse: Warehouse
) -> MaterializeResult:
    if not warehouse.is_duckdb:
        return MaterializeResult(
            metadata={
                "snapshot": "none",
                "reason": "the PostgreSQL warehouse (MLOPS_WAREHOUSE_DATABASE_URL) is backed up "
                "by PostgreSQL's own means (pg_dump, point-in-time recovery); lineage snapshots "
                "are of the embedded DuckDB warehouse",
            }
        )
    if not warehouse.exists():
        return MaterializeResult(
            metadata={"snapshot": "none", "reason": f"no warehouse yet at {warehouse.path}"}
        )
    snapshot = take_snapshot(
        lambda: warehouse.connect(read_only=True), snapshots_dir(data_home.root), _reason(context)
    )
    context.log.info(f"lineage snapshot {snapshot.folder}")
    rows = {table.name: table.rows for table in snapshot.tables}
    return MaterializeResult(
        metadata={
            "snapshot": MetadataValue.path(str(snapshot.folder)),
            "dagster/row_count": sum(rows.values()),
            "tables": counts_table(rows, "table"),
            "not_in_warehouse_yet": ", ".join(snapshot.absent) or "none",
            "reason": snapshot.reason,
            "restore": MetadataValue.md(f"`python -m orchestration.restore {snapshot.folder}`"),
        }
    )
