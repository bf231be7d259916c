"""Labels from annotation: every accepted batch and finished review merged into a new labeled
version, with the agreement history and each annotator's quality."""

from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    asset,
)

from assets.annotation_loop import AgreementConfig, merge_labels
from assets.requests import GROUP, OWNERS
from assets.requests.annotation import REQUEST_ANNOTATION, annotated_batch
from assets.resources import (
    DUCKDB_POOL,
    LabelStudioResource,
    RequestIntake,
    Warehouse,
)


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
    return merge_labels(
        REQUEST_ANNOTATION,
        config,
        warehouse,
        label_studio.client(),
        label_studio.allow_list(),
        request_intake.taxonomy().intents,
    )
