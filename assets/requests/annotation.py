"""The annotation loop: unlabeled requests → a batch of Label Studio tasks, each labeled by two
people → agreement (Cohen's kappa), gated: a low-agreement batch is never merged, it goes back
for re-annotation as a new batch."""

from collections.abc import Mapping

import numpy as np
import pandas as pd
import polars as pl
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
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
)
from assets.metadata import counts_table, preview
from assets.requests import GROUP, OWNERS
from assets.resources import (
    DUCKDB_POOL,
    LabelStudioResource,
    ModelRegistry,
    RequestIntake,
    Warehouse,
)
from ml.annotation.label_studio_client import text_interface
from ml.annotation.selection import pick_candidates, prediction_margins
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.security.redaction import redact

annotation_batches = DynamicPartitionsDefinition(name="annotation_batches")
"""One partition per batch sent to Label Studio; a re-annotation round is a batch of its own."""

REQUEST_ANNOTATION = AnnotationLoop(
    item="request_id",
    label="intent",
    shown="text",
    title="Requests",
    batch_prefix="batch",
    partitions=annotation_batches,
    items_table="annotation_items",
    annotations_table="batch_annotations",
    agreement_table="annotation_batch_agreement",
    labels_table="labeled_requests",
    versions_table="labeled_request_versions",
)
project_title = REQUEST_ANNOTATION.project_title
review_title = REQUEST_ANNOTATION.review_title


def text_as_sent(item: Mapping[str, object]) -> str:
    """A request's text as its task shows it (and as vetting expects it): annotators need no
    card number."""
    return redact(str(item["text"]))


class CandidateConfig(Config):
    batch_size: int = 50
    seed: int = 7
    use_champion: bool = True
    """Let the request classifier's champion score the pool (smallest margin first)."""
    prefer_sources: list[str] = Field(default_factory=list)
    """Sources whose requests go first (a drift-triggered run: `serving`, the drifted traffic)."""


def _score_pool(
    context: AssetExecutionContext, pool: pl.DataFrame, model_registry: ModelRegistry
) -> tuple[pl.DataFrame, str]:
    """The pool with the champion's prediction margins, and which version scored it; the pool
    unchanged (cold start) while there is no champion or the registry cannot be reached."""
    model, scored_by = champion_for_scoring(context, model_registry, REQUEST_CLASSIFIER)
    if model is None or pool.is_empty():
        return pool, scored_by if model is None else "none"
    predicted = model.predict(pd.DataFrame({"text": pool["text"].to_list()}))
    margins = prediction_margins(np.array(predicted["probabilities"].tolist()))
    return pool.with_columns(pl.Series("margin", margins)), scored_by


@asset(
    deps=["stg_requests"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "Picks the next batch of unlabeled requests for annotation (cold start: random, "
        "stratified by source; with a model: smallest margin first), one per normalized text, "
        "never one already out for annotation, and registers it as a new annotation batch."
    ),
)
def annotation_candidates(
    context: AssetExecutionContext,
    config: CandidateConfig,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    if not warehouse.table_exists("stg_requests"):
        raise ValueError(
            "stg_requests does not exist yet: ingest requests and build the dbt models "
            "(warehouse_job) before picking annotation candidates"
        )
    pool = warehouse.query(
        "select request_id, text, text_key, source from stg_requests where intent is null"
    )
    scored_by = "none"
    if config.use_champion:
        pool, scored_by = _score_pool(context, pool, model_registry)
    chosen = pick_candidates(
        pool,
        REQUEST_ANNOTATION.out_for_annotation(warehouse, ("request_id", "text_key")),
        config.batch_size,
        config.seed,
        config.prefer_sources,
    )
    if chosen.is_empty():
        return MaterializeResult(
            metadata={"batch": "none", "reason": "no unlabeled request left to send"}
        )
    batch_id = REQUEST_ANNOTATION.new_batch_id(chosen["request_id"].to_list())
    REQUEST_ANNOTATION.register_batch(
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
            "per_source": counts_table(
                dict(zip(per_source["source"], per_source["len"], strict=True)), "source"
            ),
            "preview": preview(chosen.drop("text_key")),
        }
    )


@asset(
    partitions_def=annotation_batches,
    deps=[annotation_candidates],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "labelstudio"},
    description=(
        "One Label Studio project per batch: the intent taxonomy as choices, instructions, and "
        "one task per request, served to two distinct annotators. Retries create no duplicate "
        "tasks (stable external ids)."
    ),
)
def annotation_batch(
    context: AssetExecutionContext,
    warehouse: Warehouse,
    label_studio: LabelStudioResource,
    request_intake: RequestIntake,
) -> MaterializeResult:
    batch_id = context.partition_key
    items = REQUEST_ANNOTATION.batch_items(warehouse, batch_id)
    client = label_studio.client()
    project = client.ensure_project(project_title(batch_id), request_intake.taxonomy())
    created = client.import_missing(
        project,
        [
            {
                "data": {
                    "ext_id": row["ext_id"],
                    "text": text_as_sent(row),
                    "request_id": row["request_id"],
                }
            }
            for row in items.iter_rows(named=True)
        ],
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": items.height,
            "tasks_created_now": created,
            "project": f"{client.url}/projects/{project}/data",
            "round": int(items["round"][0]),
        }
    )


@asset(
    partitions_def=annotation_batches,
    deps=[annotation_batch],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "labelstudio", "duckdb"},
    pool=DUCKDB_POOL,
    check_specs=[
        AssetCheckSpec(
            "kappa_at_least_threshold",
            asset="annotated_batch",
            blocking=True,
            description="Cohen's kappa of the batch ≥ the threshold; else it is re-annotated.",
        )
    ],
    description=(
        "The annotations of a completed batch with their agreement (Cohen's kappa, per class, "
        "per annotator pair, confusion matrix). Below the kappa threshold the batch is "
        "archived and its items return as a new batch; above it, it is accepted."
    ),
)
def annotated_batch(
    context: AssetExecutionContext,
    config: AgreementConfig,
    warehouse: Warehouse,
    label_studio: LabelStudioResource,
    request_intake: RequestIntake,
):
    taxonomy = request_intake.taxonomy()
    yield from collect_batch(
        context,
        REQUEST_ANNOTATION,
        config,
        warehouse,
        label_studio.client(),
        label_studio.allow_list(),
        text_interface(taxonomy),
        taxonomy.intents,
        text_as_sent,
    )
