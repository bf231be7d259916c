"""Labels from annotation: every accepted batch and finished review merged into a new labeled
version, with the agreement history and each annotator's quality."""

import hashlib
from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.metadata import counts_table, picture, preview
from assets.requests import GROUP, OWNERS
from assets.requests.annotation import ACCEPTED, AgreementConfig, annotated_batch, review_title
from assets.resources import (
    DUCKDB_POOL,
    LabelStudioResource,
    RequestIntake,
    Warehouse,
)
from ml.annotation.agreement import (
    Annotation,
    AnnotationPair,
    first_two_by_distinct_annotators,
    resolve_labels,
)
from ml.plots import threshold_figure


def _stored_pairs(
    warehouse: Warehouse, batch_id: str, allowed: set[str]
) -> dict[str, AnnotationPair]:
    """The counted pair of each request of a collected batch, from the stored annotations."""
    rows = warehouse.query("select * from batch_annotations where batch_id = ?", [batch_id])
    annotations = [
        Annotation(r["request_id"], r["annotator"], r["label"], r["created_at"], r["cancelled"])
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


@asset(
    deps=[annotated_batch],
    automation_condition=AutomationCondition.eager(),
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "duckdb"},
    pool=DUCKDB_POOL,
    description=(
        "The labels of every accepted batch, versioned: agreed labels, and for disagreements "
        "the label a third person's review chose (pending until then). Each version is kept "
        "(labeled_requests where version = N), with provenance per row."
    ),
)
def labeled_requests(
    context: AssetExecutionContext,
    config: AgreementConfig,
    warehouse: Warehouse,
    label_studio: LabelStudioResource,
    request_intake: RequestIntake,
) -> MaterializeResult:
    taxonomy = request_intake.taxonomy()
    allowed = set(taxonomy.intents)
    agreement = warehouse.query_if_exists(
        "annotation_batch_agreement",
        "select * from annotation_batch_agreement",
        None,
        {
            "batch_id": pl.Utf8,
            "status": pl.Utf8,
            "kappa": pl.Float64,
            "collected_at": pl.Datetime("us", "UTC"),
        },
    )
    client = label_studio.client()
    reviewers = label_studio.allow_list()
    rows, pending, withdrawn, refused = [], [], [], []
    for batch in agreement.filter(pl.col("status") == ACCEPTED).iter_rows(named=True):
        pairs = _stored_pairs(warehouse, batch["batch_id"], allowed)
        review_project = client.find_project(review_title(batch["batch_id"]))
        reviews: dict[str, list[Annotation]] = {}
        for task in client.tasks(review_project) if review_project is not None else []:
            counted = [a for a in task.annotations if reviewers.allows(a.annotator)]
            refused += [
                f"{batch['batch_id']}: review by {a.annotator}, not allow-listed"
                for a in task.annotations
                if a not in counted
            ]
            reviews[str(task.data.get("request_id"))] = counted
        resolution = resolve_labels(pairs, reviews, allowed)
        for review, why in resolution.invalid_reviews:
            if review.annotation_id is not None:
                client.withdraw(review.annotation_id)
            withdrawn.append(f"{batch['batch_id']}: {review.annotator} ({why})")
        pending += [f"{batch['batch_id']}:{item}" for item in resolution.pending]
        rows += [
            {
                "request_id": label.item,
                "intent": label.intent,
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
            "request_id": pl.Utf8,
            "intent": pl.Utf8,
            "batch_id": pl.Utf8,
            "batch_kappa": pl.Float64,
            "annotators": pl.Utf8,
            "adjudicated": pl.Boolean,
            "adjudicator": pl.Utf8,
        },
    ).sort("request_id")
    content = hashlib.sha256(
        labels.select("request_id", "intent", "batch_id").write_csv().encode()
    ).hexdigest()
    versions = warehouse.query_if_exists(
        "labeled_request_versions",
        "select * from labeled_request_versions order by version",
        None,
        {"version": pl.Int64, "content_sha256": pl.Utf8},
    )
    latest = versions.tail(1).row(0, named=True) if versions.height else None
    if latest is not None and latest["content_sha256"] == content:
        version, new_version = int(latest["version"]), False
    else:
        version, new_version = (int(latest["version"]) + 1 if latest else 1), True
        warehouse.replace_rows(
            "labeled_requests",
            labels.with_columns(pl.lit(version).alias("version")),
            "version = ?",
            [version],
        )
        warehouse.replace_rows(
            "labeled_request_versions",
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
    people = _annotator_quality(warehouse, labels)
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


def _annotator_quality(warehouse: Warehouse, labels: pl.DataFrame) -> dict[str, str]:
    """Per annotator: annotations, throughput over their active span, and how often they match
    the final label."""
    if labels.is_empty():
        return {}
    answers = warehouse.query(
        "select request_id, annotator, label, created_at from batch_annotations where not cancelled"
    ).join(labels.select("request_id", "intent"), on="request_id")
    stats = answers.group_by("annotator").agg(
        pl.len().alias("n"),
        (pl.col("label") == pl.col("intent")).mean().alias("agreement"),
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
