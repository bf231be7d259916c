"""The annotation loop: unlabeled requests → a batch of Label Studio tasks, each labeled by two
people → agreement (Cohen's kappa), gated: a low-agreement batch is never merged, it goes back
for re-annotation as a new batch."""

import hashlib
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field, field_validator

from assets.metadata import counts_table, picture, preview
from assets.requests import GROUP, OWNERS
from assets.resources import (
    DUCKDB_POOL,
    LabelStudioResource,
    ModelRegistry,
    RequestIntake,
    Warehouse,
)
from ml.annotation.agreement import (
    AgreementReport,
    batch_agreement,
)
from ml.annotation.selection import pick_candidates, prediction_margins
from ml.annotation.trust import BatchItem, vet_tasks
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import RegistryUnavailable
from ml.plots import confusion_figure
from ml.security.redaction import redact

annotation_batches = DynamicPartitionsDefinition(name="annotation_batches")
"""One partition per batch sent to Label Studio; a re-annotation round is a batch of its own."""

OPEN, ACCEPTED, BLOCKED = "open", "accepted", "blocked"
ROUND_SUFFIX = re.compile(r"-r(\d+)$")


def project_title(batch_id: str) -> str:
    return f"Requests {batch_id}"


def review_title(batch_id: str) -> str:
    return f"Review {batch_id}"


def next_round(batch_id: str) -> str:
    """batch-x → batch-x-r2 → batch-x-r3: the same items, new tasks, new external ids."""
    match = ROUND_SUFFIX.search(batch_id)
    if not match:
        return f"{batch_id}-r2"
    return f"{batch_id[: match.start()]}-r{int(match.group(1)) + 1}"


def ext_id(batch_id: str, request_id: str) -> str:
    return f"{batch_id}:{request_id}"


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
    registry = model_registry.registry()
    try:
        registry.ping()
        champion = registry.champion(REQUEST_CLASSIFIER)
    except RegistryUnavailable as error:
        context.log.warning(f"picking without a model: {error}")
        return pool, "none (registry unreachable)"
    if champion is None or pool.is_empty():
        return pool, "none"
    model = registry.load(REQUEST_CLASSIFIER, champion.version)
    predicted = model.predict(pd.DataFrame({"text": pool["text"].to_list()}))
    margins = prediction_margins(np.array(predicted["probabilities"].tolist()))
    return pool.with_columns(
        pl.Series("margin", margins)
    ), f"{REQUEST_CLASSIFIER} v{champion.version}"


def _out_for_annotation(warehouse: Warehouse) -> pl.DataFrame:
    return warehouse.query_if_exists(
        "annotation_items",
        "select request_id, text_key from annotation_items where status in (?, ?)",
        [OPEN, ACCEPTED],
        {"request_id": pl.Utf8, "text_key": pl.Utf8},
    )


def register_batch(
    context: AssetExecutionContext, warehouse: Warehouse, batch_id: str, items: pl.DataFrame
) -> None:
    """Record a batch's items (replacing a retried attempt's) and add its partition once."""
    rows = items.with_columns(
        pl.lit(batch_id).alias("batch_id"),
        pl.col("request_id")
        .map_elements(lambda rid: ext_id(batch_id, rid), return_dtype=pl.Utf8)
        .alias("ext_id"),
        pl.lit(OPEN).alias("status"),
        pl.lit(datetime.now(UTC)).alias("created_at"),
    )
    warehouse.replace_rows("annotation_items", rows, "batch_id = ?", [batch_id])
    if not context.instance.has_dynamic_partition(annotation_batches.name, batch_id):
        context.instance.add_dynamic_partitions(annotation_batches.name, [batch_id])


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
        pool, _out_for_annotation(warehouse), config.batch_size, config.seed, config.prefer_sources
    )
    if chosen.is_empty():
        return MaterializeResult(
            metadata={"batch": "none", "reason": "no unlabeled request left to send"}
        )
    members = ",".join(sorted(chosen["request_id"]))
    batch_id = "batch-" + hashlib.sha256(members.encode()).hexdigest()[:10]
    register_batch(context, warehouse, batch_id, chosen.with_columns(pl.lit(1).alias("round")))
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


def _batch_items(warehouse: Warehouse, batch_id: str) -> pl.DataFrame:
    items = warehouse.query_if_exists(
        "annotation_items", "select * from annotation_items where batch_id = ?", [batch_id], {}
    )
    if items.is_empty():
        raise ValueError(
            f"annotation batch {batch_id!r} has no items in annotation_items; "
            "materialize annotation_candidates to create batches"
        )
    return items


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
    items = _batch_items(warehouse, batch_id)
    client = label_studio.client()
    project = client.ensure_project(project_title(batch_id), request_intake.taxonomy())
    created = client.import_missing(
        project,
        [
            {
                "data": {
                    "ext_id": row["ext_id"],
                    "text": redact(row["text"]),  # annotators need no card number
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


def _open_reviews(client, batch_id: str, report: AgreementReport, tasks, taxonomy) -> int:
    """Each disagreement of an accepted batch becomes a review task for a third person."""
    if not report.disagreements:
        return 0
    by_id = {str(task.task_id): task for task in tasks}
    project = client.ensure_project(review_title(batch_id), taxonomy, review=True)
    return client.import_missing(
        project,
        [
            {
                "data": {
                    "ext_id": f"review:{by_id[p.task].ext_id}",
                    "request_id": by_id[p.task].data.get("request_id"),
                    "text": by_id[p.task].data.get("text"),
                    "proposals": f"{p.first.label} / {p.second.label}",
                    "annotators": f"{p.first.annotator}, {p.second.annotator}",
                }
            }
            for p in report.disagreements
        ],
    )


MIN_KAPPA_THRESHOLD = 0.4
"""Below 0.4 Cohen's kappa is at best "fair" agreement: such a gate lets noise into training."""


class AgreementConfig(Config):
    kappa_threshold: float = 0.7
    """A batch whose Cohen's kappa is below this is not merged: it is annotated again."""

    @field_validator("kappa_threshold")
    @classmethod
    def _kappa_bound(cls, value: float) -> float:
        if not MIN_KAPPA_THRESHOLD <= value <= 1:
            raise ValueError(
                f"kappa_threshold must be between {MIN_KAPPA_THRESHOLD} and 1 (below "
                f"{MIN_KAPPA_THRESHOLD} annotators who mostly disagree pass), got {value}"
            )
        return value


def _confusion_picture(report: AgreementReport):
    title = (
        f"Annotator confusion (kappa {report.kappa:.2f})"
        if report.kappa is not None
        else "Annotator confusion"
    )
    figure = confusion_figure(
        report.confusion, report.labels, title, "first annotation", "second annotation"
    )
    return picture(figure, "Annotator confusion matrix")


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
    batch_id = context.partition_key
    items = _batch_items(warehouse, batch_id)
    client = label_studio.client()
    project = client.find_project(project_title(batch_id))
    if project is None:
        raise ValueError(
            f"no Label Studio project {project_title(batch_id)!r}; "
            "materialize annotation_batch first"
        )
    in_project = client.tasks(project)
    vetted = vet_tasks(
        in_project,
        {r["ext_id"]: BatchItem(r["request_id"], r["text"]) for r in items.iter_rows(named=True)},
        label_studio.allow_list(),
        redact,
    )
    for problem in vetted.problems:
        context.log.warning(f"{batch_id}: not counted: {problem}")
    tasks = vetted.tasks
    taxonomy = request_intake.taxonomy()
    report = batch_agreement([a for t in tasks for a in t.annotations], taxonomy.intents)
    rows = pl.DataFrame(
        [
            {
                "batch_id": batch_id,
                "ext_id": task.ext_id,
                "request_id": task.data.get("request_id"),
                "task_id": task.task_id,
                "annotator": a.annotator,
                "label": a.label,
                "created_at": a.created_at,
                "cancelled": a.cancelled,
            }
            for task in tasks
            for a in task.annotations
        ],
        schema={
            "batch_id": pl.Utf8,
            "ext_id": pl.Utf8,
            "request_id": pl.Utf8,
            "task_id": pl.Int64,
            "annotator": pl.Utf8,
            "label": pl.Utf8,
            "created_at": pl.Datetime("us", "UTC"),
            "cancelled": pl.Boolean,
        },
    )
    warehouse.replace_rows("batch_annotations", rows, "batch_id = ?", [batch_id])
    deleted = sorted(set(items["ext_id"]) - {t.ext_id for t in in_project})
    accepted = report.kappa is not None and report.kappa >= config.kappa_threshold
    requeued_as = None
    reviews_opened = 0
    if accepted:
        status = ACCEPTED
        reviews_opened = _open_reviews(client, batch_id, report, tasks, taxonomy)
    else:
        status = BLOCKED
        requeued_as = next_round(batch_id)
        register_batch(
            context,
            warehouse,
            requeued_as,
            items.select(
                "request_id", "text", "text_key", "source", "strategy", pl.col("round") + 1
            ),
        )
    warehouse.execute(
        "update annotation_items set status = ? where batch_id = ?", [status, batch_id]
    )
    summary = pl.DataFrame(
        {
            "batch_id": [batch_id],
            "status": [status],
            "kappa": [report.kappa],
            "pairs": [len(report.pairs)],
            "disagreements": [len(report.disagreements)],
            "collected_at": [datetime.now(UTC)],
        },
        schema_overrides={"kappa": pl.Float64},
    )
    warehouse.replace_rows("annotation_batch_agreement", summary, "batch_id = ?", [batch_id])
    annotators = rows.filter(~pl.col("cancelled")).group_by("annotator").len()
    yield MaterializeResult(
        metadata={
            "status": status,
            "kappa": report.kappa
            if report.kappa is not None
            else "undefined (no doubly annotated task)",
            "kappa_threshold": config.kappa_threshold,
            "observed_agreement": report.observed_agreement or 0.0,
            "tasks": len(tasks),
            "doubly_annotated": len(report.pairs),
            "disagreements": len(report.disagreements),
            "not_counted": counts_table(dict(report.excluded), "reason", "annotations"),
            "deleted_tasks": ", ".join(deleted) or "none",
            "untrusted": MetadataValue.md(
                "\n".join(f"- {p}" for p in vetted.problems)
                or "none: every task is the "
                "batch's own, unchanged, annotated by allow-listed people"
            ),
            "foreign_tasks": len(vetted.foreign),
            "edited_tasks": len(vetted.edited),
            "refused_annotations": len(vetted.refused),
            "per_annotator": counts_table(
                dict(zip(annotators["annotator"], annotators["len"], strict=True)),
                "annotator (simulated ones say so)",
                "annotations",
            ),
            "per_pair_kappa": counts_table(
                {
                    f"{a} / {b}": round(k, 3) if k is not None else "n/a"
                    for (a, b), k in report.per_annotator_pair.items()
                },
                "annotator pair",
                "kappa",
            ),
            "per_class_agreement": counts_table(
                {
                    label: round(v, 3)
                    for label, v in sorted(report.per_class.items(), key=lambda kv: kv[1])
                },
                "intent",
                "specific agreement",
            ),
            "confusion": _confusion_picture(report),
            "requeued_as": requeued_as or "not requeued",
            "reviews_opened": reviews_opened,
        }
    )
    yield AssetCheckResult(
        check_name="kappa_at_least_threshold",
        passed=accepted,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "kappa": report.kappa if report.kappa is not None else -1.0,
            "threshold": config.kappa_threshold,
            "pairs": len(report.pairs),
            "requeued_as": requeued_as or "not requeued",
        },
    )
