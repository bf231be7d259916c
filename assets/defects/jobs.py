"""Jobs of the defect-inspection domain."""

from dagster import AssetSelection, define_asset_job

from assets.defects.intake import QUARANTINE, VALIDATED, raw_defect_images
from assets.defects.models import (
    defect_baseline,
    defect_classifier_promotion,
    defect_cnn,
    defect_test_set,
)

defect_ingest_job = define_asset_job(
    "defect_ingest_job",
    selection=AssetSelection.assets(raw_defect_images, VALIDATED, QUARANTINE),
    description="Read one image drop and validate its images (one partition per dropped file).",
)

defect_training_job = define_asset_job(
    "defect_training_job",
    selection=AssetSelection.assets(
        defect_test_set, defect_baseline, defect_cnn, defect_classifier_promotion
    ),
    description=(
        "Freeze the test version (the first time), train the baseline and the CNN on the "
        "current splits, register both, and run the promotion gate."
    ),
)
