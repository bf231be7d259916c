"""The sensor that rebuilds the champion Bento when a champion alias moves."""

from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from assets.resources import (
    BentoStore,
    ModelRegistry,
)
from assets.serving.jobs import champion_bento_job
from ml.lifecycle.registered_models import champion_versions
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
    versions = champion_versions(model_registry.registry())
    if not any(versions.values()):
        return SkipReason("no champion yet")
    wanted = bento_version(versions)
    current = current_bento(Path(bento_store.home))
    if current is not None and str(current["bento"]).endswith(f":{wanted}"):
        return SkipReason(f"the champion Bento {current['bento']} is current")
    return RunRequest(run_key=f"bento:{wanted}", tags={"mlops/champions": wanted})
