"""The dbt project on the warehouse (DuckDB; PostgreSQL in the production profile) as assets:
staging and marts in the same lineage graph as the Python assets, dbt tests as asset checks.
Groups and owners are declared in the dbt YAML."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, AutomationCondition
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from assets.resources import DUCKDB_POOL, Warehouse
from ml.settings import DBT_PROJECT_DIR, executable

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def _manifest_is_stale() -> bool:
    """A fresh checkout has no manifest, and an edited model makes it stale."""
    if not dbt_project.manifest_path.exists():
        return True
    built = dbt_project.manifest_path.stat().st_mtime
    sources = [
        path
        for folder in ("models", "macros", "tests")
        for path in (DBT_PROJECT_DIR / folder).rglob("*")
        if path.suffix in (".sql", ".yml")
    ]
    return any(
        path.stat().st_mtime > built for path in [*sources, DBT_PROJECT_DIR / "dbt_project.yml"]
    )


if _manifest_is_stale():
    # `dbt parse` needs no database; `dagster dev` would do the same on load.
    DbtCliResource(
        project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=executable("dbt")
    ).cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()


class WarehouseTranslator(DagsterDbtTranslator):
    """dbt models rebuild when upstream data changes (the daemon's automation sensor), never on
    top of a drop whose blocking checks failed."""

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> AutomationCondition | None:
        return AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=WarehouseTranslator(),
    pool=DUCKDB_POOL,
)
def warehouse_dbt_models(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse):
    with warehouse.dbt_environment():
        invocation = dbt.cli(["build"], context=context)
    yield from invocation.stream()
