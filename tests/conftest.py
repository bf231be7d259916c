"""Session-wide fixtures: a private data home per test, the public datasets, small demo data."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
import requests
from cryptography.fernet import Fernet
from dagster import AssetKey

from ml.annotation.label_studio_client import LabelStudioClient
from ml.data.sources import DemandSource
from ml.settings import PROJECT_ROOT, Settings, environment_with, executable
from ml.synthetic.defect_images import generate_cell_images, image_drop_zip
from ml.synthetic.demand import generate_demand
from ml.synthetic.requests import generate_requests
from orchestration.instance import scratch_database
from orchestration.labelstudio import LabelStudioConfig, LabelStudioServer, start_server
from orchestration.processes import stop_process_group, wait_until_ready
from orchestration.serving import BentoServer, start_bento_server
from orchestration.simulated_annotators import SIMULATED_DOMAIN, simulated_annotator

# The tests' annotators are the simulated ones: they are the deployment's allow-list.
os.environ.setdefault("MLOPS_ANNOTATORS", f"@{SIMULATED_DOMAIN}")
# A secret every process of the session could see: test_secrets_scan.py looks for it
# everywhere afterwards. Without a user name, MLflow's client sends no credentials.
os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", f"known-secret-{uuid.uuid4().hex}")
KNOWN_ENVIRONMENT_SECRET = os.environ["MLFLOW_TRACKING_PASSWORD"]
# Logs are encrypted at rest, as the demo and `make serve` encrypt them.
os.environ.setdefault("MLOPS_ENCRYPTION_KEYS", Fernet.generate_key().decode())

if TYPE_CHECKING:  # imported where used: MLflow and scikit-learn slow every test session's start
    from dagster import DagsterInstance, Definitions

    from assets.resources import Warehouse
    from ml.lifecycle.registry import ModelVersion, Registry
    from ml.requests.classifiers import BaselineClassifier, LabeledTexts
    from orchestration.object_store import ObjectStoreServer


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh, private data home; the environment points at it as a deployment's would."""
    home = tmp_path / "data_home"
    monkeypatch.setenv("MLOPS_DATA_HOME", str(home))
    monkeypatch.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
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


def ingest_and_build_warehouse(settings: Settings, blocked: tuple[str, ...] = ()) -> Warehouse:
    """The request and image drops in their drops folders and the small demand source,
    ingested and built by dbt in-process, as the embedded executor runs them; the deployment's
    warehouse. `blocked`: the runs (by name prefix, e.g. `defects line3`) that must fail, each
    on a blocking check; every other run must succeed."""
    from dagster import DagsterInstance

    from assets.resources import DataHome, warehouse_of
    from orchestration.definitions import build_definitions
    from orchestration.pipeline import (
        PipelineRun,
        build_warehouse,
        ingest_defect_drops,
        ingest_demand,
        ingest_request_drops,
    )

    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    run = PipelineRun()
    home = DataHome(path=str(settings.data_home))
    ingest_request_drops(defs, instance, home, run)
    ingest_defect_drops(defs, instance, home, run)
    ingest_demand(defs, instance, run)
    build_warehouse(defs, instance, run)
    failed = sorted(name for name, result in run.results.items() if not result.success)
    assert [n for n in failed if not n.startswith(blocked)] == [], f"runs failed: {failed}"
    assert all(any(n.startswith(b) for n in failed) for b in blocked), f"not blocked: {blocked}"
    return warehouse_of(settings)


def embedded_tables(
    settings: Settings, home: Path, queries: list[str], drops: Path | None = None
) -> list[pl.DataFrame]:
    """The request drops in `drops` (default: `settings`' local drops folder) through the
    embedded default (in-process, the DuckDB file under `home`, no broker): what each query
    returns there."""
    embedded = settings.moved_to(home)
    source = drops or Path(settings.request_drops_uri)
    for path in source.rglob("*.csv"):
        target = Path(embedded.request_drops_uri) / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    warehouse = ingest_and_build_warehouse(embedded)
    return [warehouse.query(query) for query in queries]


def in_utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Instants named in UTC (DuckDB names them in its session's zone, PostgreSQL's backend
    in UTC): frames from the two warehouses compare by instant."""
    return frame.with_columns(
        pl.col(name).dt.convert_time_zone("UTC")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone
    )


@pytest.fixture
def object_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStoreServer]:
    """A store of the test's own; this process (and the processes it starts) its clients."""
    import s3fs

    from orchestration.object_store import object_store_keys, start_object_store

    keys = object_store_keys(tmp_path / "object-store-secrets")
    server = start_object_store(tmp_path / "objects", free_port(), keys, tmp_path / "s3.log")
    for name, value in server.client_environment().items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a client made for an earlier store is not reused
    yield server
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def upload(local: Path, key: str) -> str:
    """`local` into the store the environment names, at `key` of the platform's bucket."""
    import s3fs

    from orchestration.object_store import BUCKET

    s3fs.S3FileSystem().put_file(str(local), f"{BUCKET}/{key}")
    return f"s3://{BUCKET}/{key}"


def postgres_admin_url() -> str:
    return os.environ.get(
        "MLOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@contextlib.contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL (see `scratch_database`); unreachable
    PostgreSQL fails under CI and skips elsewhere."""
    import psycopg2

    admin = postgres_admin_url()
    try:
        psycopg2.connect(admin, connect_timeout=5).close()
    except psycopg2.OperationalError as error:
        message = f"PostgreSQL is not reachable at {admin} ({error}); set MLOPS_TEST_POSTGRES_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with scratch_database(admin, prefix) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, created and dropped by this session."""
    with scratch_postgres_database("mlops_test") as url:
        yield url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


MLFLOW_SERVER_START_TIMEOUT_S = 120


@contextlib.contextmanager
def running_mlflow_server(backend: str, folder: Path, port: int) -> Iterator[subprocess.Popen]:
    """A real `mlflow server` on `port` over the `backend` store URI, artifacts proxied by it into
    `folder`, its log there too (one per start: a test may kill it and start it again on the
    same state); the process group is stopped on exit.

    The server's job runner is turned off: it spawns seven huey consumer processes and roughly
    doubles the start-up, and nothing here submits server jobs."""
    log = folder / f"server-{time.monotonic_ns()}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                executable("mlflow"),
                "server",
                "--backend-store-uri",
                backend,
                "--serve-artifacts",
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=folder,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_until_ready(
                process,
                f"http://127.0.0.1:{port}/health",
                log,
                MLFLOW_SERVER_START_TIMEOUT_S,
                "mlflow server",
            )
        except RuntimeError as error:
            pytest.fail(str(error))
        yield process
    finally:
        stop_process_group(process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` for the session: its backend (tracking and registry) in a database of
    its own on the machine's PostgreSQL, artifacts proxied by the server into a private folder.
    Yields its URL; the process group is stopped and the database dropped afterwards.

    Start-up measured on the 2-core dev machine: about 8-10 s on a fresh database (the schema
    migration included); ~22 s with the server's job runner on.
    """
    with scratch_postgres_database("mlops_mlflow") as backend:
        port = free_port()
        started = time.monotonic()
        with running_mlflow_server(backend, tmp_path_factory.mktemp("mlflow_server"), port):
            url = f"http://127.0.0.1:{port}"
            print(f"\nMLflow server started in {time.monotonic() - started:.1f} s on {url}")
            yield url


DAGSTER_WEBSERVER_START_TIMEOUT_S = 240


@contextlib.contextmanager
def dagster_webserver(
    settings: Settings,
    log_path: Path,
    *flags: str,
    code: tuple[str, ...] = ("-w", str(PROJECT_ROOT / "workspace.yaml")),
    environment: dict[str, str] | None = None,
) -> Iterator[str]:
    """The real `dagster-webserver` over `code` (default: this project's code location) and the
    instance in `settings.dagster_home`; its URL. The process group is stopped on exit."""
    port = free_port()
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [executable("dagster-webserver"), *flags, *code, "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=environment or environment_with(DAGSTER_HOME=str(settings.dagster_home)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(
            process,
            f"{url}/server_info",
            log_path,
            DAGSTER_WEBSERVER_START_TIMEOUT_S,
            "dagster-webserver",
        )
        yield url
    finally:
        stop_process_group(process)


STRONG_C = 0.5
STARVED_C = 0.0005
"""The same baseline with almost no capacity left: a real, much weaker model."""


@dataclass(frozen=True)
class Baselines:
    """Real intent baselines on one set of generated requests, for the registry tests: every
    version they register is a model that was really trained, of a known quality."""

    classes: tuple[str, ...]
    test: LabeledTexts
    """Held out: what the gate scores every version on."""
    strong: BaselineClassifier
    starved: BaselineClassifier
    """Trained with C = STARVED_C."""
    shuffled: BaselineClassifier
    """Trained on the same texts with their labels shuffled: it learned nothing."""
    middling: BaselineClassifier
    """Trained on 120 of the texts only."""


@pytest.fixture(scope="session")
def baselines() -> Baselines:
    """700 generated requests: 450 to train, 100 to calibrate, 150 held out."""
    from ml.requests.classifiers import LabeledTexts, train_baseline
    from ml.requests.taxonomy import synthetic_taxonomy

    frame = generate_requests(
        700, seed=8, start=datetime(2025, 1, 1, tzinfo=UTC), end=datetime(2025, 3, 31, tzinfo=UTC)
    )
    texts, intents = frame["text"].to_list(), frame["intent"].to_list()
    train = LabeledTexts(texts[:450], intents[:450])
    validation = LabeledTexts(texts[450:550], intents[450:550])
    shuffled = list(train.intents)
    random.Random(3).shuffle(shuffled)
    classes = synthetic_taxonomy().intents
    return Baselines(
        tuple(classes),
        LabeledTexts(texts[550:], intents[550:]),
        train_baseline(train, validation, classes, c=STRONG_C),
        train_baseline(train, validation, classes, c=STARVED_C),
        train_baseline(LabeledTexts(train.texts, shuffled), validation, classes, c=STRONG_C),
        train_baseline(LabeledTexts(train.texts[:120], train.intents[:120]), validation, classes),
    )


def classifier_rescorer(
    registry: Registry, model_name: str, test: LabeledTexts, calls: list[str] | None = None
) -> Callable[[ModelVersion], float]:
    """The gate's scoring as request_classifier_promotion does it: the version loaded through the
    registry (digests verified) and its F1-macro on `test`; `calls` collects what was scored."""
    from ml.requests.classifiers import registered_f1_macro

    def rescore(version: ModelVersion) -> float:
        if calls is not None:
            calls.append(version.version)
        return registered_f1_macro(registry, model_name, version.version, test)

    return rescore


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """The real Label Studio server, in its own venv, started once for the whole session."""
    config = LabelStudioConfig.scratch(
        tmp_path_factory.mktemp("labelstudio"), free_port(), "admin@tests.local"
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


@dataclass
class Loop:
    """A deployment of its own with unlabeled requests ingested, before Label Studio: its
    annotation jobs run in-process against an ephemeral instance."""

    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    admin: LabelStudioClient

    @property
    def warehouse(self) -> Warehouse:
        from assets.resources import Warehouse

        return Warehouse(path=str(self.settings.warehouse_path))

    def run(self, job: str, partition: str | None = None, config: dict | None = None):
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, partition_key=partition, run_config=config, raise_on_error=False
        )

    def new_batch(self, size: int) -> str:
        from assets.requests.sensors import batches_to_send

        config = {"ops": {"annotation_candidates": {"config": {"batch_size": size, "seed": 5}}}}
        assert self.run("annotation_candidates_job", config=config).success
        event = self.instance.get_latest_materialization_event(AssetKey("annotation_candidates"))
        batch = event.asset_materialization.metadata["batch"].value
        assert batches_to_send(self.instance) == [batch]
        assert self.run("annotation_batch_job", batch).success
        return batch

    def answers(self, batch: str) -> dict[str, str]:
        """What the source said before its labels were hidden: the simulated annotators' key."""
        rows = self.warehouse.query(
            "select i.ext_id, h.intent from annotation_items i "
            "join hidden_labels h using (request_id) where i.batch_id = ?",
            [batch],
        )
        return dict(zip(rows["ext_id"], rows["intent"], strict=True))

    def review(self, batch: str) -> tuple[int, dict[str, str]]:
        """The batch's review project and its key (a review task is `review:<ext_id>`)."""
        answers = {f"review:{ext}": intent for ext, intent in self.answers(batch).items()}
        return self.admin.find_project(f"Review {batch}"), answers

    def status(self, batch: str) -> set[str]:
        return set(
            self.warehouse.query(
                "select distinct status from annotation_items where batch_id = ?", [batch]
            )["status"]
        )


@pytest.fixture
def loop(
    settings: Settings,
    label_studio: LabelStudioServer,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Loop:
    from dagster import DagsterInstance

    from assets.resources import DataHome
    from orchestration.definitions import build_definitions
    from orchestration.pipeline import run_platform

    monkeypatch.setenv("MLOPS_LABEL_STUDIO_URL", label_studio.config.url)
    monkeypatch.setenv("MLOPS_LABEL_STUDIO_TOKEN", label_studio.config.token)
    settings = Settings.from_env()
    folder = Path(settings.request_drops_uri) / "synthetic_unlabeled"
    folder.mkdir(parents=True)
    seed = 100 + len(request.node.name)  # each test its own requests, hence its own batches
    generate_requests(
        80, seed=seed, start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 1, 31, tzinfo=UTC)
    ).write_csv(folder / "stream.csv")
    defs = build_definitions(settings, small_demand_source(settings))
    instance = DagsterInstance.ephemeral()
    assert run_platform(defs, instance, DataHome(path=str(settings.data_home))).success
    return Loop(
        settings,
        defs,
        instance,
        LabelStudioClient(label_studio.config.url, label_studio.config.token),
    )


def annotate(loop: Loop, batch: str, error_rates: tuple[float, float]) -> None:
    """Two simulated annotators (`ann-…`, `bob-…`) label the whole batch."""
    from ml.requests.taxonomy import synthetic_taxonomy

    project = loop.admin.find_project(f"Requests {batch}")
    intents = synthetic_taxonomy().intents
    for name, rate in zip(("ann", "bob"), error_rates, strict=True):
        annotator = simulated_annotator(
            loop.admin, f"{name}-{int(rate * 100)}", rate, seed=len(name)
        )
        annotator.annotate(project, loop.answers(batch), intents)


@dataclass
class ServedPlatform:
    """A deployment with a champion of each model and its Bento built (by the real assets)."""

    settings: Settings
    defs: object
    instance: object
    """Persistent, in `settings.dagster_home`: a `dagster-webserver` there shows its runs."""
    bento: str
    demand_source: DemandSource
    """What `defs` read demand from (for definitions of the same deployment built otherwise)."""

    def code_location(self) -> Path:
        """A Python file whose `defs` are this deployment's definitions (the same demand
        source), for a `dagster-webserver -f` over its instance."""
        path = self.settings.dagster_home / "served_definitions.py"
        path.write_text(
            '"""The served platform of the test session, as its webserver loads it."""\n\n'
            "import datetime\n\n"
            "from ml.data.sources import DemandSource\n"
            "from ml.settings import Settings\n"
            "from orchestration.definitions import build_definitions\n\n"
            f"defs = build_definitions(Settings.from_env(), {self.demand_source!r})\n",
            encoding="utf-8",
        )
        return path

    def environment(self) -> dict[str, str]:
        """What a process of this deployment is started with (a webserver, a run worker)."""
        settings = self.settings
        environment = environment_with(
            MLOPS_DATA_HOME=str(settings.data_home),
            MLOPS_WAREHOUSE_PATH=str(settings.warehouse_path),
            DAGSTER_HOME=str(settings.dagster_home),
        )
        for name in ("MLFLOW_TRACKING_URI", "BENTOML_HOME"):
            environment.pop(name, None)
        return environment


TEST_INSTANCE_CONFIG = """\
# The test session's persistent instance: runs launched from its webserver start at once, with
# no daemon to dequeue them; no newsletter dialog over the UI.
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
nux:
  enabled: false
"""


def persistent_instance(dagster_home: Path):
    """A SQLite-backed instance in `dagster_home` (what `make dev` keeps), which a
    `dagster-webserver` started there shows."""
    from dagster import DagsterInstance

    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(TEST_INSTANCE_CONFIG, encoding="utf-8")
    return DagsterInstance.from_config(str(dagster_home))


SERVED_TRANSFORMER = {
    "epochs": 1,
    "batch_size": 16,
    "max_train_samples": 96,
    "max_validation_samples": 48,
    "max_length": 32,
}
SERVED_FORECASTING = {"epochs": 2, "hidden_size": 16, "trees": 30}
SERVED_CNN = {"input_size": 64, "epochs": 1, "batch_size": 16, "max_train_samples": 96}
SERVED_CELLS = 160
"""Generated cell images the served defect classifier learns from (64×64)."""
BASELINE_AND_TRANSFORMER = [
    "request_test_set",
    "lineage_snapshot",
    "request_baseline",
    "request_classifier",
    "request_classifier_promotion",
]
"""Rounds of request_models_job that train these two candidates only, so the gate's decisions
between a weak and a strong baseline are known (the other candidates have their own test)."""


@pytest.fixture(scope="session")
def served_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedPlatform]:
    """Generated requests, 15 months of daily demand and a drop of cell images → every model
    family trained, registered and gated → `champion_bento` and `reference_profiles`
    materialized."""
    from assets.resources import DataHome
    from orchestration.definitions import build_definitions
    from orchestration.pipeline import execute_quietly, run_platform

    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("served") / "data_home"
        env.setenv("MLOPS_DATA_HOME", str(home))
        env.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.delenv("BENTOML_HOME", raising=False)
        settings = Settings.from_env()
        write_request_drop(settings, "requests.csv", rows=1500, seed=1)
        folder = settings.data_home / "sources" / "demand"
        folder.mkdir(parents=True)
        start, end = date(2024, 3, 1), date(2025, 5, 31)
        generate_demand(stores=2, items=2, start=start, end=end, seed=11).write_csv(
            folder / "demand.csv"
        )
        source = DemandSource(
            name="synthetic", uri=str(folder), format="contract", freq="D", start=start, end=end
        )
        cells = Path(settings.defect_drops_uri) / "line1" / "cells.zip"
        cells.parent.mkdir(parents=True)
        cells.write_bytes(image_drop_zip(generate_cell_images(SERVED_CELLS, seed=5, size=64)))
        defs = build_definitions(settings, source)
        instance = persistent_instance(settings.dagster_home)
        assert run_platform(defs, instance, DataHome(path=str(home))).success

        def request_models(svm_c: float) -> tuple[str, dict]:
            return "request_models_job", {
                "ops": {
                    "request_baseline": {"config": {"svm_c": svm_c}},
                    "request_classifier": {"config": SERVED_TRANSFORMER},
                }
            }

        demand = {
            "ops": {
                "demand_backtests": {"config": SERVED_FORECASTING},
                "demand_forecaster": {"config": SERVED_FORECASTING},
            }
        }
        # A weak baseline first (C=0.0005), packaged; then the real one beats it, packaged again:
        # two champions in the history, two Bentos in the store (the rollback test needs both).
        steps = [
            request_models(0.0005),
            ("demand_models_job", demand),
            ("defect_training_job", {"ops": {"defect_cnn": {"config": SERVED_CNN}}}),
            ("champion_bento_job", {}),
            request_models(0.5),
            ("champion_bento_job", {}),
        ]
        for job, config in steps:
            assets = BASELINE_AND_TRANSFORMER if job == "request_models_job" else None
            result = execute_quietly(defs, instance, job, config=config, assets=assets)
            assert result.success, f"{job} failed"
        bento = (
            instance.get_latest_materialization_event(AssetKey("champion_bento"))
            .asset_materialization.metadata["bento"]
            .value
        )
        yield ServedPlatform(settings, defs, instance, bento, source)


def logged_once_flushed(platform: ServedPlatform, request_ids: set[str]) -> pl.DataFrame:
    """The prediction-log records of `request_ids`, waiting (at most 15 s) until the workers
    have flushed them all."""
    now = datetime.now(UTC)
    from ml.monitoring.prediction_log import read_predictions

    deadline = time.monotonic() + 15
    while True:
        logged = read_predictions(
            platform.settings.prediction_log_dir,
            now - timedelta(hours=1),
            now + timedelta(hours=1),
        )
        mine = logged.filter(logged["request_id"].is_in(list(request_ids)))
        if mine.height >= len(request_ids) or time.monotonic() > deadline:
            return mine
        time.sleep(0.2)


def serve_for_tests(platform: ServedPlatform, bento: str, log_name: str) -> BentoServer:
    """`bentoml serve` of `bento` on a free port: two workers, the prediction log flushed
    every half second (the tests read it)."""
    return start_bento_server(
        platform.settings,
        bento,
        free_port(),
        platform.settings.data_home / "logs" / log_name,
        MLOPS_SERVING_WORKERS="2",
        MLOPS_PREDICTION_LOG_FLUSH_SECONDS="0.5",
    )


@pytest.fixture
def api(bento_server: BentoServer) -> Iterator[requests.Session]:
    """HTTP calls to the session's server with the platform's application key."""
    with requests.Session() as session:
        session.headers.update(bento_server.headers())
        yield session


@pytest.fixture(scope="session")
def bento_server(served_platform: ServedPlatform) -> Iterator[BentoServer]:
    """`bentoml serve` of the champion Bento, two workers, started once for the session."""
    server = serve_for_tests(served_platform, served_platform.bento, "bentoml-serve.log")
    print(f"\nbentoml serve {server.bento} ready in {server.started_in_seconds:.1f} s")
    try:
        yield server
    finally:
        server.stop()
