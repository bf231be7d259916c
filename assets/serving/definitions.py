"""Everything serving brings to the code location."""

from dagster import Definitions

from assets.serving import bento, jobs, release, sensors

definitions = Definitions(
    assets=[bento.champion_bento],
    jobs=[
        jobs.champion_bento_job,
        jobs.rollback_champion_job,
        release.release_job,
        release.pin_champion_job,
    ],
    sensors=[
        release.release_sensor,
        sensors.champion_change_sensor,
        sensors.serving_rollout_sensor,
    ],
)
