"""Everything serving brings to the code location."""

from dagster import Definitions

from assets.serving import bento, jobs, sensors

definitions = Definitions(
    assets=[bento.champion_bento],
    jobs=[jobs.champion_bento_job, jobs.rollback_champion_job],
    sensors=[sensors.champion_change_sensor],
)
