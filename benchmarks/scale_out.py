"""The same backfill in-process and on Celery workers: wall time, and what the queue costs a step.

    python benchmarks/scale_out.py                       # 20 drops of 200 rows; 1 and 2 workers
    python benchmarks/scale_out.py --drops 40 --rows 1000 --workers 1,2,4 --runs-at-once 4
    python benchmarks/scale_out.py --warehouse postgres  # the Celery ways on the PG warehouse

The backfill: `--drops` generated request drops, one ingest run per drop (two steps: the raw
copy, then validation into the warehouse), as the drop sensor launches them. Each way runs in a
fresh data home on the same files:

- in-process: the embedded default, every run in this process one after another on the local
  instance (what `make demo` does);
- Celery with N workers: the production profile (a PostgreSQL instance of its own on this
  machine's PostgreSQL, RabbitMQ, MLOPS_EXECUTOR=celery), each run launched as a deployment's run
  worker is (`dagster job execute`), `--runs-at-once` at a time (a run coordinator's limit).
  With `--warehouse postgres` their warehouse is a PostgreSQL database of its own
  (MLOPS_WAREHOUSE_DATABASE_URL) and the warehouse writers' pool gets a slot per worker: on
  DuckDB it has one, since the file has one writer.

Per step, from the runs' own events: the queue's cost (from the executor submitting the step to
the worker starting it, plus from the step's success to the executor's next move: dagster-celery
polls its results once a second) against the step's own time. Also the peak number of
PostgreSQL connections the deployment held, for the estimate of where more workers saturate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADMIN_URL = os.environ.get(
    "MLOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
STEPS = ("raw_requests", "validate_requests")


@dataclass
class Outcome:
    way: str
    wall_s: float
    runs: int
    step_s: list[float] = field(default_factory=list)
    queue_s: list[float] = field(default_factory=list)
    peak_connections: int = 0


def write_drops(folder: Path, drops: int, rows: int) -> None:
    from ml.synthetic.requests import generate_requests

    folder.mkdir(parents=True, exist_ok=True)
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 3, 31, tzinfo=UTC)
    for index in range(drops):
        generate_requests(rows, seed=100 + index, start=start, end=end).write_csv(
            folder / f"drop-{index:03d}.csv"
        )


def deployment_environment(home: Path, **extra: str) -> None:
    """Point this process (and what it starts) at a fresh deployment in `home`."""
    os.environ.update(
        MLOPS_DATA_HOME=str(home),
        MLOPS_WAREHOUSE_PATH=str(home / "warehouse.duckdb"),
        DAGSTER_HOME=str(home / "dagster"),
        **extra,
    )


def register_drops(settings, instance, source_drops: Path) -> list[str]:
    """Copy the drops into the deployment's drops folder and register them as the sensor does."""
    from assets.requests.sensors import scan_request_drops
    from assets.resources import DataHome
    from ml.data.sources import demand_source_of
    from orchestration.definitions import build_definitions

    target = Path(settings.request_drops_uri) / "crm"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source_drops.glob("*.csv")):
        (target / path.name).write_bytes(path.read_bytes())
    defs = build_definitions(settings, demand_source_of(settings))
    scan = scan_request_drops(
        DataHome(path=str(settings.data_home)),
        defs.resources["request_intake"].process_config_and_initialize(),
        {},
    )
    ids = [registration.drop.drop_id for registration in scan.registrations]
    instance.add_dynamic_partitions("request_drops", ids)
    return ids


def step_times(instance, run_ids: list[str]) -> tuple[list[float], list[float]]:
    """(each step's own seconds, the queue's seconds around each step) from the runs' events."""
    from dagster import DagsterEventType

    own, queue = [], []
    for run_id in run_ids:
        submitted, started, succeeded = {}, {}, {}
        run_end = None
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.ENGINE_EVENT and (
                event.message or ""
            ).startswith("Submitting celery task"):
                submitted[entry.step_key] = entry.timestamp
            elif event.event_type == DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
            elif event.event_type == DagsterEventType.STEP_SUCCESS:
                succeeded[entry.step_key] = entry.timestamp
            elif event.event_type == DagsterEventType.RUN_SUCCESS:
                run_end = entry.timestamp
        for index, step in enumerate(STEPS):
            own.append(succeeded[step] - started[step])
            if submitted:
                after = submitted.get(STEPS[index + 1]) if index + 1 < len(STEPS) else run_end
                queue.append((started[step] - submitted[step]) + (after - succeeded[step]))
    return own, queue


def in_process(work: Path, drops: Path) -> Outcome:
    from dagster import DagsterInstance, RunsFilter

    from ml.data.sources import demand_source_of
    from ml.settings import Settings
    from orchestration.definitions import build_definitions
    from orchestration.instance import prepare_dagster_home
    from orchestration.pipeline import execute_quietly

    home = work / "in_process"
    deployment_environment(home, MLOPS_EXECUTOR="default", MLOPS_DAGSTER_PROFILE="local")
    settings = Settings.from_env()
    instance = DagsterInstance.from_config(str(prepare_dagster_home(settings.dagster_home)))
    ids = register_drops(settings, instance, drops)
    defs = build_definitions(settings, demand_source_of(settings))
    started = time.perf_counter()
    for drop_id in ids:
        result = execute_quietly(defs, instance, "request_ingest_job", partition=drop_id)
        assert result.success, f"in-process ingest of {drop_id} failed"
    wall = time.perf_counter() - started
    run_ids = [r.run_id for r in instance.get_runs(RunsFilter(job_name="request_ingest_job"))]
    own, _ = step_times(instance, run_ids)
    instance.dispose()
    return Outcome("in-process", wall, len(ids), own)


def on_celery(work: Path, drops: Path, workers: int, runs_at_once: int, warehouse: str) -> Outcome:
    import psycopg2
    from dagster import DagsterInstance, RunsFilter
    from kombu import Connection

    from assets.resources import DUCKDB_POOL
    from ml.settings import Settings
    from orchestration.celery_workers import start_workers
    from orchestration.instance import initialize_pools, prepare_dagster_home, scratch_database
    from orchestration.pipeline import launch_job

    home = work / f"celery_{workers}"
    queue = f"mlops-bench-{uuid.uuid4().hex[:8]}"
    with (
        scratch_database(ADMIN_URL, "mlops_scale_out") as database,
        scratch_database(ADMIN_URL, "mlops_scale_out_warehouse") as warehouse_url,
    ):
        deployment_environment(
            home,
            MLOPS_EXECUTOR="celery",
            MLOPS_DAGSTER_PROFILE="production",
            MLOPS_CELERY_QUEUE=queue,
            DAGSTER_PG_URL=database,
            **({"MLOPS_WAREHOUSE_DATABASE_URL": warehouse_url} if warehouse == "postgres" else {}),
        )
        settings = Settings.from_env()
        instance = initialize_pools(
            DagsterInstance.from_config(
                str(prepare_dagster_home(settings.dagster_home, "production"))
            )
        )
        if warehouse == "postgres":
            instance.event_log_storage.set_concurrency_slots(DUCKDB_POOL, workers)
        ids = register_drops(settings, instance, drops)
        started_workers = start_workers(settings, workers, queues=[queue])
        peak = [0]
        stop = threading.Event()

        def watch_connections() -> None:
            connection = psycopg2.connect(ADMIN_URL)
            connection.autocommit = True  # pg_stat_activity is a snapshot per transaction
            name = database.rsplit("/", 1)[1]
            with connection.cursor() as cursor:
                while not stop.wait(0.5):
                    cursor.execute(
                        "select count(*) from pg_stat_activity where datname = %s", [name]
                    )
                    peak[0] = max(peak[0], cursor.fetchone()[0])
            connection.close()

        watcher = threading.Thread(target=watch_connections, daemon=True)
        watcher.start()
        try:
            started = time.perf_counter()
            pending, running = list(ids), []
            while pending or running:
                while pending and len(running) < runs_at_once:
                    drop_id = pending.pop(0)
                    log = home / "logs" / f"run-{drop_id}.log"
                    running.append((launch_job("request_ingest_job", log, partition=drop_id), log))
                for process, log in list(running):
                    if process.poll() is not None:
                        assert process.returncode == 0, log.read_text()[-2000:]
                        running.remove((process, log))
                time.sleep(0.1)
            wall = time.perf_counter() - started
        finally:
            stop.set()
            watcher.join()
            for worker in started_workers:
                worker.stop()
            with Connection(settings.celery_broker) as connection:
                connection.default_channel.queue_delete(queue)
        run_ids = [r.run_id for r in instance.get_runs(RunsFilter(job_name="request_ingest_job"))]
        own, queued = step_times(instance, run_ids)
        instance.dispose()
    way = f"celery, {workers} worker(s)" + (", PG" if warehouse == "postgres" else "")
    return Outcome(way, wall, len(ids), own, queued, peak[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--workers", default="1,2", help="worker counts to try, comma-separated")
    parser.add_argument("--runs-at-once", type=int, default=4)
    parser.add_argument(
        "--warehouse",
        choices=("duckdb", "postgres"),
        default="duckdb",
        help="the Celery ways' warehouse (the in-process way keeps the embedded DuckDB)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # Dagster's beta notices; the runs' own logs keep theirs
    saved = dict(os.environ)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="scale_out_") as scratch:
        work = Path(scratch)
        drops = work / "drops"
        write_drops(drops, args.drops, args.rows)
        print(f"{args.drops} drops of {args.rows} rows; {len(STEPS)} steps per run", flush=True)
        outcomes.append(in_process(work, drops))
        print(f"  in-process: {outcomes[-1].wall_s:.1f} s", flush=True)
        for count in (int(n) for n in args.workers.split(",")):
            os.environ.clear()
            os.environ.update(saved)
            outcomes.append(on_celery(work, drops, count, args.runs_at_once, args.warehouse))
            print(f"  {outcomes[-1].way}: {outcomes[-1].wall_s:.1f} s", flush=True)
    base = outcomes[0].wall_s
    print(
        f"\n{'way':<26}{'wall s':>8}{'vs in-process':>15}{'runs/min':>10}"
        f"{'step p50 s':>12}{'queue p50 s':>13}{'queue p90 s':>13}{'PG conns':>10}"
    )
    for o in outcomes:
        queue_p50 = f"{statistics.median(o.queue_s):.2f}" if o.queue_s else "–"
        queue_p90 = (
            f"{statistics.quantiles(o.queue_s, n=10)[-1]:.2f}" if len(o.queue_s) > 1 else "–"
        )
        print(
            f"{o.way:<26}{o.wall_s:>8.1f}{base / o.wall_s:>14.2f}×{60 * o.runs / o.wall_s:>10.1f}"
            f"{statistics.median(o.step_s):>12.2f}{queue_p50:>13}{queue_p90:>13}"
            f"{o.peak_connections or '–':>10}"
        )
    print(
        "vs in-process: in-process wall time / this way's (above 1: faster). queue: the seconds a "
        "step spends between the executor and a worker (submit → start, success → next move)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
