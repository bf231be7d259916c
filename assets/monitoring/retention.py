"""Retention: what traffic left behind is deleted once older than the configured number of
days, daily, and each run records what it deleted on `prediction_logs`."""

from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    DefaultScheduleStatus,
    MetadataValue,
    OpExecutionContext,
    ScheduleDefinition,
    job,
    op,
)
from pydantic import Field

from assets.metadata import counts_table
from assets.monitoring.drift import SERVING_SOURCE
from assets.monitoring.image_drift import IMAGES
from assets.resources import DefectIntake, Monitoring, ReleaseControl, RequestIntake
from ml.monitoring.retention import RetentionReport, expire


class RetentionConfig(Config):
    days: int = Field(default=30, ge=1, le=3650)
    """Keep this many days of prediction logs, request logs, serving profiles, drift results
    and drifted traffic."""


@op(
    description=(
        "Delete prediction and request logs, serving profiles, drift results and drifted "
        "traffic older than the retention period (their hour is in their name)."
    )
)
def apply_retention(
    context: OpExecutionContext,
    config: RetentionConfig,
    monitoring: Monitoring,
    release_control: ReleaseControl,
    request_intake: RequestIntake,
    defect_intake: DefectIntake,
) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=config.days)
    report = RetentionReport(cutoff)
    stores = {
        "prediction_logs": monitoring.log_dir,
        "request_log": release_control.request_log_dir,
        "serving_profiles": monitoring.profile("serving"),
        "drift_results": monitoring.profile("drift"),
        "drifted_traffic": f"{request_intake.drops_uri.rstrip('/')}/{SERVING_SOURCE}",
        "image_drift_results": monitoring.profile(IMAGES, "drift"),
        "drifted_images": f"{defect_intake.drops_uri.rstrip('/')}/{SERVING_SOURCE}",
    }
    for store, uri in stores.items():
        deleted = expire(uri, store, cutoff, report)
        context.log.info(f"{store}: {len(deleted)} deleted before {cutoff:%Y-%m-%d %H:00} UTC")
    context.log_event(
        AssetObservation(
            asset_key=AssetKey("prediction_logs"),
            metadata={
                "retention_days": config.days,
                "retention_cutoff": MetadataValue.timestamp(cutoff),
                "retention_deleted": counts_table(report.deleted, "store", "deleted"),
                "retention_kept": counts_table(report.kept, "store", "kept"),
            },
        )
    )


@job(description="Apply the retention period to everything traffic left behind.")
def retention_job() -> None:
    apply_retention()


retention_schedule = ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="15 3 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily at 03:15: delete what is older than the retention period.",
)
