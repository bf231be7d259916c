"""Session-wide fixtures: a private data home per test, the public datasets, small demo data."""

import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from ml.settings import PROJECT_ROOT, Settings
from ml.sources import DemandSource
from ml.synthetic import generate_demand, generate_requests
from orchestration.labelstudio import LabelStudioConfig, LabelStudioServer, start_server
from orchestration.labelstudio_client import LabelStudioClient


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh, private data home; the environment points at it as a deployment's would."""
    home = tmp_path / "data_home"
    monkeypatch.setenv("MLOPS_DATA_HOME", str(home))
    monkeypatch.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return Settings.from_env()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets, read in place. Missing data fails under CI and skips elsewhere."""
    path = Path(os.environ.get("MLOPS_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
    if not (path / "banking77" / "train.csv").exists():
        message = f"the public datasets are not at {path} (set MLOPS_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_request_drop(settings: Settings, name: str, rows: int, seed: int) -> Path:
    """A small synthetic drop in the drops folder, as an upstream export would land."""
    folder = Path(settings.request_drops_uri) / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    start = datetime(2025, 1, 1, tzinfo=UTC)
    generate_requests(
        rows, seed=seed, start=start, end=datetime(2025, 3, 31, tzinfo=UTC)
    ).write_csv(path)
    return path


SMALL_DEMAND = {"stores": 2, "items": 3, "start": date(2025, 1, 1), "end": date(2025, 2, 28)}


def small_demand_source(settings: Settings, **overrides: object) -> DemandSource:
    """A daily demand source over two months of generated data (a few hundred rows)."""
    folder = settings.data_home / "sources" / "demand"
    folder.mkdir(parents=True, exist_ok=True)
    generate_demand(**SMALL_DEMAND, seed=3).write_csv(folder / "demand.csv")
    fields: dict[str, object] = {
        "name": "synthetic",
        "uri": str(folder),
        "format": "contract",
        "freq": "D",
        "start": SMALL_DEMAND["start"],
        "end": date(2025, 3, 1),
    }
    fields.update(overrides)
    return DemandSource(**fields)


def postgres_admin_url() -> str:
    return os.environ.get(
        "MLOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, created and dropped by this session."""
    import psycopg2

    admin = postgres_admin_url()
    try:
        connection = psycopg2.connect(admin, connect_timeout=5)
    except psycopg2.OperationalError as error:
        message = f"PostgreSQL is not reachable at {admin} ({error}); set MLOPS_TEST_POSTGRES_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    connection.autocommit = True
    name = f"mlops_test_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", [name]
            )
            cursor.execute(f'drop database if exists "{name}"')
        connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """The real Label Studio server, in its own venv, started once for the whole session."""
    config = LabelStudioConfig(
        venv=Path(os.environ.get("MLOPS_LABEL_STUDIO_VENV", PROJECT_ROOT / ".venv-labelstudio")),
        data_dir=tmp_path_factory.mktemp("labelstudio"),
        port=free_port(),
        username="admin@tests.local",
        password=secrets.token_hex(8),
        token=secrets.token_hex(20),
    )
    server = start_server(config)
    print(f"\nLabel Studio started in {server.started_in_seconds:.1f} s on {config.url}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio_admin(label_studio: LabelStudioServer) -> LabelStudioClient:
    return LabelStudioClient(label_studio.config.url, label_studio.config.token)
