"""Prepare $DAGSTER_HOME with the chosen instance config: `local` (SQLite) or `production`
(PostgreSQL). `python -m orchestration.instance` is what `make dev` runs first."""

import shutil
from pathlib import Path

from dagster import DagsterInstance

from ml.settings import Settings

INSTANCE_CONFIGS = Path(__file__).parent / "instance"
PROFILES = ("local", "production")


def prepare_dagster_home(home: Path, profile: str = "local") -> Path:
    """Write `dagster.yaml` for the profile into `home` (replacing an older one) and return it."""
    if profile not in PROFILES:
        raise ValueError(f"MLOPS_DAGSTER_PROFILE={profile!r}: expected one of {PROFILES}")
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_CONFIGS / f"dagster.{profile}.yaml", home / "dagster.yaml")
    return home


def open_instance(settings: Settings) -> DagsterInstance:
    """The persistent instance the UI shows, prepared for the profile in MLOPS_DAGSTER_PROFILE."""
    home = prepare_dagster_home(settings.dagster_home, settings.dagster_profile)
    return DagsterInstance.from_config(str(home))


if __name__ == "__main__":
    print(f"DAGSTER_HOME={open_instance(Settings.from_env()).root_directory}")
