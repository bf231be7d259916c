"""Customer requests: each file drop → raw copy → validated rows + quarantined rows; the valid
rows are published to dbt only when every blocking check of the drop passes."""

from dataclasses import replace
from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
    multi_asset,
)

from assets.contract_outputs import (
    PUBLISHED,
    contract_check_results,
    contract_check_specs,
    prepare_publication,
    publication_of,
    validation_results,
    validation_specs,
)
from assets.metadata import column_schema, picture, preview
from assets.requests import GROUP, OWNERS
from assets.resources import DUCKDB_POOL, DataHome, RequestIntake, Warehouse
from ml.data.contracts import request_contract
from ml.data.drops import load_drop, read_drop, redrops_of
from ml.data.ingestion import IngestionError
from ml.data.objects import exists, read_parquet, write_parquet
from ml.data.sources import map_request_drop
from ml.data.validation import validate_against_contract
from ml.plots import bar_figure, histogram_figure

request_drops = DynamicPartitionsDefinition(name="request_drops")
"""One partition per dropped file, keyed `<source>-<content hash>`: the same bytes, the same key."""


@asset(
    partitions_def=request_drops,
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"python", "parquet"},
    description=(
        "Each dropped request file exactly as read (every column as text, with its line number), "
        "one partition per drop. Dropping identical content again is recorded, not re-ingested."
    ),
)
def raw_requests(context: AssetExecutionContext, data_home: DataHome) -> MaterializeResult:
    drop = load_drop(context.partition_key, data_home.drop_registry_dir)
    raw = read_drop(drop)
    write_parquet(data_home.raw_partition_uri("requests", drop.drop_id), raw)
    redrops = redrops_of(drop.drop_id, data_home.drop_registry_dir)
    return MaterializeResult(
        metadata={
            "dagster/row_count": raw.height,
            "source": drop.source,
            "file": drop.uri,
            "sha256": drop.sha256,
            "size_bytes": drop.size_bytes,
            "registered_at": drop.registered_at,
            "identical_redrops": len(redrops),
            "redropped_as": ", ".join(r["uri"] for r in redrops) or "none",
            "dagster/column_schema": column_schema(raw),
            "preview": preview(raw),
        }
    )


@multi_asset(
    specs=validation_specs(
        "requests",
        raw_requests,
        GROUP,
        OWNERS,
        "Requests that meet the contract (pandera on polars), typed, one row per request_id "
        "across all published drops; `intent` is empty until labeled. A drop's rows are "
        "`published` (read by dbt) only when all its blocking checks pass.",
    ),
    partitions_def=request_drops,
    check_specs=contract_check_specs("validated_requests"),
    pool=DUCKDB_POOL,
)
def validate_requests(
    context: AssetExecutionContext,
    data_home: DataHome,
    warehouse: Warehouse,
    request_intake: RequestIntake,
):
    drop = load_drop(context.partition_key, data_home.drop_registry_dir)
    raw_uri = data_home.raw_partition_uri("requests", drop.drop_id)
    if not exists(raw_uri):
        raise IngestionError(
            f"no raw copy of drop {drop.drop_id} at {raw_uri}; materialize raw_requests first"
        )
    mapped = map_request_drop(read_parquet(raw_uri), drop)
    taxonomy = request_intake.taxonomy()
    contract = request_contract(taxonomy.intents)
    prepare_publication(warehouse, "validated_requests")
    # Only published drops count as earlier records: a blocked drop never makes a later good
    # drop's rows duplicates, and if it is published later its repeats are quarantined then.
    earlier = warehouse.query_if_exists(
        "validated_requests",
        f"select request_id, raw_row_id from validated_requests where {PUBLISHED} and drop_id <> ?",
        [drop.drop_id],
        {"request_id": pl.Utf8, "raw_row_id": pl.Utf8},
    )
    outcome = validate_against_contract(
        mapped.frame, contract, carry=("drop_id",), existing_keys=earlier
    )
    quarantine = outcome.quarantine.with_columns(
        pl.lit(drop.drop_id).alias("drop_id"),
        pl.lit(datetime.now(UTC)).alias("quarantined_at"),
    )
    hides_labels = drop.source in request_intake.hidden_label_sources
    hidden = None
    if hides_labels:
        hidden = outcome.valid.filter(pl.col("intent").is_not_null()).select(
            "request_id", "intent", "source", "drop_id"
        )
        # The labels go aside; the requests enter as unlabeled work for the annotation loop.
        outcome = replace(
            outcome, valid=outcome.valid.with_columns(pl.lit(None, dtype=pl.Utf8).alias("intent"))
        )
    published_ids = pl.concat([earlier["request_id"], outcome.valid["request_id"]])
    checks = contract_check_results(
        "validated_requests",
        contract,
        outcome,
        duplicate_keys_in_table=published_ids.len() - published_ids.n_unique(),
        newest=outcome.valid["received_at"].max(),
        max_age_days=request_intake.max_age_days,
    )
    publication = publication_of(checks)
    this_drop = ("drop_id = ?", [drop.drop_id])
    changes = [
        ("validated_requests", publication.stamp(outcome.valid), *this_drop),
        ("quarantine_requests", quarantine, *this_drop),
    ]
    if hidden is not None:
        # A blocked drop's answers are not kept where the simulated annotators look them up.
        changes.append(
            ("hidden_labels", hidden if publication.published else hidden.clear(), *this_drop)
        )
    warehouse.replace_rows_together(changes)
    intents = outcome.valid.group_by(pl.col("intent").fill_null("(unlabeled)")).len()
    intent_counts = dict(zip(intents["intent"], intents["len"], strict=True))
    yield from validation_results(
        "requests",
        outcome,
        quarantine,
        {
            **publication.metadata(),
            "taxonomy": f"{taxonomy.name} v{taxonomy.version} ({len(taxonomy.intents)} intents)",
            "ignored_columns": ", ".join(mapped.ignored_columns) or "none",
            "labels_hidden": hides_labels,
            "labeled_share": round(
                1 - intent_counts.get("(unlabeled)", 0) / max(outcome.valid.height, 1), 4
            ),
            "intents": picture(
                bar_figure(intent_counts, "Requests per intent (top 30)"),
                "Requests per intent (top 30)",
            ),
            "text_length": picture(
                histogram_figure(
                    outcome.valid["text"].str.len_chars().to_numpy(), "text length", "characters"
                ),
                "Text length of valid requests",
            )
            if outcome.valid.height
            else "no rows",
        },
    )
    yield from checks
