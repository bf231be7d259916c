"""`bentoml serve` of the champion Bento on localhost: started by the demo, `make serve`,
`make dev` and the tests, and rolled forward when `champion_bento` builds a new Bento.

`champion_bento` writes which Bento is current to `<BENTOML_HOME>/champion_bento.json`;
`make serve` follows that file and restarts the server on the new Bento (a second or two without
an answer on the port while it swaps; production rolls Kubernetes pods instead, see README).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from ml.settings import Settings, executable
from orchestration.processes import stop_process_group, wait_until_ready
from serving.package import bentoml_environment, current_bento

START_TIMEOUT_SECONDS = 240.0


@dataclass
class BentoServer:
    bento: str
    port: int
    process: subprocess.Popen
    log_path: Path
    started_in_seconds: float
    workers: list[psutil.Process] = field(default_factory=list)
    """Last seen worker processes: BentoML starts each in a session of its own, so a server
    killed outright leaves them answering on its socket until they are stopped by pid."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def watch_workers(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.workers = psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> None:
        """SIGTERM to the server and its workers (they flush their prediction logs); workers
        its death left behind are stopped by pid."""
        stop_process_group(self.process, grace_s=30)
        orphans = [worker for worker in self.workers if is_alive(worker)]
        for worker in orphans:
            with contextlib.suppress(psutil.Error):
                worker.terminate()
        _, alive = psutil.wait_procs(orphans, timeout=15)
        for worker in alive:
            with contextlib.suppress(psutil.Error):
                worker.kill()


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie: a killed worker whose new parent has not reaped it yet is
    gone (it holds no socket and answers nothing), though `is_running()` still says True."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def start_bento_server(
    settings: Settings, bento: str, port: int, log_path: Path, **environment: str
) -> BentoServer:
    """`bentoml serve <bento>` on 127.0.0.1:`port`, waiting until /readyz answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists():  # a restart keeps the log of the run before (how it died)
        log_path.replace(log_path.with_suffix(".previous.log"))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [executable("bentoml"), "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
            cwd=log_path.parent,  # not the checkout: the Bento serves its own copy of the code
            env=bentoml_environment(
                settings.bentoml_home, MLOPS_DATA_HOME=str(settings.data_home), **environment
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seconds = wait_until_ready(
        process,
        f"http://127.0.0.1:{port}/readyz",
        log_path,
        START_TIMEOUT_SECONDS,
        f"bentoml serve {bento}",
        failure_marker="Application startup failed",
    )
    return BentoServer(bento, port, process, log_path, seconds)


def _say(settings: Settings, message: str) -> None:
    """What the supervisor did, on stdout (make serve's terminal) and in its log file."""
    print(message, flush=True)
    log = settings.data_home / "logs" / "serving-supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}\n")


def follow_champion(
    settings: Settings,
    port: int,
    poll_seconds: float = 10.0,
    stop: threading.Event | None = None,
) -> None:
    """Serve the current champion Bento and swap to each new one as it is built, until `stop`
    is set (or forever). A server that dies is restarted, and the restart is said on stdout
    and in the data home's `logs/serving-supervisor.log`."""
    stop = stop or threading.Event()
    server, waiting = None, False
    try:
        while not stop.is_set():
            wanted = current_bento(settings.bentoml_home)
            if server is not None and server.process.poll() is None:
                server.watch_workers()
            elif server is not None:
                _say(
                    settings,
                    f"bentoml serve {server.bento} exited with {server.process.returncode}: "
                    "restarting it",
                )
                server.stop()  # the workers it left behind still hold the port
                server = None
            if wanted is not None and (server is None or server.bento != wanted["bento"]):
                if server is not None:
                    _say(settings, f"champion Bento changed: {server.bento} → {wanted['bento']}")
                    server.stop()
                    server = None
                try:
                    server = start_bento_server(
                        settings,
                        str(wanted["bento"]),
                        port,
                        settings.data_home / "logs" / f"bentoml-serve-{wanted['bento']}.log",
                    )
                except RuntimeError as error:
                    _say(settings, f"could not start {wanted['bento']}, trying again: {error}")
                else:
                    server.watch_workers()
                    _say(settings, f"serving {server.bento} on {server.url}")
            elif wanted is None and not waiting:
                print("no champion Bento yet: waiting for champion_bento", flush=True)
                waiting = True
            stop.wait(poll_seconds)
    finally:
        if server is not None:
            server.stop()


def main() -> int:
    settings = Settings.from_env()
    port = settings.serving_port
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on the way out
    with contextlib.suppress(KeyboardInterrupt):
        follow_champion(settings, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
