"""Jobs of the request domain: ingest, annotation, training and the drift-triggered retraining."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

from assets.requests.annotation import annotated_batch, annotation_batch, annotation_candidates
from assets.requests.datasets import request_test_set
from assets.requests.labels import labeled_requests
from assets.requests.lineage import lineage_snapshot
from assets.requests.models import (
    request_baseline,
    request_classifier,
    request_classifier_promotion,
    request_ensemble,
    request_tuned_linear,
)
from assets.requests.roi import request_classifier_roi
from assets.warehouse.dbt import warehouse_dbt_models

request_ingest_job = define_asset_job(
    "request_ingest_job",
    selection=AssetSelection.assets("raw_requests", "validated_requests", "quarantine_requests"),
    description="Read one request drop and validate it (one partition per dropped file).",
)


annotation_candidates_job = define_asset_job(
    "annotation_candidates_job",
    selection=AssetSelection.assets(annotation_candidates),
    description="Pick the next batch of unlabeled requests for annotation.",
)


annotation_batch_job = define_asset_job(
    "annotation_batch_job",
    selection=AssetSelection.assets(annotation_batch),
    description="Create a batch's tasks in Label Studio.",
)


annotated_batch_job = define_asset_job(
    "annotated_batch_job",
    selection=AssetSelection.assets(annotated_batch),
    description="Collect a completed batch's annotations and gate it on Cohen's kappa.",
)


labeled_requests_job = define_asset_job(
    "labeled_requests_job",
    selection=AssetSelection.assets(labeled_requests),
    description="Merge accepted batches and finished reviews into a new labeled-data version.",
)


request_models_job = define_asset_job(
    "request_models_job",
    selection=AssetSelection.assets(
        request_test_set,
        lineage_snapshot,
        request_baseline,
        request_tuned_linear,
        request_classifier,
        request_ensemble,
        request_classifier_promotion,
        request_classifier_roi,
    ),
    description=(
        "Snapshot the lineage tables, train the baseline, the tuned linear model, the "
        "transformer and their ensemble on the current labels, register them in MLflow, and "
        "let the promotion gate decide the champion, then price it."
    ),
)


request_retraining_job = define_asset_job(
    "request_retraining_job",
    selection=AssetSelection.assets(
        "calendar_days",
        warehouse_dbt_models,
        annotation_candidates,
        request_test_set,
        lineage_snapshot,
        request_baseline,
        request_tuned_linear,
        request_classifier,
        request_ensemble,
        request_classifier_promotion,
        request_classifier_roi,
        "champion_bento",
        "reference_profiles",
    ),
    description=(
        "The flywheel's retraining run: rebuild the warehouse (drifted traffic included), queue "
        "re-annotation candidates (drifted traffic first), snapshot the lineage tables, retrain "
        "the classifiers on the current labels, gate them, and package the champions."
    ),
)


lineage_snapshot_job = define_asset_job(
    "lineage_snapshot_job",
    selection=AssetSelection.assets(lineage_snapshot),
    description=(
        "Copy the tables nothing can rebuild (test versions, label versions, split assignments, "
        "annotation history) to a snapshot folder under the data home."
    ),
)
