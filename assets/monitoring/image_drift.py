"""Drift of the inspected cell images, by the request drift's machinery: a reference of the
defect classifier's training images (their features and whylogs profile), each hour of
/inspect traffic's served images measured the same way and compared with it. A drifted hour's
images re-enter as an unlabeled `serving` image drop; defect_drift_sensor then requests one
defect retraining run.

Files live under the monitoring profile store's `defects/` prefix: `reference/<version>/`,
`reference/current.json` and `drift/<window>.json`, beside the requests' own.
"""

import hashlib
import io
from datetime import datetime

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.metadata import markdown_table, picture
from assets.monitoring import GROUP, OWNERS
from assets.monitoring.drift import (
    PROFILE_FILE,
    CurrentReference,
    current_reference,
    judge_window,
    make_current,
    monitoring_windows,
    prediction_logs,
    record_drift_report,
    report_metadata,
    window_outcome,
    write_serving_drop,
)
from assets.resources import DefectIntake, Monitoring, Warehouse
from ml.data import objects
from ml.defects.drops import RAW_COLUMNS
from ml.defects.images import decode, served_image_uri
from ml.monitoring.drift import profile, serialize_profile
from ml.monitoring.image_features import (
    IMAGE_FEATURES,
    ImageReference,
    build_image_reference,
    image_feature_frame,
)
from ml.monitoring.prediction_log import read_predictions
from ml.plots import image_grid_figure

IMAGES = "defects"
"""The profile store's prefix for cell-image monitoring."""
INSPECT = "inspect"
"""The service's endpoint whose answers are monitored here."""
REFERENCE_IMAGES = 300
"""Training images sampled (seeded) for the reference: its centroid, spread and profile."""
SHOWN = 16


@asset(
    deps=["defect_image_splits"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"whylogs", "python"},
    description=(
        "What inspected images are compared with: a seeded sample of the labeled training "
        "images of the defect classifier (defect_image_splits), their brightness, contrast, "
        "sharpness and size, the centroid of their baseline features, each image's distance "
        "from it, and a whylogs profile of all of these."
    ),
)
def defect_image_reference(
    context: AssetExecutionContext, warehouse: Warehouse, monitoring: Monitoring
) -> MaterializeResult:
    train = warehouse.query(
        "select image_id, image_uri from defect_image_splits "
        "where split = 'train' and defective is not null order by image_id"
    )
    needed = monitoring.min_rows * monitoring.min_reference_ratio
    if train.height < needed:
        raise ValueError(
            f"{train.height} labeled training images in defect_image_splits: the reference "
            f"needs at least {needed:.0f} (min_rows × min_reference_ratio) to judge the "
            "smallest window"
        )
    sample = train.sample(min(REFERENCE_IMAGES, train.height), seed=0).sort("image_id")
    pixels = [decode(objects.read_bytes(uri))[1] for uri in sample["image_uri"]]
    reference = build_image_reference(pixels)
    features = image_feature_frame(pixels, reference)
    digest = hashlib.sha256("\n".join(sample["image_id"]).encode()).hexdigest()[:12]
    version = f"images-{sample.height}-{digest}"
    folder = monitoring.profile(IMAGES, "reference", version)
    reference.save(folder)
    objects.write_bytes(objects.join(folder, PROFILE_FILE), serialize_profile(profile(features)))
    make_current(monitoring, CurrentReference(version, folder, features.height), IMAGES)
    context.log.info(f"image reference {version} ({train.height} training images) in {folder}")
    return MaterializeResult(
        metadata={
            "reference_version": version,
            "training_images": train.height,
            "profiled_rows": features.height,
            "judges_windows_up_to": int(features.height / monitoring.min_reference_ratio),
            "folder": MetadataValue.path(folder),
            "summary": markdown_table(features.describe()),
        }
    )


def served_images(
    monitoring: Monitoring, defect_intake: DefectIntake, start: datetime, end: datetime
) -> tuple[pl.DataFrame, int]:
    """The images inspected in [start, end) (image_id, image bytes), each image once (a
    client's retry is not a second draw), and how many the image home does not hold (served
    before images were kept, or since erased)."""
    logged = read_predictions(monitoring.log_dir, start, end, endpoint=INSPECT)
    image_ids = logged.select(
        pl.col("input").str.json_decode(pl.Struct({"image_id": pl.Utf8})).struct.field("image_id")
    )["image_id"].unique(maintain_order=True)
    kept, missing = [], 0
    for image_id in image_ids:
        uri = served_image_uri(defect_intake.image_uri, image_id)
        if objects.exists(uri):
            kept.append((image_id, objects.read_bytes(uri)))
        else:
            missing += 1
    frame = pl.DataFrame(kept, schema={"image_id": pl.Utf8, "image": pl.Binary}, orient="row")
    return frame, missing


def image_drop(served: pl.DataFrame) -> bytes:
    """Served images as an unlabeled Parquet image drop (`file_name`, `image`), in a stable
    order: the same images, the same bytes."""
    files = served.select((pl.col("image_id") + ".png").alias("file_name"), "image").sort(
        "file_name"
    )
    buffer = io.BytesIO()
    files.cast(RAW_COLUMNS).write_parquet(buffer)
    return buffer.getvalue()


@asset(
    partitions_def=monitoring_windows,
    deps=[prediction_logs, defect_image_reference],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"whylogs", "python"},
    description=(
        "Drift of one hour of inspected cell images against the image reference: each served "
        "image's brightness, contrast, sharpness, size and distance from the training images' "
        "centroid, profiled with whylogs and compared per column (KS and tail counts, Holm "
        "across columns; thresholds in the monitoring resource). A drifted hour's images are "
        "dropped as an unlabeled `serving` image drop for annotation; defect_drift_sensor then "
        "requests one defect retraining run."
    ),
)
def defect_image_drift(
    context: AssetExecutionContext, monitoring: Monitoring, defect_intake: DefectIntake
) -> MaterializeResult:
    reference = current_reference(monitoring, IMAGES)
    window = context.partition_time_window
    served, missing = served_images(monitoring, defect_intake, window.start, window.end)
    outcome = window_outcome(context, reference, served.height)
    window_key = str(outcome["window"])
    outcome["missing_images"] = missing
    metadata: dict[str, object] = {
        "window": window_key,
        "rows": served.height,
        "missing_images": missing,
    }
    if served.height < monitoring.min_rows:
        outcome["note"] = (
            f"too little traffic: {served.height} inspected images, fewer than "
            f"{monitoring.min_rows}; no verdict"
        )
    else:
        pixels = [decode(data)[1] for data in served["image"]]
        features = image_feature_frame(pixels, ImageReference.load(reference.folder))
        report = judge_window(monitoring, reference, features, IMAGE_FEATURES, outcome, IMAGES)
        metadata.update(report_metadata(report, f"Image drift {window_key}"))
        metadata["summary"] = markdown_table(features.describe())
        if report.drifted:
            outcome["drop_id"] = write_serving_drop(
                defect_intake.drops_uri, window_key, ".parquet", image_drop(served)
            )
            title = f"Inspected images, {window_key}"
            metadata["drifted_images"] = picture(
                image_grid_figure(
                    pixels[:SHOWN], [i[:12] for i in served["image_id"][:SHOWN]], title
                ),
                title,
            )
    return record_drift_report(
        context,
        monitoring,
        outcome,
        metadata,
        f"{reference.version}: {reference.rows} training images "
        f"(judges up to {int(reference.rows / monitoring.min_reference_ratio)} images a window)",
        IMAGES,
    )
