"""The drop sensor: a new file becomes a partition and one run; nothing fires twice."""

import json
import shutil

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from ml.settings import Settings
from orchestration.resources import build_resources
from orchestration.sensors import request_drop_sensor
from tests.conftest import write_request_drop


def tick(instance: DagsterInstance, settings: Settings, cursor: str | None):
    resources = build_resources(settings)
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={k: resources[k] for k in ("data_home", "request_intake")},
    )
    return request_drop_sensor(context)


def test_a_new_drop_requests_one_run_and_a_redrop_is_only_observed(settings: Settings) -> None:
    instance = DagsterInstance.ephemeral()
    path = write_request_drop(settings, "jan.csv", rows=50, seed=1)

    first = tick(instance, settings, None)
    assert isinstance(first, SensorResult)
    (run,) = first.run_requests
    (added,) = first.dynamic_partitions_requests
    assert added.partition_keys == [run.partition_key] and run.run_key == run.partition_key
    assert run.partition_key.startswith("synthetic-")
    instance.add_dynamic_partitions("request_drops", added.partition_keys)

    assert isinstance(tick(instance, settings, first.cursor), SkipReason)

    shutil.copy(path, path.with_name("jan_copy.csv"))
    third = tick(instance, settings, first.cursor)
    assert third.run_requests == [] and third.dynamic_partitions_requests == []
    (observation,) = third.asset_events
    assert observation.partition == run.partition_key
    assert observation.metadata["redropped_as"].value.endswith("jan_copy.csv")
    assert set(json.loads(third.cursor)) == {str(path), str(path.with_name("jan_copy.csv"))}
