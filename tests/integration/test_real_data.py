"""The public datasets through the same raw → validated → dbt path as any source, read in place."""

from dataclasses import replace
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ml.settings import Settings
from orchestration.definitions import build_definitions
from orchestration.demo import real_data_deployment
from orchestration.pipeline import run_platform
from orchestration.resources import DataHome, Warehouse

pytestmark = pytest.mark.real_data


def test_banking77_and_orange_juice_run_through_the_whole_graph(
    settings: Settings, shared_data: Path
) -> None:
    real, demand_source, request_files = real_data_deployment(
        replace(settings, shared_data=shared_data)
    )
    defs = build_definitions(real, demand_source)
    run = run_platform(
        defs, DagsterInstance.ephemeral(), DataHome(path=str(real.data_home)), request_files
    )
    assert run.success, {name: result.success for name, result in run.results.items()}
    assert run.check_outcomes()[1] == 0
    warehouse = Warehouse(path=str(real.warehouse_path))

    def count(sql: str) -> int:
        return int(warehouse.query(sql).item())

    assert (
        count("select count(*) from validated_requests")
        + count("select count(*) from quarantine_requests")
        == 10_003
    )
    assert count("select count(distinct intent) from validated_requests") == 77
    assert (
        count("select count(*) from validated_demand")
        + count("select count(*) from quarantine_demand")
        == 95_700
    )
    assert count("select count(distinct store) from mart_demand") == 83
    assert count("select count(distinct item) from mart_demand") == 11
    first = warehouse.query(
        "select min(period_start) as first, max(period_start) as last from mart_demand"
    ).row(0, named=True)
    assert (str(first["first"]), str(first["last"])) == ("1990-06-14", "1992-07-09")
    assert count("select count(*) from mart_demand where is_missing") > 0
    july_fourth = "select count(*) from mart_demand where holidays like '%Independence Day%'"
    assert count(july_fourth) > 0
    test_share = warehouse.query(
        "select avg((split = 'test')::int) as share from request_splits"
    ).item()
    assert 0.08 < test_share < 0.12
