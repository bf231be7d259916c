"""What a drops-folder sensor does, in every domain: each newly registered file becomes a
partition of the domain's raw asset and one ingest run; an identical re-drop and a refused file
are recorded on the raw asset's timeline, never ingested."""

import json

from dagster import (
    AssetObservation,
    DynamicPartitionsDefinition,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
)

from ml.data.drops import DropScan, RefusedFile


def refusal_observation(refused: RefusedFile, raw_asset: str) -> AssetObservation:
    """A refused file on the raw asset's timeline: it has no partition (it is not a drop)."""
    return AssetObservation(
        asset_key=raw_asset,
        metadata={
            "refused_file": refused.uri,
            "source_folder": refused.source,
            "reason": refused.reason,
            "quarantine_manifest": refused.manifest,
            "note": "not ingested; fix or replace the file and it is looked at again",
        },
    )


def drop_sensor_result(
    context: SensorEvaluationContext,
    scan: DropScan,
    partitions: DynamicPartitionsDefinition,
    raw_asset: str,
) -> SensorResult | SkipReason:
    new, runs = [], []
    observations = [refusal_observation(refused, raw_asset) for refused in scan.refusals]
    for registration in scan.registrations:
        drop_id = registration.drop.drop_id
        known = context.instance.has_dynamic_partition(partitions.name, drop_id)
        if registration.is_new or not known:
            new.append(drop_id)
            runs.append(RunRequest(partition_key=drop_id, run_key=drop_id))
        elif registration.is_redrop:
            observations.append(
                AssetObservation(
                    asset_key=raw_asset,
                    partition=drop_id,
                    metadata={
                        "redropped_as": registration.seen_uri,
                        "note": "identical content dropped again; not re-ingested",
                    },
                )
            )
    cursor = json.dumps(scan.cursor)
    if not runs and not observations:
        if cursor == (context.cursor or "{}"):
            return SkipReason("no new or changed files in the drops folder")
        return SensorResult(
            skip_reason=f"{len(scan.pending)} file(s) new or still changing: each is "
            "registered once a tick sees it unchanged",
            cursor=cursor,
        )
    return SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[partitions.build_add_request(new)] if new else [],
        asset_events=observations,
        cursor=cursor,
    )
