"""`bentoml serve` of the champion Bento on localhost: started by the demo, `make serve`,
`make dev` and the tests, and rolled forward blue/green when `champion_bento` builds a new Bento.

`champion_bento` writes which Bento is current to `<BENTOML_HOME>/champion_bento.json` (and, with
MLOPS_BENTO_URI, publishes the Bento's archive and that pointer to the object store: a serving
machine with the same variable follows the published pointer and imports the archive).
`make serve` (`follow_champion`) puts a Caddy front door on the service port and starts each new
Bento on a spare port beside the one serving; only once it passes a smoke test (real /classify
and /forecast answers from the expected model versions) does the front door switch to it, and
the old server is stopped after its last request in flight: no gap. A Bento that fails to start
or fails its smoke test is stopped and the old one keeps serving; a server that dies is started
again on a new port. Every outcome is a line in `logs/serving-rollouts.jsonl` under the data
home, which `serving_rollout_sensor` shows on `champion_bento` in Dagster. Production rolls
Kubernetes pods instead, see README.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, DEMAND_FORECASTER, REQUEST_CLASSIFIER
from ml.lifecycle.rollouts import (
    FAILED_SMOKE_TEST,
    FAILED_TO_START,
    RESTARTED,
    SWITCHED,
    append_rollout,
    rollout_log,
    rollouts_after,
)
from ml.security.encryption import KEYS_VARIABLE as ENCRYPTION_KEYS_VARIABLE
from ml.security.encryption import generated_keys_into_environment
from ml.settings import Settings, executable
from orchestration.front_door import (
    DEFAULT_ADMIN_PORT,
    FrontDoor,
    admin_port_from_env,
    start_front_door,
)
from orchestration.processes import log_tail, stop_process_group, wait_until_ready
from serving.api_keys import (
    APPLICATION,
    KEYS_VARIABLE,
    ServingCredentials,
    platform_credentials,
)
from serving.package import (
    bentoml_environment,
    current_bento,
    import_published,
    published_bento,
)

START_TIMEOUT_SECONDS = 240.0
DRAIN_TIMEOUT_SECONDS = 60.0
"""The most the old server is given to finish its requests in flight after a switch."""
RETRY_FAILED_AFTER_SECONDS = 300.0
"""A Bento that failed is tried again when the pointer file changes, or after this long."""
SMOKE_TEXT = "where is my new card?"


@dataclass
class BentoServer:
    bento: str
    port: int
    process: subprocess.Popen
    log_path: Path
    started_in_seconds: float
    credentials: ServingCredentials
    """The keys the platform's own callers send to it."""
    home: Path
    """Its own BENTOML_HOME (`server_home`), removed when it stops."""
    workers: list[psutil.Process] = field(default_factory=list)
    """Last seen worker processes: BentoML starts each in a session of its own, so a server
    killed outright leaves them answering on its socket until they are stopped by pid."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str = APPLICATION) -> dict[str, str]:
        """The `Authorization` header of the platform's application (or admin) key."""
        return self.credentials.headers(role)

    def watch_workers(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.workers = psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> None:
        """SIGTERM to the server and its workers (they finish their requests and flush their
        prediction logs); workers its death left behind are stopped by pid."""
        stop_process_group(self.process, grace_s=30)
        orphans = [worker for worker in self.workers if is_alive(worker)]
        for worker in orphans:
            with contextlib.suppress(psutil.Error):
                worker.terminate()
        _, alive = psutil.wait_procs(orphans, timeout=15)
        for worker in alive:
            with contextlib.suppress(psutil.Error):
                worker.kill()
        shutil.rmtree(self.home, ignore_errors=True)  # its metric files, links to the stores


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie: a killed worker whose new parent has not reaped it yet is
    gone (it holds no socket and answers nothing), though `is_running()` still says True."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


SHARED_STORES = ("bentos", "models")


def server_home(bentoml_home: Path, port: int) -> Path:
    """A BENTOML_HOME for the server on `port`: links to the shared Bento and model stores, and
    a Prometheus folder of its own. `bentoml serve` empties `<BENTOML_HOME>/
    prometheus_multiproc_dir` as it starts, so a Bento started beside the one serving (each
    rollout does) would otherwise zero the serving one's /metrics."""
    home = bentoml_home / "servers" / str(port)
    home.mkdir(parents=True, exist_ok=True)
    for store in SHARED_STORES:
        shared = bentoml_home / store
        shared.mkdir(parents=True, exist_ok=True)
        link = home / store
        if not link.is_symlink():
            link.symlink_to(shared.resolve(), target_is_directory=True)
    return home


def start_bento_server(
    settings: Settings, bento: str, port: int, log_path: Path, **environment: str
) -> BentoServer:
    """`bentoml serve <bento>` on 127.0.0.1:`port`, waiting until /readyz answers. It checks
    the API keys the environment configures, else the platform's generated ones."""
    credentials = platform_credentials(settings.secrets_dir)
    home = server_home(settings.bentoml_home, port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists():  # a restart keeps the log of the run before (how it died)
        log_path.replace(log_path.with_suffix(".previous.log"))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [executable("bentoml"), "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
            cwd=log_path.parent,  # not the checkout: the Bento serves its own copy of the code
            env=bentoml_environment(
                home,
                # the operator's API keys if given inline, and the log's encryption keys
                passing=(KEYS_VARIABLE, ENCRYPTION_KEYS_VARIABLE),
                MLOPS_DATA_HOME=str(settings.data_home),
                **credentials.server_environment(),
                **environment,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        seconds = wait_until_ready(
            process,
            f"http://127.0.0.1:{port}/readyz",
            log_path,
            START_TIMEOUT_SECONDS,
            f"bentoml serve {bento}",
            failure_marker="Application startup failed",
        )
    except RuntimeError:  # stopped, or never started: its home goes with it
        shutil.rmtree(home, ignore_errors=True)
        raise
    return BentoServer(bento, port, process, log_path, seconds, credentials, home)


def spare_port() -> int:
    """A port nothing listens on now (the OS picks it), for the next server beside the one
    serving."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the smoke test --------------------------------------------------------------------------


def _call(
    url: str, body: object = None, timeout: float = 60, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    """Status and parsed JSON body (None when not JSON) of a GET, or a POST of `body`."""
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


def expected_version(pointer: dict[str, object], model: str, variant: str) -> str | None:
    """The MLflow version a `variant` ("champion" or "challenger") answer of `model` must name,
    as the pointer file says; None when it does not say."""
    if variant == "challenger":
        challenger = (pointer.get("challengers") or {}).get(model)
        return None if challenger is None else str(challenger)
    versions = pointer.get("versions") or {}
    if versions.get(model):
        return str(versions[model])
    tag = str((pointer.get("models") or {}).get(model, ""))
    found = re.search(r":v(\w+)$", tag)
    return found.group(1) if found else None


def _version_problem(pointer: dict[str, object], model: str, answer: dict, where: str) -> list:
    variant = str(answer.get("variant") or "champion")
    wanted = expected_version(pointer, model, variant)
    served = answer.get("model_version")
    if served is None:
        return [f"{where}: no model_version in the answer"]
    if wanted is not None and str(served) != wanted:
        return [f"{where}: model_version is {served!r}, expected {wanted!r} ({variant} of {model})"]
    return []


def _classify_problems(url: str, pointer: dict[str, object], headers: dict) -> list[str]:
    where = "POST /classify"
    status, body = _call(f"{url}/classify", {"texts": SMOKE_TEXT}, headers=headers)
    if status != 200:
        return [f"{where} answered {status}: {body}"]
    if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
        return [f"{where}: expected a list of one answer, got {body!r}"[:500]]
    answer, problems = body[0], []
    if not isinstance(answer.get("intent"), str):
        problems.append(f"{where}: intent is {answer.get('intent')!r}, expected a string")
    confidence = answer.get("confidence")
    if not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        problems.append(f"{where}: confidence is {confidence!r}, expected a number in 0..1")
    if not isinstance(answer.get("top_k"), list):
        problems.append(f"{where}: top_k is {answer.get('top_k')!r}, expected a list")
    return problems + _version_problem(pointer, REQUEST_CLASSIFIER, answer, where)


def _forecast_problems(
    url: str, pointer: dict[str, object], series: dict, headers: dict
) -> list[str]:
    where = "POST /forecast"
    status, body = _call(f"{url}/forecast", {"series": [series], "horizon": 1}, headers=headers)
    if status != 200:
        return [f"{where} answered {status}: {body}"]
    if not isinstance(body, dict):
        return [f"{where}: expected an object, got {body!r}"[:500]]
    forecasts = body.get("forecasts")
    if not isinstance(forecasts, list) or not forecasts:
        return [f"{where}: forecasts is {forecasts!r}, expected a non-empty list"]
    problems = [
        f"{where}: forecasts.{i} has p10 {f.get('p10')}, p50 {f.get('p50')}, p90 {f.get('p90')}"
        ", expected p10 ≤ p50 ≤ p90"
        for i, f in enumerate(forecasts)
        if not (
            isinstance(f, dict)
            and all(isinstance(f.get(q), int | float) for q in ("p10", "p50", "p90"))
            and f["p10"] <= f["p50"] <= f["p90"]
        )
    ]
    return problems + _version_problem(pointer, DEMAND_FORECASTER, body, where)


def _inspect_problems(
    url: str, pointer: dict[str, object], example: dict, headers: dict
) -> list[str]:
    where = "POST /inspect"
    status, body = _call(f"{url}/inspect", example, headers=headers)
    if status != 200:
        return [f"{where} answered {status}: {body}"]
    if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
        return [f"{where}: expected a list of one answer, got {body!r}"[:500]]
    answer, problems = body[0], []
    if answer.get("label") not in ("functional", "defective"):
        problems.append(f"{where}: label is {answer.get('label')!r}, expected functional/defective")
    probability = answer.get("defect_probability")
    if not isinstance(probability, int | float) or not 0 <= probability <= 1:
        problems.append(f"{where}: defect_probability is {probability!r}, expected 0..1")
    return problems + _version_problem(pointer, DEFECT_CLASSIFIER, answer, where)


def smoke_test(url: str, pointer: dict[str, object], headers: dict[str, str]) -> list[str]:
    """What is wrong with the server at `url` as the Bento `pointer` describes it (empty: fit to
    serve): /readyz answers 200, and each model it names answers a real request well, from the
    version the pointer expects (called with the platform's key, `headers`)."""
    try:
        status, _ = _call(f"{url}/readyz", timeout=10)
        if status != 200:
            return [f"GET /readyz answered {status}"]
        models = pointer.get("models") or {}
        problems = []
        if REQUEST_CLASSIFIER in models:
            problems += _classify_problems(url, pointer, headers)
        series = ((pointer.get("smoke") or {}).get("forecast") or {}).get("series") or []
        if DEMAND_FORECASTER in models and series:
            problems += _forecast_problems(url, pointer, series[0], headers)
        inspect = (pointer.get("smoke") or {}).get("inspect")
        if DEFECT_CLASSIFIER in models and inspect:
            problems += _inspect_problems(url, pointer, inspect, headers)
        return problems
    except (urllib.error.URLError, OSError) as error:
        return [f"{url} did not answer: {error}"]


# --- the supervisor --------------------------------------------------------------------------


def _say(settings: Settings, message: str) -> None:
    """What the supervisor did, on stdout (make serve's terminal) and in its log file."""
    print(message, flush=True)
    log = settings.data_home / "logs" / "serving-supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}\n")


def record_rollout(
    settings: Settings,
    bento: str,
    outcome: str,
    reason: str,
    port: int | None,
    previous: str | None,
) -> None:
    """One line in the rollout record (what `serving_rollout_sensor` reports), and the human
    line."""
    append_rollout(settings.data_home, bento, outcome, reason, port, previous)
    _say(settings, f"{outcome.replace('_', ' ')}: {bento} (port {port}): {reason}")


def startup_failure(error: str, log_path: Path) -> str:
    """Why a server failed to start, in a line or two: what `wait_until_ready` said, and the
    last exception its log names (the whole log stays in `log_path`)."""
    raised = [
        line.strip()
        for line in log_tail(log_path, 400).splitlines()
        if re.match(r"[A-Za-z_][\w.]*: \S", line)  # `package.SomeError: what`
    ]
    said = error.splitlines()[0] if error else "it did not start"
    return f"{said} {raised[-1]}" if raised else said


def _fingerprint(pointer: dict[str, object] | None) -> str | None:
    return None if pointer is None else json.dumps(pointer, sort_keys=True, default=str)


@dataclass
class FailedBentos:
    """Pointers whose Bento failed to start or failed its smoke test: not tried again until the
    pointer file changes, or RETRY_FAILED_AFTER_SECONDS pass (no hot loop on a broken Bento)."""

    pointer_seen: str | None = None
    failed_at: dict[str, float] = field(default_factory=dict)

    def notice(self, pointer: dict[str, object] | None) -> None:
        now = time.monotonic()
        if _fingerprint(pointer) != self.pointer_seen:
            self.pointer_seen, self.failed_at = _fingerprint(pointer), {}
        self.failed_at = {
            k: at for k, at in self.failed_at.items() if now - at < RETRY_FAILED_AFTER_SECONDS
        }

    def may_try(self, pointer: dict[str, object] | None) -> bool:
        return pointer is not None and _fingerprint(pointer) not in self.failed_at

    def add(self, pointer: dict[str, object]) -> None:
        self.failed_at[str(_fingerprint(pointer))] = time.monotonic()


def champion_pointer(settings: Settings) -> dict[str, object] | None:
    """The Bento to serve: the one `champion_bento` published (MLOPS_BENTO_URI: imported into
    this machine's BentoML store when it is rolled out), else the one it recorded in this
    machine's BENTOML_HOME; None before the first."""
    if settings.bento_uri:
        return published_bento(settings.bento_uri)
    return current_bento(settings.bentoml_home)


def roll_out(
    settings: Settings,
    front_door: FrontDoor,
    pointer: dict[str, object],
    previous: BentoServer | None,
    died: BentoServer | None = None,
) -> BentoServer | None:
    """Start the Bento `pointer` names on a spare port, smoke-test it, switch the front door to
    it; then drain and stop `previous`. None (the reason recorded, `previous` still serving)
    when it fails to start or fails its smoke test. `died`: the server it replaces, if dead."""
    bento, port = str(pointer["bento"]), spare_port()
    before = previous.bento if previous else (died.bento if died else None)
    log_path = settings.data_home / "logs" / f"bentoml-serve-{bento}.log"
    try:
        if settings.bento_uri:
            import_published(settings.bentoml_home, pointer)
        server = start_bento_server(settings, bento, port, log_path)
    except RuntimeError as error:
        reason = startup_failure(str(error), log_path)
        record_rollout(settings, bento, FAILED_TO_START, reason, port, before)
        return None
    server.watch_workers()
    problems = smoke_test(server.url, pointer, server.headers())
    if problems:
        server.stop()
        record_rollout(settings, bento, FAILED_SMOKE_TEST, "; ".join(problems), port, before)
        return None
    try:
        front_door.switch_to(port)
    except (RuntimeError, OSError) as error:
        server.stop()
        record_rollout(settings, bento, FAILED_TO_START, f"front door: {error}", port, before)
        return None
    if died is not None and died.bento == bento:
        record_rollout(settings, bento, RESTARTED, "started again after dying", port, before)
    else:
        record_rollout(settings, bento, SWITCHED, "passed its smoke test", port, before)
    if previous is not None:
        drain(settings, front_door, previous)
        previous.stop()
    return server


def drain(settings: Settings, front_door: FrontDoor, old: BentoServer) -> None:
    """Wait (at most DRAIN_TIMEOUT_SECONDS) until the front door has no request in flight to
    `old`."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if front_door.in_flight(old.port) == 0:
                return
        except (RuntimeError, OSError, ValueError):
            return  # the front door is gone: nothing can be in flight through it
        time.sleep(0.1)
    _say(settings, f"{old.bento} still had requests in flight after {DRAIN_TIMEOUT_SECONDS:.0f} s")


def follow_champion(
    settings: Settings,
    port: int,
    poll_seconds: float = 10.0,
    stop: threading.Event | None = None,
    admin_port: int = DEFAULT_ADMIN_PORT,
) -> None:
    """Serve the current champion Bento behind the front door on `port` and roll each new one
    out blue/green, until `stop` is set (or forever). A server (or the front door) that dies is
    started again; every outcome is said on stdout, in `logs/serving-supervisor.log` and in
    `logs/serving-rollouts.jsonl` under the data home."""
    stop = stop or threading.Event()
    front_door = start_front_door(settings, port, admin_port)
    _say(settings, f"front door on {front_door.url} (Caddy admin on {front_door.admin_url})")
    serving: BentoServer | None = None
    last_good: dict[str, object] | None = None
    failed = FailedBentos()
    waiting = False
    unreadable = ""
    try:
        while not stop.is_set():
            if front_door.process.poll() is not None:
                _say(settings, f"the front door exited with {front_door.process.returncode}")
                front_door.stop()
                front_door = start_front_door(settings, port, admin_port)
                if serving is not None:
                    front_door.switch_to(serving.port)
            died = None
            if serving is not None and serving.process.poll() is None:
                serving.watch_workers()
            elif serving is not None:
                died = serving
                _say(
                    settings,
                    f"bentoml serve {died.bento} exited with {died.process.returncode}: "
                    "restarting it",
                )
                died.stop()  # the workers it left behind still answer on its port
                serving = None
            try:
                pointer = champion_pointer(settings)
            except Exception as error:  # the object store away: keep serving what serves
                if str(error) != unreadable:
                    _say(settings, f"cannot read the champion Bento's pointer: {error}")
                unreadable = str(error)
                stop.wait(poll_seconds)
                continue
            unreadable = ""
            failed.notice(pointer)
            # nothing serving and the champion's Bento failed: the last good one again
            candidates = [pointer, last_good if serving is None else None]
            wanted = next((p for p in candidates if failed.may_try(p)), None)
            if wanted is not None and (serving is None or serving.bento != wanted["bento"]):
                started = roll_out(settings, front_door, wanted, serving, died)
                if started is None:
                    failed.add(wanted)
                else:
                    serving, last_good = started, wanted
            elif pointer is None and not waiting:
                print("no champion Bento yet: waiting for champion_bento", flush=True)
                waiting = True
            stop.wait(poll_seconds)
    finally:
        front_door.stop()
        if serving is not None:
            serving.stop()


@dataclass
class FollowedChampion:
    """`follow_champion` running in a thread of this process (the demo's serving)."""

    url: str
    bento: str
    stop: threading.Event
    thread: threading.Thread
    credentials: ServingCredentials

    def headers(self, role: str = APPLICATION) -> dict[str, str]:
        return self.credentials.headers(role)


@contextlib.contextmanager
def champion_behind_front_door(
    settings: Settings,
    port: int,
    admin_port: int = DEFAULT_ADMIN_PORT,
    timeout_s: float = START_TIMEOUT_SECONDS + 60,
) -> Iterator[FollowedChampion]:
    """What `make serve` runs, in a thread: the front door on `port` and the current champion
    Bento behind it. Yields once that Bento is switched in; a rollout that fails raises with
    its reason. Stops both on the way out."""
    pointer = champion_pointer(settings)
    if pointer is None:
        raise RuntimeError("no champion Bento yet: materialize champion_bento first")
    log = rollout_log(settings.data_home)
    _, seen = rollouts_after(log, 0)
    stop = threading.Event()
    thread = threading.Thread(
        target=follow_champion,
        args=(settings, port),
        kwargs={"poll_seconds": 1.0, "stop": stop, "admin_port": admin_port},
        name="follow_champion",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            records, seen = rollouts_after(log, seen)
            mine = [r for r in records if r["bento"] == pointer["bento"]]
            if any(r["outcome"] in (SWITCHED, RESTARTED) for r in mine):
                break
            if mine:
                raise RuntimeError(
                    f"{pointer['bento']}: {mine[-1]['outcome']}: {mine[-1]['reason']}"
                )
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{pointer['bento']} was not switched in within {timeout_s:.0f} s; see "
                    f"{settings.data_home / 'logs' / 'serving-supervisor.log'}"
                )
            time.sleep(0.5)
        yield FollowedChampion(
            f"http://127.0.0.1:{port}",
            str(pointer["bento"]),
            stop,
            thread,
            platform_credentials(settings.secrets_dir),
        )
    finally:
        stop.set()
        thread.join(timeout=DRAIN_TIMEOUT_SECONDS + 30)


def main() -> int:
    settings = Settings.from_env()
    generated_keys_into_environment(settings.secrets_dir)
    admin_port = admin_port_from_env()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the servers on the way out
    with contextlib.suppress(KeyboardInterrupt):
        follow_champion(settings, settings.serving_port, admin_port=admin_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
