"""The one code location: each domain's definitions (assets, checks, jobs, schedules, sensors)
merged with the shared resources, here and nowhere else."""

from pathlib import Path

import yaml
from dagster import Definitions, ExecutorDefinition

from assets.defects import definitions as defects
from assets.demand import definitions as demand
from assets.monitoring import definitions as monitoring
from assets.requests import definitions as requests
from assets.resources import build_resources
from assets.serving import definitions as serving
from assets.warehouse import definitions as warehouse
from ml.data.sources import DemandSource, demand_source_of
from ml.settings import Settings

KUBERNETES = Path(__file__).parent / "kubernetes"
EXECUTORS = ("default", "celery", "k8s")


def executor_for(settings: Settings) -> ExecutorDefinition | None:
    """The executor MLOPS_EXECUTOR names (None: Dagster's default, processes on this machine)."""
    if settings.executor == "default":
        return None
    if settings.executor == "celery":
        from dagster_celery import celery_executor

        from orchestration.celery_workers import celery_executor_config

        return celery_executor.configured(celery_executor_config(settings), name="celery")
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        config = yaml.safe_load((KUBERNETES / "executor.yaml").read_text(encoding="utf-8"))
        return k8s_job_executor.configured(config, name="k8s_job_executor")
    raise ValueError(f"MLOPS_EXECUTOR={settings.executor!r}: expected one of {EXECUTORS}")


def build_definitions(settings: Settings, demand_source: DemandSource) -> Definitions:
    return Definitions.merge(
        warehouse.definitions,
        requests.definitions,
        demand.demand_definitions(demand_source),
        defects.definitions,
        serving.definitions,
        monitoring.definitions,
        Definitions(resources=build_resources(settings), executor=executor_for(settings)),
    )


_settings = Settings.from_env()
defs = build_definitions(_settings, demand_source_of(_settings))
