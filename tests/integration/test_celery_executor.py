"""The production profile's executor for real: runs launched as a deployment launches them, their
steps taken off RabbitMQ by two Celery worker processes, on the PostgreSQL Dagster instance, the
PostgreSQL warehouse and drops in an S3-compatible store."""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, RunsFilter
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG
from kombu import Connection

from assets.requests.intake import validate_requests
from assets.requests.models import request_classifier
from assets.requests.sensors import scan_request_drops
from assets.resources import GPU_QUEUE, DataHome, warehouse_of
from ml.settings import Settings
from orchestration.celery_workers import (
    CeleryWorker,
    celery_executor_config,
    start_workers,
    worker_queues,
)
from orchestration.definitions import build_definitions, executor_for
from orchestration.instance import initialize_pools, prepare_dagster_home
from orchestration.object_store import BUCKET, ObjectStoreServer
from orchestration.pipeline import (
    PARTITION_TAG,
    PipelineRun,
    ingest_demand,
    launch_job,
)
from tests.conftest import (
    embedded_tables,
    in_utc,
    scratch_postgres_database,
    small_demand_source,
    upload,
    write_request_drop,
)

RUN_TIMEOUT_S = 240
VALIDATED = (
    "select request_id, text, intent, source, received_at, drop_id from validated_requests "
    "order by request_id"
)
QUARANTINED = (
    "select raw_row_id, drop_id, reasons from quarantine_requests order by drop_id, raw_row_id"
)
SPLITS = "select * from request_splits order by request_id"


@dataclass
class CeleryDeployment:
    settings: Settings
    instance: DagsterInstance
    workers: list[CeleryWorker]
    store: ObjectStoreServer

    @property
    def staged(self) -> Path:
        """Local copies of the drops put into the object store (for the embedded comparison)."""
        return self.settings.data_home / "staged_drops"

    def drop(self, name: str, rows: int, seed: int) -> None:
        """A generated drop put into the drops folder in the object store, as an upstream
        export lands."""
        local = write_request_drop(
            replace(self.settings, request_drops_uri=str(self.staged)), name, rows, seed
        )
        upload(local, f"drops/requests/synthetic/{name}")

    def definitions(self):
        return build_definitions(self.settings, small_demand_source(self.settings))

    def drop_ids(self) -> list[str]:
        """Register the files in the drops folder (as the drop sensor does) and add their
        partitions; the drops' ids, in file-name order."""
        scan = scan_request_drops(
            DataHome(path=str(self.settings.data_home)),
            self.definitions().resources["request_intake"].process_config_and_initialize(),
            {},
        )
        ids = [registration.drop.drop_id for registration in scan.registrations]
        self.instance.add_dynamic_partitions("request_drops", ids)
        return ids

    def run(self, job: str, partition: str | None = None) -> str:
        """Run `job` to its end as a deployment's run worker would; its run id."""
        return self.wait([self.launch(job, partition)])[0]

    def launch(self, job: str, partition: str | None = None):
        log = self.settings.data_home / "logs" / f"{job}-{partition or 'all'}.log"
        return launch_job(job, log, partition=partition), log

    def wait(self, launched) -> list[str]:
        for process, log in launched:
            code = process.wait(timeout=RUN_TIMEOUT_S)
            assert code == 0, f"run failed; its log ends:\n{log.read_text()[-3000:]}"
        runs = self.instance.get_runs(RunsFilter(), limit=len(launched))
        return [run.run_id for run in runs]

    def worker_of_each_step(self, run_id: str) -> dict[str, str]:
        """Step key → the Celery worker that ran it, from the run's engine events."""
        workers = {}
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            metadata = entry.dagster_event.engine_event_data.metadata
            if "Celery worker" in metadata:
                workers[entry.step_key] = metadata["Celery worker"].value
        return workers


@pytest.fixture
def celery_deployment(
    settings: Settings, object_store: ObjectStoreServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CeleryDeployment]:
    """The production profile on this machine: a PostgreSQL instance and warehouse of this
    test's own, request drops and raw copies in an S3-compatible store of its own,
    MLOPS_EXECUTOR=celery, a queue of its own on the machine's RabbitMQ, two workers."""
    with (
        scratch_postgres_database("mlops_celery") as database,
        scratch_postgres_database("mlops_celery_warehouse") as warehouse,
    ):
        monkeypatch.setenv("MLOPS_WAREHOUSE_DATABASE_URL", warehouse)
        monkeypatch.setenv("MLOPS_REQUEST_DROPS_URI", f"s3://{BUCKET}/drops/requests")
        monkeypatch.setenv("MLOPS_RAW_URI", f"s3://{BUCKET}/raw")
        yield from _deployment(settings, database, object_store, monkeypatch)


def _deployment(
    settings: Settings,
    database: str,
    store: ObjectStoreServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CeleryDeployment]:
    queue = f"mlops-test-{uuid.uuid4().hex[:8]}"
    home = prepare_dagster_home(settings.data_home / "dagster_production", "production")
    monkeypatch.setenv("DAGSTER_PG_URL", database)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLOPS_EXECUTOR", "celery")
    monkeypatch.setenv("MLOPS_CELERY_QUEUE", queue)
    deployed = Settings.from_env()
    instance = initialize_pools(DagsterInstance.from_config(str(home)))
    workers = start_workers(deployed, 2, queues=[queue])
    try:
        yield CeleryDeployment(deployed, instance, workers, store)
    finally:
        for worker in workers:
            worker.stop()
        instance.dispose()
        with Connection(deployed.celery_broker) as connection:
            connection.default_channel.queue_delete(queue)


def test_the_request_pipeline_runs_on_two_celery_workers_as_it_does_in_process(
    celery_deployment: CeleryDeployment, tmp_path: Path
) -> None:
    deployment = celery_deployment
    deployment.drop("jan.csv", rows=400, seed=11)
    deployment.drop("feb.csv", rows=400, seed=12)
    first, second = deployment.drop_ids()
    # Two drops at once: two runs whose steps the two workers share, both writing the one
    # warehouse (its writers wait for each other's lock).
    ingest_runs = deployment.wait(
        [
            deployment.launch("request_ingest_job", first),
            deployment.launch("request_ingest_job", second),
        ]
    )
    # dbt's demand models need validated demand: ingested in-process here, as in the
    # embedded run it is compared with.
    demand = PipelineRun()
    ingest_demand(deployment.definitions(), deployment.instance, demand)
    assert demand.success
    warehouse_run = deployment.run("warehouse_job")
    steps = {
        step: worker
        for run_id in [*ingest_runs, warehouse_run]
        for step, worker in deployment.worker_of_each_step(run_id).items()
        if step in ("raw_requests", "validate_requests", "warehouse_dbt_models")
    }
    assert set(steps) == {"raw_requests", "validate_requests", "warehouse_dbt_models"}
    used = {
        worker
        for run_id in ingest_runs
        for worker in deployment.worker_of_each_step(run_id).values()
    }
    assert used == {worker.name for worker in deployment.workers}, used
    warehouse = warehouse_of(deployment.settings)
    on_celery = [warehouse.query(query) for query in (VALIDATED, QUARANTINED, SPLITS)]
    in_process = embedded_tables(
        deployment.settings,
        tmp_path / "embedded",
        [VALIDATED, QUARANTINED, SPLITS],
        drops=deployment.staged,
    )
    assert on_celery[0].height + on_celery[1].height == 800
    # The raw copy one worker wrote is what the other read: in the store, not on a disk.
    raw_copies = sorted((deployment.store.root / BUCKET / "raw" / "requests").glob("*.parquet"))
    assert [path.stem for path in raw_copies] == sorted([first, second])
    assert not (deployment.settings.data_home / "raw").exists()
    assert on_celery[0]["drop_id"].n_unique() == 2
    for celery_table, embedded_table in zip(on_celery, in_process, strict=True):
        assert in_utc(celery_table).equals(in_utc(embedded_table))


def test_a_worker_killed_mid_step_hands_the_step_to_the_other_worker(
    celery_deployment: CeleryDeployment, tmp_path: Path
) -> None:
    deployment = celery_deployment
    rows = 30_000
    deployment.drop("big.csv", rows=rows, seed=21)
    (drop_id,) = deployment.drop_ids()
    process, log = deployment.launch("request_ingest_job", drop_id)
    by_pid = {worker.process.pid: worker for worker in deployment.workers}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    victim = None
    while victim is None:
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-3000:]
        for run in deployment.instance.get_runs(RunsFilter(tags={PARTITION_TAG: drop_id})):
            for entry in deployment.instance.all_logs(
                run.run_id, of_type=DagsterEventType.STEP_START
            ):
                if entry.step_key == "validate_requests":
                    victim = by_pid[entry.dagster_event.pid]
        time.sleep(0.05)
    victim.kill()
    (run_id,) = deployment.wait([(process, log)])
    survivor = next(worker for worker in deployment.workers if worker is not victim)
    starts = deployment.instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
    successes = deployment.instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)
    validate_starts = [
        entry.dagster_event.pid for entry in starts if entry.step_key == "validate_requests"
    ]
    validate_successes = [
        entry.dagster_event.pid for entry in successes if entry.step_key == "validate_requests"
    ]
    # Started on the killed worker, never finished there; started again and finished on the
    # other one.
    assert validate_starts == [victim.process.pid, survivor.process.pid]
    assert validate_successes == [survivor.process.pid]
    warehouse = warehouse_of(deployment.settings)
    valid, quarantined = warehouse.query(VALIDATED), warehouse.query(QUARANTINED)
    assert valid["request_id"].n_unique() == valid.height
    assert valid.height + quarantined.height == rows
    in_process = embedded_tables(
        deployment.settings, tmp_path / "embedded", [VALIDATED], drops=deployment.staged
    )
    assert in_utc(valid).equals(in_utc(in_process[0]))


def test_training_steps_go_to_the_gpu_queue_and_the_rest_to_the_deployment_queue(
    settings: Settings,
) -> None:
    celery = replace(settings, executor="celery", celery_queue="team-a")
    assert executor_for(celery).name == "celery"
    config = celery_executor_config(celery)["config_source"]
    assert config["task_default_queue"] == "team-a"
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert request_classifier.op.tags[DAGSTER_CELERY_QUEUE_TAG] == GPU_QUEUE
    assert DAGSTER_CELERY_QUEUE_TAG not in validate_requests.op.tags
    assert worker_queues(celery) == ("team-a", GPU_QUEUE)
