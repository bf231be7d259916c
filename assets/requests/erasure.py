"""Erasure by request id, run by hand (an ML engineer, on a data subject's request): the
requests leave Label Studio, the warehouse and its snapshots, the drops and raw copies, the
prediction and request logs and the serving windows' features; the erasure is recorded in the
data home's `erasure/erasures.jsonl` and on `validated_requests`."""

import re
from pathlib import Path

from dagster import AssetKey, AssetObservation, Config, OpExecutionContext, job, op
from pydantic import Field, field_validator

from assets.metadata import counts_table
from assets.resources import (
    DUCKDB_POOL,
    DataHome,
    LabelStudioResource,
    Monitoring,
    ReleaseControl,
    Warehouse,
    launched_by,
)
from ml.data.lineage_snapshot import snapshots_dir
from ml.security.encryption import at_rest_cipher
from ml.security.erasure import (
    ErasureReport,
    erase_from_drops,
    erase_from_logs,
    erase_from_parquet_files,
    erase_from_raw_copies,
    erase_from_snapshots,
    erase_from_warehouse,
    record_erasure,
)

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class ErasureConfig(Config):
    request_ids: list[str] = Field(min_length=1, max_length=10_000)
    """The requests to erase: the `request_id` the service answered with, or the warehouse's."""
    requested_by: str = Field(min_length=1, max_length=200)
    """Who asked for the erasure (the data subject's ticket, or the person)."""
    reason: str = Field(min_length=3, max_length=500)

    @field_validator("request_ids")
    @classmethod
    def _well_formed(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not REQUEST_ID_PATTERN.fullmatch(i)]
        if bad:
            raise ValueError(
                f"request ids {bad[:5]} are not request ids (1-128 letters, digits, '_.:-')"
            )
        return ids


def sent_to_annotation(warehouse: Warehouse, request_ids: set[str]) -> int:
    """How many of the requests went out to Label Studio (the annotation items say so)."""
    found = warehouse.query_if_exists(
        "annotation_items",
        "select count(distinct request_id) as n from annotation_items "
        "where request_id in (select unnest(?::varchar[]))",
        [sorted(request_ids)],
        {"n": int},
    )
    return int(found["n"][0]) if found.height else 0


@op(
    description=(
        "Erase requests by id from Label Studio, the warehouse and its snapshots, the drops and "
        "raw copies, the logs and the serving features; record the erasure. Running it again "
        "removes nothing more."
    ),
    pool=DUCKDB_POOL,
)
def erase_requests(
    context: OpExecutionContext,
    config: ErasureConfig,
    data_home: DataHome,
    warehouse: Warehouse,
    label_studio: LabelStudioResource,
    monitoring: Monitoring,
    release_control: ReleaseControl,
) -> None:
    ids = set(config.request_ids)
    report = ErasureReport(tuple(sorted(ids)))
    # Label Studio first: if it cannot be reached the run fails before anything else changed,
    # and a retry does the whole erasure.
    if sent_to_annotation(warehouse, ids):
        report.add("label_studio_tasks", label_studio.client().delete_tasks_of_requests(ids))
    else:
        report.add("label_studio_tasks", 0)
    if warehouse.exists():
        with warehouse.transaction() as session:
            erased = erase_from_warehouse(session, ids)
        warehouse.compact()
        for table, rows in erased.removed.items():
            report.add(f"warehouse.{table}", rows)
    else:
        erased = None
    source_rows = erased.source_rows if erased else {}
    report.add(
        "snapshots",
        erase_from_snapshots(
            snapshots_dir(data_home.root), ids, erased.text_keys if erased else ()
        ),
    )
    report.add("drops", erase_from_drops(data_home.drop_registry_dir, source_rows, ids))
    report.add("raw_copies", erase_from_raw_copies(data_home.raw_location, source_rows, ids))
    cipher = at_rest_cipher()
    report.add("prediction_logs", erase_from_logs(monitoring.log_dir, ids, cipher))
    report.add("request_log", erase_from_logs(Path(release_control.request_log_dir), ids, cipher))
    report.add("serving_features", erase_from_parquet_files(monitoring.profile("serving"), ids))
    entry = record_erasure(
        data_home.root / "erasure",
        report,
        config.requested_by,
        config.reason,
        erased_by=f"{launched_by(context.run.tags)}, dagster run {context.run_id}",
    )
    context.log.info(
        f"erased {len(ids)} request(s): {report.total} records removed "
        f"({', '.join(f'{k} {v}' for k, v in entry['removed'].items() if v) or 'none found'})"
    )
    context.log_event(
        AssetObservation(
            asset_key=AssetKey("validated_requests"),
            metadata={
                "erasure_requested_by": config.requested_by,
                "erasure_reason": config.reason,
                "erased_request_ids": len(ids),
                "erased_records": counts_table(report.removed, "store", "removed"),
                "dagster_run": context.run_id,
            },
        )
    )


@job(description="Erase requests by id everywhere the platform keeps them, recorded.")
def erasure_job() -> None:
    erase_requests()
