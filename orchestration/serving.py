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
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM to the server and its workers (they flush their prediction logs)."""
        stop_process_group(self.process, grace_s=30)


def start_bento_server(
    settings: Settings, bento: str, port: int, log_path: Path, **environment: str
) -> BentoServer:
    """`bentoml serve <bento>` on 127.0.0.1:`port`, waiting until /readyz answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
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


def follow_champion(
    settings: Settings,
    port: int,
    poll_seconds: float = 10.0,
    stop: threading.Event | None = None,
) -> None:
    """Serve the current champion Bento and swap to each new one as it is built, until `stop`
    is set (or forever)."""
    stop = stop or threading.Event()
    server, waiting = None, False
    try:
        while not stop.is_set():
            wanted = current_bento(settings.bentoml_home)
            if wanted is not None and (server is None or server.bento != wanted["bento"]):
                if server is not None:
                    print(f"champion Bento changed: {server.bento} → {wanted['bento']}", flush=True)
                    server.stop()
                server = start_bento_server(
                    settings,
                    str(wanted["bento"]),
                    port,
                    settings.data_home / "logs" / f"bentoml-serve-{wanted['bento']}.log",
                )
                print(f"serving {server.bento} on {server.url}", flush=True)
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
