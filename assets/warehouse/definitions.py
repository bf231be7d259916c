"""Everything the warehouse brings to the code location: the dbt models, their job and the
sensor that rebuilds them when new validated data lands."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
)

from assets.warehouse.dbt import warehouse_dbt_models

warehouse_job = define_asset_job(
    "warehouse_job",
    selection=AssetSelection.assets("calendar_days", warehouse_dbt_models),
    description="The calendar and every dbt model and test over the validated data.",
)


warehouse_automation_sensor = AutomationConditionSensorDefinition(
    "warehouse_automation_sensor",
    target=AssetSelection.assets(warehouse_dbt_models, "labeled_requests"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Rebuilds the dbt models once new validated data lands (unless a blocking check upstream "
        "failed), and the labeled data once a batch is collected."
    ),
)


definitions = Definitions(
    assets=[warehouse_dbt_models], jobs=[warehouse_job], sensors=[warehouse_automation_sensor]
)
