"""Prepare $DAGSTER_HOME with the chosen instance config: `local` (SQLite) or `production`
(PostgreSQL). `python -m orchestration.instance` is what `make dev` runs first."""

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from dagster import DagsterInstance

from assets.resources import DUCKDB_POOL, REGISTRY_POOL
from ml.settings import Settings

INSTANCE_CONFIGS = Path(__file__).parent / "instance"
PROFILES = ("local", "production")
POOLS = (DUCKDB_POOL, REGISTRY_POOL)


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
    return initialize_pools(DagsterInstance.from_config(str(home)))


def initialize_pools(instance: DagsterInstance) -> DagsterInstance:
    """Give the platform's pools their slots before any run starts: two runs starting at once on
    a fresh PostgreSQL instance would otherwise both create a pool's row, and one fail on it."""
    for pool in POOLS:
        instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    return instance


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A database of its own on a PostgreSQL server (`admin_url` may create databases), uniquely
    named `<prefix>_<hex>`, created here and dropped (its connections ended first) on exit;
    yields its URL. For tests and benchmarks of the production profile."""
    import psycopg2

    connection = psycopg2.connect(admin_url, connect_timeout=5)
    connection.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", [name]
            )
            cursor.execute(f'drop database if exists "{name}"')
        connection.close()


if __name__ == "__main__":
    print(f"DAGSTER_HOME={open_instance(Settings.from_env()).root_directory}")
