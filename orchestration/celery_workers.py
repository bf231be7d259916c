"""The production profile's step workers (MLOPS_EXECUTOR=celery): dagster-celery's executor puts
each step of a run on RabbitMQ and Celery workers on any machine that reaches the broker, the
Dagster instance (PostgreSQL) and the stores take them off, one step at a time each.

A step's message is acknowledged only once the step has finished, so a worker that dies mid-step
hands it back to the broker and another worker runs it again: steps are written to be idempotent
(a partition is replaced, never appended to)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assets.resources import GPU_QUEUE
from ml.settings import PROJECT_ROOT, Settings, executable
from orchestration.processes import log_tail, stop_process_group

WORKER_START_TIMEOUT_S = 90
READY_MARKER = " ready."
"""What Celery logs once a worker consumes from its queues."""


def celery_executor_config(settings: Settings) -> dict:
    """dagster-celery's executor config for this deployment; the workers' app is built from the
    same, so both sides agree on the broker and the queues."""
    return {
        "broker": settings.celery_broker,
        "backend": "rpc://",  # results come back over RabbitMQ: no second store to run
        "config_source": {
            "task_default_queue": settings.celery_queue,
            "task_acks_late": True,  # acknowledged once the step ran: a lost worker's step is
            "task_reject_on_worker_lost": True,  # handed back to the broker, not dropped
            "worker_prefetch_multiplier": 1,  # a busy worker holds no second step
            "broker_connection_retry_on_startup": True,
        },
    }


def worker_queues(settings: Settings, gpu: bool = True) -> tuple[str, ...]:
    """The queues a worker on this machine listens to: the default one, and `gpu` (the training
    steps) unless a dedicated GPU worker takes those."""
    return (settings.celery_queue, GPU_QUEUE) if gpu else (settings.celery_queue,)


@dataclass
class CeleryWorker:
    name: str
    """The node name Celery reports (`name@host`), as the step events record it."""
    process: subprocess.Popen
    log_path: Path
    seconds_to_ready: float

    def stop(self) -> None:
        """A warm shutdown: the step in hand finishes first."""
        stop_process_group(self.process, grace_s=60)

    def kill(self) -> None:
        """SIGKILL, as a machine lost or an out-of-memory kill would end it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_worker(
    settings: Settings,
    name: str,
    queues: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
) -> CeleryWorker:
    """One Celery worker process (the solo pool: a step runs in the worker process itself, so
    killing the worker kills its step) listening to `queues`; returns once it consumes. It gets
    this process's environment: the steps it runs need the deployment's settings and keys."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    node = f"{name}@{socket.gethostname()}"
    command = [
        executable("celery"),
        "--app",
        "orchestration.celery_app",
        "worker",
        "--pool",
        "solo",
        "--prefetch-multiplier",
        "1",
        "--queues",
        ",".join(queues),
        "--hostname",
        node,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    started = time.monotonic()
    log_path.write_bytes(b"")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env if env is not None else dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while READY_MARKER not in log_tail(log_path, 400):
        if process.poll() is not None or time.monotonic() - started > WORKER_START_TIMEOUT_S:
            stop_process_group(process)
            raise RuntimeError(
                f"Celery worker {node} did not start consuming {', '.join(queues)} from the "
                f"broker; its log ({log_path}) ends:\n{log_tail(log_path)}"
            )
        time.sleep(0.2)
    return CeleryWorker(node, process, log_path, time.monotonic() - started)


def start_workers(
    settings: Settings, count: int, queues: Sequence[str] | None = None
) -> list[CeleryWorker]:
    """`count` workers on this machine, logs under the data home; all or none."""
    workers: list[CeleryWorker] = []
    try:
        for index in range(1, count + 1):
            workers.append(
                start_worker(
                    settings,
                    f"worker{index}",
                    queues or worker_queues(settings),
                    settings.data_home / "logs" / f"celery-worker{index}.log",
                )
            )
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Celery step workers on this machine")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    workers = start_workers(settings, args.workers)
    for worker in workers:
        print(f"Celery worker {worker.name} takes steps (log: {worker.log_path})", flush=True)
    try:
        while all(worker.process.poll() is None for worker in workers):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for worker in workers:
            worker.stop()


if __name__ == "__main__":
    sys.exit(main())
