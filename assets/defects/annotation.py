"""Cell images through the one annotation loop (assets/annotation_loop.py): unlabeled images →
a batch of Label Studio image tasks, each answered by two people, pre-annotated with the
champion's guess → Cohen's kappa gate → review of disagreements → versioned labels, which the
splits (dbt) give to training."""

import base64
from collections.abc import Mapping

import numpy as np
import pandas as pd
import polars as pl
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    Config,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
)
from pydantic import Field

from assets.annotation_loop import (
    AgreementConfig,
    AnnotationLoop,
    champion_for_scoring,
    collect_batch,
    merge_labels,
)
from assets.defects import GROUP, OWNERS
from assets.metadata import counts_table, preview
from assets.resources import DUCKDB_POOL, LabelStudioResource, ModelRegistry, Warehouse
from ml.annotation.label_studio_client import IMAGE_FROM_NAME, IMAGE_TO_NAME, image_interface
from ml.annotation.selection import pick_candidates
from ml.data import objects
from ml.defects.classifiers import CLASSES
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER

defect_annotation_batches = DynamicPartitionsDefinition(name="defect_annotation_batches")
"""One partition per batch of images sent to Label Studio (a re-annotation round included)."""

DEFECT_ANNOTATION = AnnotationLoop(
    item="image_id",
    label="label",
    shown="image",
    title="Defects",
    batch_prefix="defects",
    partitions=defect_annotation_batches,
    items_table="defect_annotation_items",
    annotations_table="defect_batch_annotations",
    agreement_table="defect_annotation_batch_agreement",
    labels_table="labeled_defect_images",
    versions_table="labeled_defect_image_versions",
)

LABEL_HINTS = {
    "functional": "Uniform cell: no crack, no dark or inactive area (grain texture is fine).",
    "defective": "A crack, a dark or inactive area, or broken fingers, however small.",
}
assert tuple(LABEL_HINTS) == CLASSES, "the labeling choices are the classifier's classes"
INTERFACE = image_interface("Is this solar cell defective?", LABEL_HINTS)


def image_data_uri(uri: str) -> str:
    """The stored image as a data URI: it travels inside the task, so any Label Studio shows it
    whatever holds the data home (a folder or an object store), with nothing to configure."""
    data = objects.read_bytes(uri)
    kind = "jpeg" if data[:3] == b"\xff\xd8\xff" else "tiff" if data[:2] in (b"II", b"MM") else ""
    kind = kind or ("bmp" if data[:2] == b"BM" else "png")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def image_as_sent(item: Mapping[str, object]) -> str:
    """An item's image as its task shows it (and as vetting expects it)."""
    return image_data_uri(str(item["image_uri"]))


class DefectCandidateConfig(Config):
    batch_size: int = 40
    seed: int = 7
    use_champion: bool = True
    """Let the defect classifier's champion score the pool: the images closest to its
    threshold go first, and its guess pre-fills each task."""
    prefer_sources: list[str] = Field(default_factory=list)
    """Sources whose images go first (a drift-triggered run: `serving`, the drifted images)."""


def _score_pool(
    context: AssetExecutionContext, pool: pl.DataFrame, model_registry: ModelRegistry
) -> tuple[pl.DataFrame, str]:
    """The pool with the champion's defect probability, its label and the distance to its
    threshold (`margin`); unchanged (cold start) without a champion or a registry."""
    model, scored_by = champion_for_scoring(context, model_registry, DEFECT_CLASSIFIER)
    if model is None or pool.is_empty():
        return pool, scored_by if model is None else "none"
    answer = model.predict(
        pd.DataFrame({"image": [objects.read_bytes(uri) for uri in pool["image_uri"]]})
    )
    probability = answer["defect_probability"].to_numpy()
    return pool.with_columns(
        pl.Series("margin", np.abs(probability - answer["threshold"].to_numpy())),
        pl.Series("guess", answer["label"].astype(str).to_list(), dtype=pl.Utf8),
        pl.Series("guess_probability", probability.astype(float)),
        pl.lit(scored_by).alias("guessed_by"),
    ), scored_by


@asset(
    deps=["stg_defect_images"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "Picks the next batch of unlabeled cell images for annotation (cold start: random, "
        "stratified by source; with a champion: closest to its threshold first, its guess kept "
        "as the pre-annotation), never one already out for annotation, and registers it as a "
        "new batch."
    ),
)
def defect_annotation_candidates(
    context: AssetExecutionContext,
    config: DefectCandidateConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    if not warehouse.table_exists("stg_defect_images"):
        raise ValueError(
            "stg_defect_images does not exist yet: ingest image drops and build the dbt "
            "models (warehouse_job) before picking annotation candidates"
        )
    # Images labeled by the loop are out already: their accepted batches keep them out.
    pool = warehouse.query(
        "select image_id, image_uri, source, module_type from stg_defect_images "
        "where defective is null order by image_id"
    )
    scored_by = "none"
    if config.use_champion:
        pool, scored_by = _score_pool(context, pool, model_registry)
    if "guess" not in pool.columns:  # the items table keeps one schema, guessed or not
        pool = pool.with_columns(
            pl.lit(None, dtype=pl.Utf8).alias("guess"),
            pl.lit(None, dtype=pl.Float64).alias("guess_probability"),
            pl.lit(None, dtype=pl.Utf8).alias("guessed_by"),
        )
    chosen = pick_candidates(
        pool,
        DEFECT_ANNOTATION.out_for_annotation(warehouse, ("image_id",)),
        config.batch_size,
        config.seed,
        config.prefer_sources,
        item="image_id",
        key="image_id",
        balance_by="guess" if scored_by.startswith(DEFECT_CLASSIFIER) else None,
    )
    if chosen.is_empty():
        return MaterializeResult(
            metadata={"batch": "none", "reason": "no unlabeled image left to send"}
        )
    batch_id = DEFECT_ANNOTATION.new_batch_id(chosen["image_id"].to_list())
    DEFECT_ANNOTATION.register_batch(
        context, warehouse, batch_id, chosen.with_columns(pl.lit(1).alias("round"))
    )
    per_source = chosen.group_by("source").len()
    return MaterializeResult(
        metadata={
            "batch": batch_id,
            "dagster/row_count": chosen.height,
            "unlabeled_pool": pool.height,
            "strategy": chosen["strategy"][0],
            "scored_by": scored_by,
            "per_source": counts_table(dict(per_source.iter_rows()), "source"),
            "preview": preview(chosen.drop("image_uri")),
        }
    )


def _task(row: dict[str, object]) -> dict[str, object]:
    """One image task; with the champion's guess as a pre-annotation when it scored it."""
    task: dict[str, object] = {
        "data": {
            "ext_id": row["ext_id"],
            "image_id": row["image_id"],
            "image": image_as_sent(row),
        }
    }
    if row.get("guess"):
        task["predictions"] = [
            {
                "model_version": row["guessed_by"],
                "score": float(row["guess_probability"]),
                "result": [
                    {
                        "from_name": IMAGE_FROM_NAME,
                        "to_name": IMAGE_TO_NAME,
                        "type": "choices",
                        "value": {"choices": [row["guess"]]},
                    }
                ],
            }
        ]
    return task


@asset(
    partitions_def=defect_annotation_batches,
    deps=[defect_annotation_candidates],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "labelstudio"},
    description=(
        "One Label Studio image-classification project per batch: functional or defective, "
        "hints and instructions, one task per cell image (read from the data home), "
        "pre-annotated with the champion's guess, served to two distinct annotators. Retries "
        "create no duplicate tasks (stable external ids)."
    ),
)
def defect_annotation_batch(
    context: AssetExecutionContext, warehouse: Warehouse, label_studio: LabelStudioResource
) -> MaterializeResult:
    batch_id = context.partition_key
    items = DEFECT_ANNOTATION.batch_items(warehouse, batch_id)
    client = label_studio.client()
    project = client.ensure_project(DEFECT_ANNOTATION.project_title(batch_id), INTERFACE)
    created = client.import_missing(project, [_task(row) for row in items.iter_rows(named=True)])
    guessed = int(items["guess"].is_not_null().sum())
    return MaterializeResult(
        metadata={
            "dagster/row_count": items.height,
            "tasks_created_now": created,
            "pre_annotated": guessed,
            "project": f"{client.url}/projects/{project}/data",
            "round": int(items["round"][0]),
        }
    )


@asset(
    partitions_def=defect_annotation_batches,
    deps=[defect_annotation_batch],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "labelstudio", "duckdb"},
    pool=DUCKDB_POOL,
    check_specs=[
        AssetCheckSpec(
            "kappa_at_least_threshold",
            asset="defect_annotated_batch",
            blocking=True,
            description="Cohen's kappa of the batch ≥ the threshold; else it is re-annotated.",
        )
    ],
    description=(
        "The annotations of a completed image batch with their agreement (Cohen's kappa, per "
        "class, per annotator pair, confusion matrix). Below the kappa threshold the batch is "
        "archived and its images return as a new batch; above it, it is accepted."
    ),
)
def defect_annotated_batch(
    context: AssetExecutionContext,
    config: AgreementConfig,
    warehouse: Warehouse,
    label_studio: LabelStudioResource,
):
    yield from collect_batch(
        context,
        DEFECT_ANNOTATION,
        config,
        warehouse,
        label_studio.client(),
        label_studio.allow_list(),
        INTERFACE,
        CLASSES,
        image_as_sent,
    )


@asset(
    deps=[defect_annotated_batch],
    automation_condition=AutomationCondition.eager(),
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "The labels of every accepted image batch, versioned: agreed labels, and for "
        "disagreements the label a third person's review chose (pending until then), with "
        "provenance per row; defect_image_splits gives the latest version to training."
    ),
)
def labeled_defect_images(
    config: AgreementConfig, warehouse: Warehouse, label_studio: LabelStudioResource
) -> MaterializeResult:
    return merge_labels(
        DEFECT_ANNOTATION,
        config,
        warehouse,
        label_studio.client(),
        label_studio.allow_list(),
        CLASSES,
    )
