"""`bentoml serve` of the champion Bento on localhost: started by the demo, `make serve`,
`make dev` and the tests, and rolled forward when `champion_bento` builds a new Bento.

`champion_bento` writes which Bento is current to `<BENTOML_HOME>/champion_bento.json`;
`make serve` follows that file and restarts the server on the new Bento (a second or two without
an answer on the port while it swaps; production rolls Kubernetes pods instead, see README).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ml.data.ingestion import write_text_atomically
from ml.settings import Settings
from orchestration.processes import executable, stop_process_group, wait_until_ready

START_TIMEOUT_SECONDS = 240.0
POINTER_FILE = "champion_bento.json"


def bentoml_environment(bentoml_home: Path, **overrides: str) -> dict[str, str]:
    """This environment with BentoML's store set and no telemetry (packaging and serving)."""
    return {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **overrides,
    }


def current_bento(bentoml_home: Path) -> dict[str, object] | None:
    """What `champion_bento` last built for the current champions, or None before the first."""
    path = bentoml_home / POINTER_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def record_current_bento(bentoml_home: Path, packaged: dict[str, object]) -> None:
    """Point `make serve` at `packaged` (written whole, then renamed: readers never see half)."""
    bentoml_home.mkdir(parents=True, exist_ok=True)
    write_text_atomically(bentoml_home / POINTER_FILE, json.dumps(packaged, indent=2))


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
    port = int(os.environ.get("MLOPS_SERVING_PORT", "3001"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on the way out
    with contextlib.suppress(KeyboardInterrupt):
        follow_champion(settings, port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
