"""The one annotation loop of every classification domain: a batch of items → one Label Studio
project whose tasks two people answer → Cohen's kappa gate (a blocked batch comes back as a new
round with new tasks) → disagreements to a third person → a new version of the labels, with
provenance per row. A domain says what its items are (`AnnotationLoop`) and how a task shows
one; everything else is this module."""

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
)
from pydantic import field_validator

from assets.metadata import counts_table, picture, preview
from assets.resources import ModelRegistry, Warehouse
from ml.annotation.agreement import (
    AgreementReport,
    Annotation,
    AnnotationPair,
    batch_agreement,
    first_two_by_distinct_annotators,
    resolve_labels,
)
from ml.annotation.label_studio_client import LabeledTask, LabelingInterface, LabelStudioClient
from ml.annotation.trust import AnnotatorAllowList, vet_tasks
from ml.lifecycle.registry import RegistryUnavailable
from ml.plots import confusion_figure, threshold_figure

OPEN, ACCEPTED, BLOCKED = "open", "accepted", "blocked"
ROUND_SUFFIX = re.compile(r"-r(\d+)$")
BOOKKEEPING = ("batch_id", "ext_id", "status", "created_at")
"""Columns of an items table that the loop writes itself (the rest is the domain's)."""


def next_round(batch_id: str) -> str:
    """batch-x → batch-x-r2 → batch-x-r3: the same items, new tasks, new external ids."""
    match = ROUND_SUFFIX.search(batch_id)
    if not match:
        return f"{batch_id}-r2"
    return f"{batch_id[: match.start()]}-r{int(match.group(1)) + 1}"


def ext_id(batch_id: str, item_id: str) -> str:
    return f"{batch_id}:{item_id}"


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


@dataclass(frozen=True)
class AnnotationLoop:
    """What differs between domains: the item's id and label columns, what a task shows, the
    project titles, the batches' partitions and the warehouse tables."""

    item: str
    """The item's id column and task field (`request_id`, `image_id`)."""
    label: str
    """The label column of the labeled versions (`intent`, `label`)."""
    shown: str
    """The task field an annotator looks at (`text`, `image`)."""
    title: str
    """Project title prefix (`Requests`, `Defects`)."""
    batch_prefix: str
    """Batch ids start with it (`batch`, `defects`)."""
    partitions: DynamicPartitionsDefinition
    items_table: str
    annotations_table: str
    agreement_table: str
    labels_table: str
    versions_table: str

    def project_title(self, batch_id: str) -> str:
        return f"{self.title} {batch_id}"

    def review_title(self, batch_id: str) -> str:
        return f"Review {batch_id}"

    def new_batch_id(self, item_ids: Sequence[str]) -> str:
        """The same items, the same batch id: a retried pick registers nothing new."""
        members = ",".join(sorted(item_ids))
        return f"{self.batch_prefix}-" + hashlib.sha256(members.encode()).hexdigest()[:10]

    def register_batch(
        self,
        context: AssetExecutionContext,
        warehouse: Warehouse,
        batch_id: str,
        items: pl.DataFrame,
    ) -> None:
        """Record a batch's items (replacing a retried attempt's) and add its partition once."""
        rows = items.with_columns(
            pl.lit(batch_id).alias("batch_id"),
            pl.col(self.item)
            .map_elements(lambda item: ext_id(batch_id, item), return_dtype=pl.Utf8)
            .alias("ext_id"),
            pl.lit(OPEN).alias("status"),
            pl.lit(datetime.now(UTC)).alias("created_at"),
        )
        warehouse.replace_rows(self.items_table, rows, "batch_id = ?", [batch_id])
        if not context.instance.has_dynamic_partition(self.partitions.name, batch_id):
            context.instance.add_dynamic_partitions(self.partitions.name, [batch_id])

    def batch_items(self, warehouse: Warehouse, batch_id: str) -> pl.DataFrame:
        items = warehouse.query_if_exists(
            self.items_table, f"select * from {self.items_table} where batch_id = ?", [batch_id], {}
        )
        if items.is_empty():
            raise ValueError(
                f"annotation batch {batch_id!r} has no items in {self.items_table}; "
                "materialize the annotation candidates to create batches"
            )
        return items

    def out_for_annotation(self, warehouse: Warehouse, columns: Sequence[str]) -> pl.DataFrame:
        """Items of open or accepted batches: never sent again."""
        return warehouse.query_if_exists(
            self.items_table,
            f"select {', '.join(columns)} from {self.items_table} where status in (?, ?)",
            [OPEN, ACCEPTED],
            dict.fromkeys(columns, pl.Utf8),
        )


def champion_for_scoring(
    context: AssetExecutionContext, model_registry: ModelRegistry, model_name: str
) -> tuple[object | None, str]:
    """The champion (loaded, digests verified) that scores a candidate pool and who it is; None
    at cold start or while the registry cannot be reached (picking goes on without a model)."""
    registry = model_registry.registry()
    try:
        registry.ping()
        champion = registry.champion(model_name)
    except RegistryUnavailable as error:
        context.log.warning(f"picking without a model: {error}")
        return None, "none (registry unreachable)"
    if champion is None:
        return None, "none"
    return registry.load(model_name, champion.version), f"{model_name} v{champion.version}"


def _confusion_picture(report: AgreementReport) -> MetadataValue:
    title = (
        f"Annotator confusion (kappa {report.kappa:.2f})"
        if report.kappa is not None
        else "Annotator confusion"
    )
    figure = confusion_figure(
        report.confusion, report.labels, title, "first annotation", "second annotation"
    )
    return picture(figure, "Annotator confusion matrix")


def _open_reviews(
    loop: AnnotationLoop,
    client: LabelStudioClient,
    interface: LabelingInterface,
    batch_id: str,
    report: AgreementReport,
    tasks: list[LabeledTask],
) -> int:
    """Each disagreement of an accepted batch becomes a review task for a third person."""
    if not report.disagreements:
        return 0
    by_id = {str(task.task_id): task for task in tasks}
    project = client.ensure_project(loop.review_title(batch_id), interface, review=True)
    return client.import_missing(
        project,
        [
            {
                "data": {
                    "ext_id": f"review:{by_id[p.task].ext_id}",
                    loop.item: by_id[p.task].data.get(loop.item),
                    loop.shown: by_id[p.task].data.get(loop.shown),
                    "proposals": f"{p.first.label} / {p.second.label}",
                    "annotators": f"{p.first.annotator}, {p.second.annotator}",
                }
            }
            for p in report.disagreements
        ],
    )


def collect_batch(
    context: AssetExecutionContext,
    loop: AnnotationLoop,
    config: AgreementConfig,
    warehouse: Warehouse,
    client: LabelStudioClient,
    allow_list: AnnotatorAllowList,
    interface: LabelingInterface,
    labels: Sequence[str],
    as_sent: Callable[[Mapping[str, object]], str],
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Collect a batch's annotations, vetted (the batch's own unchanged tasks, allow-listed
    people), and gate it on Cohen's kappa: accepted (disagreements go to review) or blocked
    (its items come back as the next round). `as_sent` gives an item's shown field as it was
    sent to Label Studio."""
    batch_id = context.partition_key
    items = loop.batch_items(warehouse, batch_id)
    project = client.find_project(loop.project_title(batch_id))
    if project is None:
        raise ValueError(
            f"no Label Studio project {loop.project_title(batch_id)!r}; "
            "materialize the annotation batch first"
        )
    in_project = client.tasks(project)
    vetted = vet_tasks(
        in_project,
        {
            row["ext_id"]: {loop.item: row[loop.item], loop.shown: as_sent(row)}
            for row in items.iter_rows(named=True)
        },
        allow_list,
    )
    for problem in vetted.problems:
        context.log.warning(f"{batch_id}: not counted: {problem}")
    tasks = vetted.tasks
    report = batch_agreement([a for t in tasks for a in t.annotations], labels)
    rows = pl.DataFrame(
        [
            {
                "batch_id": batch_id,
                "ext_id": task.ext_id,
                loop.item: task.data.get(loop.item),
                "task_id": task.task_id,
                "annotator": a.annotator,
                "label": a.label,
                "created_at": a.created_at,
                "cancelled": a.cancelled,
                "lead_seconds": a.lead_seconds,
            }
            for task in tasks
            for a in task.annotations
        ],
        schema={
            "batch_id": pl.Utf8,
            "ext_id": pl.Utf8,
            loop.item: pl.Utf8,
            "task_id": pl.Int64,
            "annotator": pl.Utf8,
            "label": pl.Utf8,
            "created_at": pl.Datetime("us", "UTC"),
            "cancelled": pl.Boolean,
            "lead_seconds": pl.Float64,
        },
    )
    warehouse.add_column_if_missing(loop.annotations_table, "lead_seconds", "double precision")
    warehouse.replace_rows(loop.annotations_table, rows, "batch_id = ?", [batch_id])
    deleted = sorted(set(items["ext_id"]) - {t.ext_id for t in in_project})
    accepted = report.kappa is not None and report.kappa >= config.kappa_threshold
    requeued_as = None
    reviews_opened = 0
    if accepted:
        status = ACCEPTED
        reviews_opened = _open_reviews(loop, client, interface, batch_id, report, tasks)
    else:
        status = BLOCKED
        requeued_as = next_round(batch_id)
        loop.register_batch(
            context,
            warehouse,
            requeued_as,
            items.drop(*BOOKKEEPING).with_columns(pl.col("round") + 1),
        )
    warehouse.execute(
        f"update {loop.items_table} set status = ? where batch_id = ?", [status, batch_id]
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
    warehouse.replace_rows(loop.agreement_table, summary, "batch_id = ?", [batch_id])
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
                loop.label,
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


def _stored_pairs(
    loop: AnnotationLoop, warehouse: Warehouse, batch_id: str, allowed: set[str]
) -> dict[str, AnnotationPair]:
    """The counted pair of each item of a collected batch, from the stored annotations."""
    rows = warehouse.query(f"select * from {loop.annotations_table} where batch_id = ?", [batch_id])
    annotations = [
        Annotation(r[loop.item], r["annotator"], r["label"], r["created_at"], r["cancelled"])
        for r in rows.iter_rows(named=True)
    ]
    pairs, _, _ = first_two_by_distinct_annotators(annotations, allowed)
    return {pair.task: pair for pair in pairs}


def _kappa_over_time_picture(agreement: pl.DataFrame, threshold: float) -> MetadataValue:
    ordered = agreement.sort("collected_at")
    figure = threshold_figure(
        ordered["batch_id"].to_list(),
        ordered["kappa"].fill_null(0).to_list(),
        threshold,
        "Cohen's kappa",
    )
    return picture(figure, "Kappa per batch, in collection order")


def merge_labels(
    loop: AnnotationLoop,
    config: AgreementConfig,
    warehouse: Warehouse,
    client: LabelStudioClient,
    reviewers: AnnotatorAllowList,
    labels_allowed: Sequence[str],
) -> MaterializeResult:
    """Every accepted batch's labels (agreed, or chosen by a third person's review; pending
    until then) as a new version when they changed; invalid reviews are withdrawn so that the
    task returns to the review queue."""
    allowed = set(labels_allowed)
    agreement = warehouse.query_if_exists(
        loop.agreement_table,
        f"select * from {loop.agreement_table}",
        None,
        {
            "batch_id": pl.Utf8,
            "status": pl.Utf8,
            "kappa": pl.Float64,
            "collected_at": pl.Datetime("us", "UTC"),
        },
    )
    rows, pending, withdrawn, refused = [], [], [], []
    for batch in agreement.filter(pl.col("status") == ACCEPTED).iter_rows(named=True):
        pairs = _stored_pairs(loop, warehouse, batch["batch_id"], allowed)
        review_project = client.find_project(loop.review_title(batch["batch_id"]))
        reviews: dict[str, list[Annotation]] = {}
        for task in client.tasks(review_project) if review_project is not None else []:
            counted = [a for a in task.annotations if reviewers.allows(a.annotator)]
            refused += [
                f"{batch['batch_id']}: review by {a.annotator}, not allow-listed"
                for a in task.annotations
                if a not in counted
            ]
            reviews[str(task.data.get(loop.item))] = counted
        resolution = resolve_labels(pairs, reviews, allowed)
        for review, why in resolution.invalid_reviews:
            if review.annotation_id is not None:
                client.withdraw(review.annotation_id)
            withdrawn.append(f"{batch['batch_id']}: {review.annotator} ({why})")
        pending += [f"{batch['batch_id']}:{item}" for item in resolution.pending]
        rows += [
            {
                loop.item: label.item,
                loop.label: label.intent,
                "batch_id": batch["batch_id"],
                "batch_kappa": batch["kappa"],
                "annotators": ", ".join(label.annotators),
                "adjudicated": label.adjudicated,
                "adjudicator": label.adjudicator,
            }
            for label in resolution.labels
        ]
    labels = pl.DataFrame(
        rows,
        schema={
            loop.item: pl.Utf8,
            loop.label: pl.Utf8,
            "batch_id": pl.Utf8,
            "batch_kappa": pl.Float64,
            "annotators": pl.Utf8,
            "adjudicated": pl.Boolean,
            "adjudicator": pl.Utf8,
        },
    ).sort(loop.item)
    content = hashlib.sha256(
        labels.select(loop.item, loop.label, "batch_id").write_csv().encode()
    ).hexdigest()
    versions = warehouse.query_if_exists(
        loop.versions_table,
        f"select * from {loop.versions_table} order by version",
        None,
        {"version": pl.Int64, "content_sha256": pl.Utf8},
    )
    latest = versions.tail(1).row(0, named=True) if versions.height else None
    if latest is not None and latest["content_sha256"] == content:
        version, new_version = int(latest["version"]), False
    else:
        version, new_version = (int(latest["version"]) + 1 if latest else 1), True
        warehouse.replace_rows(
            loop.labels_table,
            labels.with_columns(pl.lit(version).alias("version")),
            "version = ?",
            [version],
        )
        warehouse.replace_rows(
            loop.versions_table,
            pl.DataFrame(
                {
                    "version": [version],
                    "rows": [labels.height],
                    "content_sha256": [content],
                    "created_at": [datetime.now(UTC)],
                }
            ),
            "version = ?",
            [version],
        )
    people = _annotator_quality(loop, warehouse, labels)
    return MaterializeResult(
        metadata={
            "version": version,
            "new_version": new_version,
            "dagster/row_count": labels.height,
            "adjudicated": int(labels["adjudicated"].sum()),
            "pending_review": len(pending),
            "withdrawn_reviews": "; ".join(withdrawn) or "none",
            "refused_reviews": "; ".join(refused) or "none",
            "per_annotator": counts_table(
                people, "annotator", "annotations / throughput / agreement with final label"
            ),
            "kappa_over_time": _kappa_over_time_picture(agreement, config.kappa_threshold)
            if agreement.height
            else "no batch collected yet",
            "preview": preview(labels),
        }
    )


def _annotator_quality(
    loop: AnnotationLoop, warehouse: Warehouse, labels: pl.DataFrame
) -> dict[str, str]:
    """Per annotator: annotations, throughput over their active span, and how often they match
    the final label."""
    if labels.is_empty():
        return {}
    answers = warehouse.query(
        f"select {loop.item}, annotator, label, created_at from {loop.annotations_table} "
        "where not cancelled"
    ).join(labels.select(loop.item, pl.col(loop.label).alias("final")), on=loop.item)
    stats = answers.group_by("annotator").agg(
        pl.len().alias("n"),
        (pl.col("label") == pl.col("final")).mean().alias("agreement"),
        ((pl.col("created_at").max() - pl.col("created_at").min()).dt.total_seconds() / 3600).alias(
            "hours"
        ),
    )
    return {
        row["annotator"]: f"{row['n']} / "
        + (f"{row['n'] / row['hours']:,.0f} per hour" if row["hours"] else "one sitting")
        + f" / {row['agreement']:.0%}"
        for row in stats.sort("annotator").iter_rows(named=True)
    }
