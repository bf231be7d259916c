"""Caddy as the service's one front door: clients always call the same port, and the serving
supervisor points it at whichever `bentoml serve` should answer, so a new Bento is swapped in
with no gap and a failed one is never exposed.

Caddy runs as its own process with its admin API on 127.0.0.1 only. The upstream's address is
read by Caddy from a file for every request (the `{file.…}` placeholder in the dial address), so
a switch is an atomic rewrite of that file and never a reload of Caddy's configuration: a reload
restarts Caddy's servers, and under load one request in some thousands lost its connection
across it. Requests already proxied finish on the old upstream; the supervisor stops the old
server once no connection to it is left. Before any Bento is up, and while the upstream does
not answer, every request gets a 503 in the service's one error shape.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from ml.data.atomic_files import write_bytes_atomically
from ml.security.secret_files import write_private_file
from ml.settings import Settings, environment_with, executable
from orchestration.processes import log_tail, stop_process_group, wait_until_ready
from serving.http_contract import JSON_MEDIA_TYPE, error_body

DEFAULT_ADMIN_PORT = 2019
START_TIMEOUT_SECONDS = 30.0
SWITCH_TIMEOUT_SECONDS = 120.0
"""The one configuration load (from the 503 answer to proxying) waits for requests in flight
(bounded by GRACE_PERIOD)."""
UPSTREAM_FILE = "front-door-{port}-upstream"
"""Under `<data home>/caddy/`: `127.0.0.1:<port>` of the server the front door on `port`
proxies to."""
GRACE_PERIOD = "60s"
"""As long as the service's own time limit on an answer: no request it would finish is cut."""
UPSTREAM_IDLE_TIMEOUT = "2s"
"""Idle upstream connections are dropped before the server's own keep-alive timeout (5 s) can
close one under a request just sent on it (a POST is not retried: the client would get a 502)."""
SERVER_NAME = "front_door"
NO_SERVER_YET = "no model server is up behind the front door yet: retry in a while"
UPSTREAM_DOWN = "the model server behind the front door is not answering: retry in a while"


def admin_port_from_env() -> int:
    """Caddy's admin port: MLOPS_FRONT_DOOR_ADMIN_PORT, else DEFAULT_ADMIN_PORT."""
    return int(os.environ.get("MLOPS_FRONT_DOOR_ADMIN_PORT", DEFAULT_ADMIN_PORT))


def unavailable(message: str) -> dict[str, object]:
    """A Caddy handler answering 503 in the service's error shape."""
    return {
        "handler": "static_response",
        "status_code": 503,
        "headers": {"Content-Type": [JSON_MEDIA_TYPE], "Retry-After": ["5"]},
        "body": error_body(503, message).decode(),
    }


def not_routed() -> dict[str, object]:
    """A Caddy handler answering 404 in the service's error shape."""
    return {
        "handler": "static_response",
        "status_code": 404,
        "headers": {"Content-Type": [JSON_MEDIA_TYPE]},
        "body": error_body(404, "no such route").decode(),
    }


def front_door_config(
    port: int, admin_port: int, upstream_file: Path | None, storage: Path
) -> dict[str, object]:
    """Caddy's whole JSON configuration: plain HTTP on 127.0.0.1:`port`, proxying to the
    address `upstream_file` holds, read for every request (or answering 503 while there is
    none)."""
    if upstream_file is None:
        handler = unavailable(NO_SERVER_YET)
    else:
        handler = {
            "handler": "reverse_proxy",
            "upstreams": [{"dial": f"{{file.{upstream_file}}}"}],
            "transport": {
                "protocol": "http",
                "keep_alive": {"idle_timeout": UPSTREAM_IDLE_TIMEOUT},
            },
        }
    return {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(storage)},
        "apps": {
            "http": {
                "grace_period": GRACE_PERIOD,
                "servers": {
                    SERVER_NAME: {
                        "listen": [f"127.0.0.1:{port}"],
                        "protocols": ["h1"],
                        "automatic_https": {"disable": True},
                        "routes": [
                            # Metrics are scraped beside the service, never through the door.
                            {"match": [{"path": ["/metrics"]}], "handle": [not_routed()]},
                            {"handle": [handler]},
                        ],
                        "errors": {"routes": [{"handle": [unavailable(UPSTREAM_DOWN)]}]},
                    }
                },
            }
        },
    }


def _admin_call(url: str, body: object = None, timeout: float = 10) -> bytes:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": JSON_MEDIA_TYPE},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise RuntimeError(
            f"Caddy's admin API refused {request.method} {url} ({error.code}): "
            f"{error.read().decode('utf-8', 'replace')}"
        ) from error


@dataclass
class FrontDoor:
    port: int
    admin_port: int
    process: subprocess.Popen
    storage: Path
    log_path: Path
    upstream_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def upstream_file(self) -> Path:
        return upstream_file(self.storage.parent.parent, self.port)

    def switch_to(self, upstream_port: int) -> None:
        """Proxy every request that arrives from now on to 127.0.0.1:`upstream_port`: the
        upstream file rewritten atomically (the first switch also loads the proxying
        configuration in place of the 503 answer)."""
        write_bytes_atomically(self.upstream_file, f"127.0.0.1:{upstream_port}".encode())
        if self.upstream_port is None:
            config = front_door_config(self.port, self.admin_port, self.upstream_file, self.storage)
            _admin_call(f"{self.admin_url}/load", config, timeout=SWITCH_TIMEOUT_SECONDS)
        self.upstream_port = upstream_port

    def in_flight(self, upstream_port: int) -> int:
        """Open connections to 127.0.0.1:`upstream_port` (requests still being proxied there,
        and idle keep-alive ones, which Caddy closes after UPSTREAM_IDLE_TIMEOUT): 0 once
        nothing can still be answered by that server."""
        return sum(
            1
            for connection in psutil.net_connections(kind="tcp")
            if connection.status == psutil.CONN_ESTABLISHED
            and connection.laddr
            and connection.laddr.port == upstream_port
        )

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=15)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def upstream_file(data_home: Path, port: int) -> Path:
    return data_home / "caddy" / UPSTREAM_FILE.format(port=port)


def current_upstream_port(data_home: Path, port: int) -> int | None:
    """The port the front door on `port` proxies to (None before its first switch)."""
    path = upstream_file(data_home, port)
    return int(path.read_text(encoding="utf-8").rsplit(":", 1)[1]) if path.exists() else None


def start_front_door(
    settings: Settings, port: int, admin_port: int = DEFAULT_ADMIN_PORT
) -> FrontDoor:
    """`caddy run` answering 503 on 127.0.0.1:`port` until `switch_to` names an upstream; its
    state and log (`logs/front-door.log`) under the data home."""
    upstream_file(settings.data_home, port).unlink(missing_ok=True)
    storage = settings.data_home / "caddy" / "data"
    process, log_path = run_caddy(
        settings,
        "front-door",
        front_door_config(port, admin_port, None, storage),
        [port],
        admin_port,
    )
    return FrontDoor(port, admin_port, process, storage, log_path)


def run_caddy(
    settings: Settings,
    name: str,
    config: dict[str, object],
    ports: list[int],
    admin_port: int,
) -> tuple[subprocess.Popen, Path]:
    """`caddy run` of `config` (written to `caddy/<name>.json`, mode 0600: it may hold password
    hashes), its log `logs/<name>.log`; returns once its admin API and every port answer."""
    home = settings.data_home / "caddy"
    config_path = home / f"{name}.json"
    log_path = settings.data_home / "logs" / f"{name}.log"
    (home / "data").mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(config_path, json.dumps(config, indent=2))
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [executable("caddy"), "run", "--config", str(config_path)],
            cwd=home,
            env=environment_with(
                HOME=str(home),
                XDG_DATA_HOME=str(home / "xdg-data"),
                XDG_CONFIG_HOME=str(home / "xdg-config"),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    what = f"caddy ({name} on 127.0.0.1:{', '.join(map(str, ports))})"
    started = time.monotonic()
    wait_until_ready(
        process, f"http://127.0.0.1:{admin_port}/config/", log_path, START_TIMEOUT_SECONDS, what
    )
    while not all(_listening(port) for port in ports):  # the admin API is up a moment earlier
        if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_SECONDS:
            stop_process_group(process)
            raise RuntimeError(
                f"{what} did not listen; its log ({log_path}) ends:\n{log_tail(log_path)}"
            )
        time.sleep(0.1)
    return process, log_path
