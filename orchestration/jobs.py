"""Jobs: the named selections a person, a schedule or a sensor launches."""

from dagster import AssetSelection, define_asset_job

from assets.annotation import (
    annotated_batch,
    annotation_batch,
    annotation_candidates,
    labeled_requests,
)
from assets.demand import calendar_days
from assets.warehouse_models import warehouse_dbt_models

request_ingest_job = define_asset_job(
    "request_ingest_job",
    selection=AssetSelection.assets("raw_requests", "validated_requests", "quarantine_requests"),
    description="Read one request drop and validate it (one partition per dropped file).",
)

warehouse_job = define_asset_job(
    "warehouse_job",
    selection=AssetSelection.assets(calendar_days, warehouse_dbt_models),
    description="The calendar and every dbt model and test over the validated data.",
)


demand_ingest_job = define_asset_job(
    "demand_ingest_job",
    selection=AssetSelection.assets("raw_demand", "validated_demand", "quarantine_demand"),
    description="Read the demand source for the selected periods and validate them.",
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
