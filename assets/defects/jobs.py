"""Jobs of the defect-inspection domain."""

from dagster import AssetSelection, define_asset_job

from assets.defects.annotation import (
    defect_annotated_batch,
    defect_annotation_batch,
    defect_annotation_candidates,
    labeled_defect_images,
)
from assets.defects.intake import QUARANTINE, VALIDATED, raw_defect_images
from assets.defects.models import (
    defect_baseline,
    defect_classifier_promotion,
    defect_cnn,
    defect_test_set,
)
from assets.defects.roi import defect_classifier_roi
from assets.warehouse.dbt import warehouse_dbt_models

defect_ingest_job = define_asset_job(
    "defect_ingest_job",
    selection=AssetSelection.assets(raw_defect_images, VALIDATED, QUARANTINE),
    description="Read one image drop and validate its images (one partition per dropped file).",
)

defect_training_job = define_asset_job(
    "defect_training_job",
    selection=AssetSelection.assets(
        defect_test_set,
        defect_baseline,
        defect_cnn,
        defect_classifier_promotion,
        defect_classifier_roi,
        "defect_image_reference",
    ),
    description=(
        "Freeze the test version (the first time), train the baseline and the CNN on the "
        "current splits, register both, run the promotion gate, and profile the training "
        "images as the reference that served images are compared with."
    ),
)

defect_annotation_candidates_job = define_asset_job(
    "defect_annotation_candidates_job",
    selection=AssetSelection.assets(defect_annotation_candidates),
    description="Pick the next batch of unlabeled cell images for annotation.",
)

defect_annotation_batch_job = define_asset_job(
    "defect_annotation_batch_job",
    selection=AssetSelection.assets(defect_annotation_batch),
    description="Create an image batch's tasks in Label Studio.",
)

defect_annotated_batch_job = define_asset_job(
    "defect_annotated_batch_job",
    selection=AssetSelection.assets(defect_annotated_batch),
    description="Collect a completed image batch's annotations and gate it on Cohen's kappa.",
)

labeled_defect_images_job = define_asset_job(
    "labeled_defect_images_job",
    selection=AssetSelection.assets(labeled_defect_images),
    description="Merge accepted image batches and finished reviews into a new label version.",
)

defect_retraining_job = define_asset_job(
    "defect_retraining_job",
    selection=AssetSelection.assets(
        "calendar_days",
        warehouse_dbt_models,
        defect_annotation_candidates,
        defect_test_set,
        defect_baseline,
        defect_cnn,
        defect_classifier_promotion,
        defect_classifier_roi,
        "champion_bento",
        "defect_image_reference",
    ),
    description=(
        "The defect flywheel's retraining run: rebuild the warehouse (drifted served images "
        "included), queue re-annotation candidates (drifted images first), retrain the baseline "
        "and the CNN on the current labels, gate them, and package the champions."
    ),
)
