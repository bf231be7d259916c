"""Sensors of the defect-inspection domain: new image drops, image batches to send to Label
Studio, and image batches fully annotated."""

import json

from dagster import DefaultSensorStatus, SensorEvaluationContext, sensor

from assets.annotation_sensors import annotation_sensors
from assets.defects.annotation import DEFECT_ANNOTATION
from assets.defects.intake import defect_drops
from assets.defects.jobs import (
    defect_annotated_batch_job,
    defect_annotation_batch_job,
    defect_ingest_job,
)
from assets.drop_sensors import drop_sensor_result
from assets.resources import DataHome, DefectIntake
from ml.data.drops import DropScan, scan_drops
from ml.defects.drops import IMAGE_DROP_SUFFIXES


def scan_defect_drops(
    data_home: DataHome,
    defect_intake: DefectIntake,
    cursor: dict[str, object],
    *,
    settle: bool = False,
) -> DropScan:
    """Register every image drop under `<drops>/<source>/` not yet handled (see
    scan_request_drops: the same registry, refusals and settling)."""
    return scan_drops(
        defect_intake.drops_uri,
        data_home.drop_registry_dir,
        data_home.refused_drops_dir,
        cursor,
        settle=settle,
        max_bytes=defect_intake.max_drop_bytes,
        suffixes=IMAGE_DROP_SUFFIXES,
    )


@sensor(
    job=defect_ingest_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Watches the image drops folder (<drops>/<source>/*.zip or *.parquet, any fsspec URI); "
        "each new file, once two ticks see it unchanged, becomes a partition of "
        "raw_defect_images and one ingest run; re-drops and refused files are recorded on "
        "raw_defect_images."
    ),
)
def defect_drop_sensor(
    context: SensorEvaluationContext, data_home: DataHome, defect_intake: DefectIntake
):
    scan = scan_defect_drops(
        data_home, defect_intake, json.loads(context.cursor or "{}"), settle=True
    )
    return drop_sensor_result(context, scan, defect_drops, "raw_defect_images")


defect_annotation_batch_sensor, defect_annotation_complete_sensor = annotation_sensors(
    DEFECT_ANNOTATION,
    "defect_",
    defect_annotation_batch_job.name,
    defect_annotated_batch_job.name,
    "defect_annotation_batch",
    "defect_annotated_batch",
)
