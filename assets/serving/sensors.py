"""The sensors of serving: one rebuilds the champion Bento when a champion alias moves, one shows
every rollout `make serve` did (or refused) on `champion_bento`."""

from pathlib import Path

from dagster import (
    AssetKey,
    AssetObservation,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.resources import (
    BentoStore,
    DataHome,
    ModelRegistry,
)
from assets.serving.jobs import champion_bento_job
from ml.lifecycle.registered_models import challenger_versions, champion_versions
from ml.lifecycle.rollouts import rollout_log, rollouts_after
from serving.package import bento_version, current_bento


@sensor(
    job=champion_bento_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Notices when a champion alias moves (a gate's promotion, a rollback) and requests the "
        "Bento of the new champions, once per set of versions (run key)."
    ),
)
def champion_change_sensor(
    context: SensorEvaluationContext, model_registry: ModelRegistry, bento_store: BentoStore
):
    registry = model_registry.registry()
    versions = champion_versions(registry)
    if not any(versions.values()):
        return SkipReason("no champion yet")
    challengers = {m: v for m, v in challenger_versions(registry).items() if versions.get(m)}
    wanted = bento_version(versions, challengers)
    current = current_bento(Path(bento_store.home))
    if current is not None and str(current["bento"]).endswith(f":{wanted}"):
        return SkipReason(f"the champion Bento {current['bento']} is current")
    return RunRequest(run_key=f"bento:{wanted}", tags={"mlops/champions": wanted})


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Shows each outcome of the serving supervisor's blue/green rollouts (a switch, a restart, "
        "a Bento that failed to start or failed its smoke test, and why) as an observation of "
        "champion_bento, read from logs/serving-rollouts.jsonl under the data home."
    ),
)
def serving_rollout_sensor(context: SensorEvaluationContext, data_home: DataHome):
    rollouts, offset = rollouts_after(rollout_log(data_home.root), int(context.cursor or 0))
    if not rollouts:
        return SkipReason("no rollout since the last look")
    observations = [
        AssetObservation(
            asset_key=AssetKey("champion_bento"),
            description=f"{rollout['outcome']}: {rollout['bento']}",
            metadata={key: value for key, value in rollout.items() if value is not None},
        )
        for rollout in rollouts
    ]
    return SensorResult(asset_events=observations, cursor=str(offset))
