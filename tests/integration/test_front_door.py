"""The service's one front door (Caddy) and the supervisor behind it, for real: a new champion
Bento is swapped in under load without one failed request, a Bento that cannot start or answers
wrongly never takes traffic (and says why, in Dagster too), a killed server is back within 60 s."""

import contextlib
import itertools
import json
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from dagster import AssetKey, SensorResult, SkipReason, build_sensor_context

from assets.resources import DataHome
from assets.serving.sensors import serving_rollout_sensor
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.rollouts import (
    FAILED_SMOKE_TEST,
    FAILED_TO_START,
    RESTARTED,
    SWITCHED,
    rollout_log,
)
from ml.settings import Settings
from orchestration.front_door import current_upstream_port, start_front_door
from orchestration.serving import expected_version, follow_champion, is_alive
from serving.api_keys import platform_credentials
from serving.package import SERVED, current_bento, record_current_bento
from tests.conftest import ServedPlatform, free_port


def wait_until(condition: Callable[[], bool], seconds: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


# --- the front door alone -------------------------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    """Echoes the request's X-Request-ID and adds a header of its own; /slow waits for `release`."""

    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.release.wait(30)
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-ID", self.headers.get("X-Request-ID", ""))
        self.send_header("X-Upstream", "echo")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _is_unavailable_in_our_shape(answer: requests.Response) -> bool:
    body = answer.json()
    return (
        answer.status_code == 503
        and answer.headers["Content-Type"] == "application/json"
        and set(body) == {"error", "message", "fields", "request_id"}
        and body["error"] == "unavailable"
        and body["fields"] == []
    )


def test_the_front_door_says_unavailable_until_a_server_is_behind_it_then_proxies_unchanged(
    settings: Settings,
) -> None:
    front_door = start_front_door(settings, free_port(), free_port())
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        before = requests.post(f"{front_door.url}/classify", json={"texts": "hi"}, timeout=10)
        assert _is_unavailable_in_our_shape(before), before.text
        assert "no model server" in before.json()["message"]

        front_door.switch_to(upstream.server_address[1])
        answer = requests.get(f"{front_door.url}/x", headers={"X-Request-ID": "rid-42"}, timeout=10)
        assert answer.status_code == 200 and answer.json() == {"path": "/x"}
        assert answer.headers["X-Request-ID"] == "rid-42", "the request's id passed through"
        assert answer.headers["X-Upstream"] == "echo", "the answer's headers came back"
        metrics = requests.get(f"{front_door.url}/metrics", timeout=10)
        assert metrics.status_code == 404 and metrics.json()["error"] == "not_found", (
            "metrics are scraped beside the service, never through the front door"
        )

        with contextlib.ExitStack() as cleanup:
            cleanup.callback(_Upstream.release.set)
            slow = threading.Thread(
                target=requests.get, args=(f"{front_door.url}/slow",), kwargs={"timeout": 30}
            )
            slow.start()
            cleanup.callback(slow.join)
            port = upstream.server_address[1]
            assert wait_until(lambda: front_door.in_flight(port) == 1, 10), "one in flight"
            _Upstream.release.set()
            assert wait_until(lambda: front_door.in_flight(port) == 0, 10), "none left"

        front_door.switch_to(free_port())  # nothing listens there
        gone = requests.get(f"{front_door.url}/readyz", timeout=10)
        assert _is_unavailable_in_our_shape(gone), gone.text
        assert "not answering" in gone.json()["message"]
        assert (settings.data_home / "logs" / "front-door.log").exists()
    finally:
        upstream.shutdown()
        front_door.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{front_door.url}/readyz", timeout=5)


# --- the supervisor behind it ---------------------------------------------------------------


@dataclass
class Follower:
    """`follow_champion` running in a thread, as `make serve` runs it."""

    url: str
    admin_url: str
    settings: Settings
    since: int
    """How many rollout records the session's data home held before this supervisor started."""

    @property
    def headers(self) -> dict[str, str]:
        """The platform's application key, as the supervisor's servers check it."""
        return platform_credentials(self.settings.secrets_dir).headers()

    def upstream_port(self) -> int | None:
        """Where the front door sends requests now (None before the first switch)."""
        return current_upstream_port(self.settings.data_home, int(self.url.rsplit(":", 1)[1]))

    def rollouts(self) -> list[dict]:
        path = rollout_log(self.settings.data_home)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    def wait_for_rollout(self, bento: str, outcome: str, after: int, seconds: float) -> dict:
        """The first record of `outcome` for `bento` after the first `after` records."""
        found: list[dict] = []

        def recorded() -> bool:
            found[:] = [
                r
                for r in self.rollouts()[after:]
                if r["bento"] == bento and r["outcome"] == outcome
            ]
            return bool(found)

        assert wait_until(recorded, seconds), f"no {outcome} of {bento}: {self.rollouts()[after:]}"
        return found[0]


@contextlib.contextmanager
def following(platform: ServedPlatform) -> Iterator[Follower]:
    """The supervisor on free ports, the pointer file restored and the supervisor stopped on
    exit (which stops its front door and servers)."""
    home = platform.settings.bentoml_home
    pointer = current_bento(home)
    port, admin_port, stop = free_port(), free_port(), threading.Event()
    follower = Follower(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", platform.settings, 0
    )
    follower.since = len(follower.rollouts())
    thread = threading.Thread(
        target=follow_champion,
        args=(platform.settings, port, 0.5, stop),
        kwargs={"admin_port": admin_port},
    )
    thread.start()
    try:
        yield follower
    finally:
        record_current_bento(home, pointer)
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive(), "the supervisor stopped"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{follower.url}/readyz", timeout=5)


def answered_by(pointer: dict, answer: dict) -> bool:
    """The answer came from the Bento `pointer` describes (its champion, or its challenger)."""
    variant = str(answer.get("variant") or "champion")
    return answer.get("model_version") == expected_version(pointer, REQUEST_CLASSIFIER, variant)


def classify_once(
    url: str, headers: dict[str, str], text: str = "where is my card?"
) -> dict | None:
    try:
        answer = requests.post(f"{url}/classify", json={"texts": text}, headers=headers, timeout=30)
    except requests.RequestException:
        return None
    return answer.json()[0] if answer.status_code == 200 else None


def serves(follower: Follower, pointer: dict) -> bool:
    answer = classify_once(follower.url, follower.headers)
    return answer is not None and answered_by(pointer, answer)


def pointer_of(bento_dir: Path, like: dict) -> dict:
    """What `champion_bento` would have written for the Bento in `bento_dir` (its models from
    the Bento's arguments, their versions from its labels)."""
    described = yaml.safe_load((bento_dir / "bento.yaml").read_text(encoding="utf-8"))
    labels, arguments = described.get("labels") or {}, described.get("args") or {}
    pointer = {
        "bento": f"{described['name']}:{described['version']}",
        "path": str(bento_dir),
        "models": {model: arguments[model] for model in SERVED if arguments.get(model)},
        "versions": {m: labels[f"{m}_version"] for m in SERVED if labels.get(f"{m}_version")},
        "built": False,
    }
    challengers = {m: labels[f"{m}_challenger"] for m in SERVED if labels.get(f"{m}_challenger")}
    if challengers:
        pointer["challengers"] = challengers
    if like.get("smoke"):
        pointer["smoke"] = like["smoke"]
    return pointer


def another_bento(platform: ServedPlatform) -> Path:
    """A Bento of the store other than the current one: the earlier champion's (`rc1-…`)."""
    home = platform.settings.bentoml_home
    current = str(current_bento(home)["bento"]).split(":")[1]
    others = sorted(
        (p for p in (home / "bentos" / "mlops_platform").iterdir() if p.is_dir()),
        key=lambda p: (not p.name.startswith("rc1"), p.name),
    )
    return next(p for p in others if p.name != current)


@dataclass
class Load:
    """Clients calling /classify through the front door in a loop, each with its own request id;
    every outcome kept as (started, status, answer or error text, request id echoed)."""

    url: str
    headers: dict[str, str]
    outcomes: list[tuple[float, int, dict | str, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def call(self, client: int) -> None:
        for i in itertools.count():
            if self.stop.is_set():
                return
            request_id = f"load-{client}-{i}-{uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            try:
                answer = requests.post(
                    f"{self.url}/classify",
                    json={"texts": f"my card {i} has not arrived"},
                    headers={"X-Request-ID": request_id, **self.headers},
                    timeout=60,
                )
            except requests.RequestException as error:
                self.outcomes.append((started, -1, str(error), False))
                continue
            echoed = answer.headers.get("X-Request-ID") == request_id
            body = answer.json()[0] if answer.status_code == 200 else answer.text
            self.outcomes.append((started, answer.status_code, body, echoed))

    def answered_since(self, moment: float) -> list[dict | str]:
        return [body for started, _, body, _ in list(self.outcomes) if started > moment]


@contextlib.contextmanager
def load(follower: Follower, clients: int) -> Iterator[Load]:
    running = Load(follower.url, follower.headers)
    threads = [threading.Thread(target=running.call, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        for thread in threads:
            thread.join(timeout=90)


def test_a_new_champion_bento_is_swapped_in_under_load_without_one_failed_request(
    served_platform: ServedPlatform,
) -> None:
    current = current_bento(served_platform.settings.bentoml_home)
    earlier = pointer_of(another_bento(served_platform), current)
    with following(served_platform) as follower:
        assert wait_until(lambda: serves(follower, current), 300), "the champion is served"
        first = follower.wait_for_rollout(current["bento"], SWITCHED, follower.since, 10)
        seen = len(follower.rollouts())
        with load(follower, clients=4) as running:
            assert wait_until(lambda: len(running.outcomes) >= 20, 60), "the load is running"
            record_current_bento(served_platform.settings.bentoml_home, earlier)
            switched = follower.wait_for_rollout(earlier["bento"], SWITCHED, seen, 300)
            switched_at = time.monotonic()
            assert wait_until(lambda: len(running.answered_since(switched_at)) >= 20, 60)
        failed = [(status, body) for _, status, body, _ in running.outcomes if status != 200]
        assert not failed, f"{len(failed)} of {len(running.outcomes)} requests failed: {failed[:5]}"
        assert all(echoed for *_, echoed in running.outcomes), "every X-Request-ID came back"
        answers = [body for _, _, body, _ in running.outcomes]
        assert all(answered_by(current, a) or answered_by(earlier, a) for a in answers)
        assert any(answered_by(current, a) for a in answers), "the old Bento answered first"
        after = running.answered_since(switched_at)
        assert all(answered_by(earlier, a) for a in after), "after the switch, only the new one"
        assert switched["previous"] == current["bento"] and switched["port"] != first["port"]
        assert follower.upstream_port() == switched["port"]
        old_url = f"http://127.0.0.1:{first['port']}"
        assert wait_until(lambda: classify_once(old_url, follower.headers) is None, 120), (
            "the old server stopped"
        )


@contextlib.contextmanager
def tampered_copy(platform: ServedPlatform, pointer: dict) -> Iterator[dict]:
    """A copy of the current Bento whose request classifier is a copy of its BentoML model with
    one artifact file changed on disk (as a bad disk or a hand edit would); the shared store's
    own Bentos and models are left alone, and the copies removed on exit."""
    home = platform.settings.bentoml_home
    mark = f"tampered{uuid.uuid4().hex[:8]}"
    name, version = str(pointer["models"][REQUEST_CLASSIFIER]).split(":")
    model_dir = home / "models" / name / mark
    shutil.copytree(home / "models" / name / version, model_dir)
    bento_dir = Path(str(pointer["path"])).with_name(f"{Path(str(pointer['path'])).name}-{mark}")
    try:
        described = yaml.safe_load((model_dir / "model.yaml").read_text(encoding="utf-8"))
        described["version"] = mark
        (model_dir / "model.yaml").write_text(yaml.safe_dump(described), encoding="utf-8")
        artifact = next(p for p in sorted((model_dir / "mlflow_model").rglob("*.json")))
        artifact.write_text(artifact.read_text(encoding="utf-8") + " ", encoding="utf-8")
        shutil.copytree(Path(str(pointer["path"])), bento_dir)
        described = yaml.safe_load((bento_dir / "bento.yaml").read_text(encoding="utf-8"))
        described["version"] = bento_dir.name
        described["args"][REQUEST_CLASSIFIER] = f"{name}:{mark}"
        (bento_dir / "bento.yaml").write_text(yaml.safe_dump(described), encoding="utf-8")
        yield {
            **pointer,
            "bento": f"{described['name']}:{bento_dir.name}",
            "path": str(bento_dir),
            "models": {**pointer["models"], REQUEST_CLASSIFIER: f"{name}:{mark}"},
        }
    finally:
        shutil.rmtree(bento_dir, ignore_errors=True)
        shutil.rmtree(model_dir, ignore_errors=True)


def test_a_bento_that_cannot_start_or_answers_wrongly_never_takes_traffic_and_says_why(
    served_platform: ServedPlatform,
) -> None:
    home = served_platform.settings.bentoml_home
    current = current_bento(home)
    wrong = pointer_of(another_bento(served_platform), current)
    wrong["versions"] = {**wrong["versions"], REQUEST_CLASSIFIER: "999"}
    with following(served_platform) as follower, tampered_copy(served_platform, current) as bad:
        assert wait_until(lambda: serves(follower, current), 300), "the champion is served"
        serving_port = follower.upstream_port()
        seen = len(follower.rollouts())
        with load(follower, clients=2) as running:
            record_current_bento(home, bad)
            refused = follower.wait_for_rollout(bad["bento"], FAILED_TO_START, seen, 300)
            record_current_bento(home, wrong)
            smoked = follower.wait_for_rollout(wrong["bento"], FAILED_SMOKE_TEST, seen, 300)
            failed_at = time.monotonic()
            # no hot loop: over the next 20 poll periods the failed Bento is not tried again
            assert wait_until(
                lambda: (
                    time.monotonic() > failed_at + 10
                    and len(running.answered_since(failed_at)) >= 20
                ),
                60,
            )
        assert "the stored artifact was changed" in refused["reason"], refused
        assert "model_version is '1'" in smoked["reason"], smoked
        assert "expected '999'" in smoked["reason"], smoked
        tries = [r for r in follower.rollouts()[seen:] if r["bento"] == wrong["bento"]]
        assert len(tries) == 1, f"the Bento that failed was tried again: {tries}"
        statuses = {status for _, status, _, _ in running.outcomes}
        assert statuses == {200}, [o for o in running.outcomes if o[1] != 200][:5]
        assert all(answered_by(current, body) for _, _, body, _ in running.outcomes)
        assert follower.upstream_port() == serving_port, "the front door never switched"

    resources = {"data_home": DataHome(path=str(served_platform.settings.data_home))}
    result = serving_rollout_sensor(build_sensor_context(resources=resources))
    assert isinstance(result, SensorResult)
    observed = {
        (e.metadata["bento"].value, e.metadata["outcome"].value): e.metadata["reason"].value
        for e in result.asset_events
    }
    assert all(e.asset_key == AssetKey("champion_bento") for e in result.asset_events)
    assert observed[(bad["bento"], FAILED_TO_START)] == refused["reason"]
    assert observed[(wrong["bento"], FAILED_SMOKE_TEST)] == smoked["reason"]
    again = serving_rollout_sensor(build_sensor_context(cursor=result.cursor, resources=resources))
    assert isinstance(again, SkipReason), "the cursor moved past what was observed"


def _bentoml_serve_on(port: int) -> psutil.Process:
    """The `bentoml serve` main process listening on `port` (started by the supervisor)."""
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        launched = any(
            part.endswith("bentoml") and rest[:1] == ["serve"]
            for part, rest in ((part, command[i + 1 :]) for i, part in enumerate(command))
        )
        if launched and command[-1] == str(port):
            return process
    raise AssertionError(f"no bentoml serve on port {port}")


def test_a_killed_bentoml_serve_is_restarted_and_the_front_door_answers_within_60_s(
    served_platform: ServedPlatform,
) -> None:
    current = current_bento(served_platform.settings.bentoml_home)
    supervisor_log = served_platform.settings.data_home / "logs" / "serving-supervisor.log"
    with following(served_platform) as follower:
        assert wait_until(lambda: serves(follower, current), 300), "the champion is served"
        seen = len(follower.rollouts())
        killed_port = follower.upstream_port()
        killed = _bentoml_serve_on(killed_port)
        orphans = killed.children(recursive=True)
        assert orphans, "the server has workers"
        killed.send_signal(signal.SIGKILL)  # its workers live on in sessions of their own
        killed_at = time.monotonic()

        def restarted() -> bool:
            port = follower.upstream_port()
            if port in (None, killed_port):
                return False
            try:
                fresh = _bentoml_serve_on(port)
            except AssertionError:
                return False
            return fresh.pid != killed.pid and serves(follower, current)

        assert wait_until(restarted, 60), "the front door did not answer within 60 s"
        back_after = time.monotonic() - killed_at
        left = [worker for worker in orphans if is_alive(worker)]
        assert not left, f"the old workers were not stopped: {[w.cmdline() for w in left]}"
        said = supervisor_log.read_text(encoding="utf-8")
        assert f"exited with {-signal.SIGKILL}: restarting it" in said, said[-500:]
        again = follower.wait_for_rollout(current["bento"], RESTARTED, seen, 10)
        assert again["port"] == follower.upstream_port() and again["previous"] == current["bento"]
        print(f"answering again {back_after:.0f} s after the SIGKILL")
