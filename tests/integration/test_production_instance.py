"""The production instance config: Dagster's run and event storage in PostgreSQL."""

import psycopg2
import pytest
from dagster import DagsterInstance
from dagster_postgres import PostgresRunStorage

from assets.resources import DataHome
from ml.settings import Settings
from orchestration.definitions import build_definitions
from orchestration.instance import prepare_dagster_home
from orchestration.pipeline import PipelineRun, ingest_demand, ingest_request_drops
from tests.conftest import small_demand_source, write_request_drop


def test_assets_materialize_against_a_postgres_backed_instance(
    settings: Settings, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_database)
    home = prepare_dagster_home(settings.data_home / "dagster_production", "production")
    instance = DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        write_request_drop(settings, "jan.csv", rows=80, seed=4)
        defs = build_definitions(settings, small_demand_source(settings))
        run = PipelineRun()
        ingest_request_drops(defs, instance, DataHome(path=str(settings.data_home)), run)
        ingest_demand(defs, instance, run)
        assert run.success and len(run.results) == 2
        assert instance.get_dynamic_partitions("request_drops")
    finally:
        instance.dispose()
    with psycopg2.connect(postgres_database) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from runs")
        assert cursor.fetchone()[0] == 2
        cursor.execute(
            "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        assert cursor.fetchone()[0] >= 5
