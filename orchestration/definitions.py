"""The one code location: each domain's definitions (assets, checks, jobs, schedules, sensors)
merged with the shared resources, here and nowhere else."""

from dagster import Definitions

from assets.demand import definitions as demand
from assets.monitoring import definitions as monitoring
from assets.requests import definitions as requests
from assets.resources import build_resources
from assets.serving import definitions as serving
from assets.warehouse import definitions as warehouse
from ml.data.sources import DemandSource, demand_source_of
from ml.settings import Settings


def build_definitions(settings: Settings, demand_source: DemandSource) -> Definitions:
    return Definitions.merge(
        warehouse.definitions,
        requests.definitions,
        demand.demand_definitions(demand_source),
        serving.definitions,
        monitoring.definitions,
        Definitions(resources=build_resources(settings)),
    )


_settings = Settings.from_env()
defs = build_definitions(_settings, demand_source_of(_settings))
