"""Cell images: each image drop (a ZIP of images with its labels.csv, or a Parquet of encoded
images) → raw copy → valid images kept by content id + quarantined files with their reasons;
the valid images are published to dbt only when every blocking check of the drop passes."""

from datetime import UTC, datetime

import numpy as np
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
    multi_asset,
)

from assets.contract_outputs import PUBLISHED, prepare_publication, publication_of
from assets.defects import GROUP, OWNERS
from assets.metadata import column_schema, counts_table, picture, preview
from assets.resources import DUCKDB_POOL, DataHome, DefectIntake, Warehouse
from ml.data import objects
from ml.data.drops import load_drop
from ml.data.ingestion import IngestionError, read_bytes
from ml.defects.drops import raw_image_table, read_image_drop, split_raw_table
from ml.defects.features import image_statistics
from ml.defects.images import decode, validate_image_drop
from ml.plots import bar_figure, image_grid_figure

defect_drops = DynamicPartitionsDefinition(name="defect_drops")
"""One partition per dropped file, keyed `<source>-<content hash>`: the same bytes, the same key."""

VALIDATED, QUARANTINE = "validated_defect_images", "quarantine_defect_images"
HIDDEN_LABELS = "hidden_defect_labels"
"""The labels of hidden-label sources, kept aside: the simulated annotators' answers."""
CHECKS = {
    "rows_reconcile": "Files and label rows in = valid + quarantined, for this drop.",
    "no_duplicate_images": "No image content appears twice among the published images.",
    "quarantine_share_within_limit": (
        "At most the intake's max_quarantine_share of the drop's files quarantined: more says "
        "the drop as a whole is wrong (a camera setting, a folder), so none of it is published."
    ),
}
SHOWN = 16
"""Images on a contact sheet."""


@asset(
    partitions_def=defect_drops,
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "parquet"},
    description=(
        "Each image drop exactly as read: one row per file (its name and bytes) and per label "
        "row, one partition per drop. Dropping identical content again is recorded, not "
        "re-ingested."
    ),
)
def raw_defect_images(
    context: AssetExecutionContext, data_home: DataHome, defect_intake: DefectIntake
) -> MaterializeResult:
    drop = load_drop(context.partition_key, data_home.drop_registry_dir)
    images, labels = read_image_drop(drop.uri, read_bytes(drop.uri))
    raw = raw_image_table(images, labels)
    objects.write_parquet(data_home.raw_partition_uri("defects", drop.drop_id), raw)
    return MaterializeResult(
        metadata={
            "dagster/row_count": images.height,
            "label_rows": 0 if labels is None else labels.height,
            "source": drop.source,
            "file": drop.uri,
            "sha256": drop.sha256,
            "size_bytes": drop.size_bytes,
            "registered_at": drop.registered_at,
            "preview": preview(raw.drop("image")),
        }
    )


def _contact_sheet(pixels: list[np.ndarray], captions: list[str], title: str):
    return picture(image_grid_figure(pixels, captions, title), title)


@multi_asset(
    specs=[
        AssetSpec(
            VALIDATED,
            deps=[raw_defect_images],
            group_name=GROUP,
            owners=OWNERS,
            code_version="1",
            kinds={"python", "duckdb"},
            description=(
                "Valid cell images (decoded whole, 8-bit grayscale, of a sane size, neither blank "
                "nor saturated, content not seen before), one row per content id with where the "
                "image is kept, its label and its statistics. A drop's images are `published` "
                "(read by dbt) only when all its blocking checks pass."
            ),
        ),
        AssetSpec(
            QUARANTINE,
            deps=[raw_defect_images],
            group_name=GROUP,
            owners=OWNERS,
            code_version="1",
            kinds={"python", "duckdb"},
            description=(
                "Image files and label rows that failed intake, each reason named (`kind: "
                "detail`); the files' bytes stay in the drop's raw copy."
            ),
        ),
    ],
    partitions_def=defect_drops,
    check_specs=[
        AssetCheckSpec(name, asset=VALIDATED, description=text, blocking=True)
        for name, text in CHECKS.items()
    ],
    pool=DUCKDB_POOL,
)
def validate_defect_images(
    context: AssetExecutionContext,
    data_home: DataHome,
    warehouse: Warehouse,
    defect_intake: DefectIntake,
):
    drop = load_drop(context.partition_key, data_home.drop_registry_dir)
    raw_uri = data_home.raw_partition_uri("defects", drop.drop_id)
    if not objects.exists(raw_uri):
        raise IngestionError(
            f"no raw copy of drop {drop.drop_id} at {raw_uri}; materialize raw_defect_images first"
        )
    files, labels = split_raw_table(objects.read_parquet(raw_uri))
    prepare_publication(warehouse, VALIDATED)
    earlier = warehouse.query_if_exists(
        VALIDATED,
        f"select image_id, drop_id, file_name from {VALIDATED} where {PUBLISHED} and drop_id <> ?",
        [drop.drop_id],
        {"image_id": pl.Utf8, "drop_id": pl.Utf8, "file_name": pl.Utf8},
    )
    outcome = validate_image_drop(
        files,
        labels,
        earlier={
            i: f"{d}/{f}"
            for i, d, f in earlier.select("image_id", "drop_id", "file_name").iter_rows()
        },
    )
    stats = pl.DataFrame(
        [image_statistics(outcome.pixels[i]) for i in outcome.valid["image_id"]],
        schema={"brightness": pl.Float64, "contrast": pl.Float64, "sharpness": pl.Float64},
    )
    by_name = {f.file_name: f.data for f in files}
    locations = []
    for image_id, name in outcome.valid.select("image_id", "file_name").iter_rows():
        location = defect_intake.image_location(image_id, name)
        if not objects.exists(location):  # content-addressed: a retry writes nothing twice
            objects.write_bytes(location, by_name[name])
        locations.append(location)
    now = datetime.now(UTC)
    valid = pl.concat([outcome.valid, stats], how="horizontal").with_columns(
        pl.Series("image_uri", locations, dtype=pl.Utf8),
        pl.lit(drop.drop_id).alias("drop_id"),
        pl.lit(drop.source).alias("source"),
        pl.lit(now).alias("validated_at"),
    )
    quarantine = outcome.quarantine.with_columns(
        pl.lit(drop.drop_id).alias("drop_id"),
        pl.lit(raw_uri).alias("raw_copy"),
        pl.lit(now).alias("quarantined_at"),
    )
    files_in = len(files)
    quarantined_files = quarantine.filter(pl.col("kind") == "image").height
    share = quarantined_files / files_in if files_in else 0.0
    published_ids = pl.concat([earlier["image_id"], valid["image_id"]])
    checks = [
        _check(
            "rows_reconcile",
            outcome.reconciles,
            rows_in=outcome.rows_in,
            valid=valid.height,
            quarantined=quarantine.height,
        ),
        _check(
            "no_duplicate_images",
            published_ids.len() == published_ids.n_unique(),
            duplicates=published_ids.len() - published_ids.n_unique(),
        ),
        _check(
            "quarantine_share_within_limit",
            share <= defect_intake.max_quarantine_share,
            quarantined_share=round(share, 4),
            limit=defect_intake.max_quarantine_share,
        ),
    ]
    publication = publication_of(checks)
    this_drop = ("drop_id = ?", [drop.drop_id])
    changes = [(QUARANTINE, quarantine, *this_drop)]
    hides_labels = drop.source in defect_intake.hidden_label_sources
    if hides_labels:
        hidden = valid.filter(pl.col("defective").is_not_null()).select(
            "image_id", "defective", "defect_probability", "source", "drop_id"
        )
        # The labels go aside (the simulated annotators' answers; a blocked drop's are not
        # kept); the images enter as unlabeled work for the annotation loop.
        changes.append(
            (HIDDEN_LABELS, hidden if publication.published else hidden.clear(), *this_drop)
        )
        valid = valid.with_columns(
            pl.lit(None, dtype=pl.Boolean).alias("defective"),
            pl.lit(None, dtype=pl.Float64).alias("defect_probability"),
        )
    warehouse.replace_rows_together([(VALIDATED, publication.stamp(valid), *this_drop), *changes])
    shown = valid.head(SHOWN)
    labels_of = valid.group_by(
        pl.when(pl.col("defective")).then(pl.lit("defective"))
        .when(~pl.col("defective")).then(pl.lit("functional"))
        .otherwise(pl.lit("unlabeled")).alias("label")
    ).len()  # fmt: skip
    metadata = {
        "dagster/row_count": valid.height,
        "rows_in": outcome.rows_in,
        "quarantined": quarantine.height,
        **publication.metadata(),
        "labels": counts_table(dict(labels_of.sort("label").iter_rows()), "label"),
        "labels_hidden": hides_labels,
        "dagster/column_schema": column_schema(valid),
        "preview": preview(valid.drop("image_uri")),
    }
    if shown.height:
        metadata["images"] = _contact_sheet(
            [outcome.pixels[i] for i in shown["image_id"]],
            [
                f"{n.rsplit('/', 1)[-1]}\n{p if p is not None else '?'}"
                for n, p in zip(shown["file_name"], shown["defect_probability"], strict=True)
            ],
            f"Valid images of {drop.drop_id} (first {shown.height}; defect probability)",
        )
    yield MaterializeResult(asset_key=VALIDATED, metadata=metadata)
    reasons = outcome.reason_counts()
    quarantine_metadata = {
        "dagster/row_count": quarantine.height,
        "reasons": counts_table(reasons, "reason"),
        "preview": preview(quarantine),
    }
    if reasons:
        quarantine_metadata["reason_chart"] = picture(
            bar_figure(reasons, "Quarantined files per reason"), "Quarantined files per reason"
        )
    decodable = [
        (name, reason, pixels)
        for name, reason in quarantine.select("file_name", "reasons").iter_rows()
        if not reason.startswith("too large")
        and (pixels := _decodes(by_name.get(name))) is not None
    ][:SHOWN]
    if decodable:
        quarantine_metadata["images"] = _contact_sheet(
            [p for _, _, p in decodable],
            [f"{n.rsplit('/', 1)[-1]}\n{r.split(':')[0]}" for n, r, _ in decodable],
            "Quarantined images that decode (first ones; reason)",
        )
    yield MaterializeResult(asset_key=QUARANTINE, metadata=quarantine_metadata)
    yield from checks


def _decodes(data: bytes | None) -> np.ndarray | None:
    if not data:
        return None
    try:
        pixels = decode(data)[1]
    except Exception:  # a file that does not decode has no picture to show
        return None
    return pixels if pixels.ndim == 2 else None


def _check(name: str, passed: bool, **metadata: object) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=AssetKey(VALIDATED),
        check_name=name,
        passed=bool(passed),
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
    )
