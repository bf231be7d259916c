"""A staged release for real: the champion Bento serves the challenger beside the champion;
the canary share is read by the running workers from the release state (no restart), sticky by
request id; shadow answers are logged, never returned; the release job and sensor walk the
challenger and roll it back on a breach; the pin job is audited; overload is shed with 429s.

Runs after test_serving.py (it withdraws the shared platform's challenger at the end)."""

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import psutil
import pytest
import requests
from dagster import AssetKey, build_sensor_context

from assets.resources import build_resources
from assets.serving.release import release_sensor
from ml.lifecycle.aliases import CHALLENGER
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.lifecycle.release import (
    CANARY,
    OFF,
    OUTCOME_SCHEMA,
    SHADOW,
    ReleasePolicy,
    read_release_states,
    start_release,
    write_release_state,
)
from ml.monitoring.prediction_log import PredictionLogWriter, read_log, read_predictions
from orchestration.pipeline import execute_quietly
from orchestration.serving import BentoServer, start_bento_server
from serving.api_keys import ADMIN
from tests.conftest import ServedPlatform, free_port, serve_for_tests


def registry_of(platform: ServedPlatform) -> Registry:
    return Registry(platform.settings.tracking_uri, platform.settings.artifact_root)


def classify(server: BentoServer, request_id: str, text: str = "where is my card?") -> dict:
    answer = requests.post(
        f"{server.url}/classify",
        json={"texts": text},
        headers={"X-Request-ID": request_id, **server.headers()},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == request_id
    return answer.json()[0]


def served_versions(bento: str) -> tuple[str, str | None]:
    """The champion and challenger versions of request_classifier a Bento serves (`rc3c4-…`)."""
    served = re.match(r"rc(\d+)(?:c(\d+))?-", bento.split(":")[1])
    return served.group(1), served.group(2)


def challenger_of(platform: ServedPlatform) -> tuple[str, str]:
    """The champion and challenger versions the session's Bento serves."""
    champion, challenger = served_versions(platform.bento)
    assert challenger, f"the fixture's Bento should serve a challenger: {platform.bento}"
    return champion, challenger


@dataclass(frozen=True)
class Released:
    """A Bento that serves the registry's champion and challenger now, and its server."""

    server: BentoServer
    champion: str
    challenger: str


@pytest.fixture(scope="module")
def released(served_platform: ServedPlatform, bento_server: BentoServer) -> Iterator[Released]:
    """The release job releases the registry's challenger: the session's Bento when it still
    carries it, else (an earlier test retrained or rolled back) champion_bento packaged anew
    and served for this module."""
    registry = registry_of(served_platform)
    champion = registry.champion(REQUEST_CLASSIFIER).version
    challenger = registry.by_alias(REQUEST_CLASSIFIER, CHALLENGER)
    assert challenger is not None, "the shared platform should have a challenger"
    if served_versions(served_platform.bento) == (champion, challenger.version):
        yield Released(bento_server, champion, challenger.version)
        return
    defs, instance = served_platform.defs, served_platform.instance
    assert execute_quietly(defs, instance, "champion_bento_job").success
    bento = (
        instance.get_latest_materialization_event(AssetKey("champion_bento"))
        .asset_materialization.metadata["bento"]
        .value
    )
    assert served_versions(bento) == (champion, challenger.version), bento
    server = serve_for_tests(served_platform, bento, "bentoml-serve-release.log")
    try:
        yield Released(server, champion, challenger.version)
    finally:
        server.stop()


@pytest.fixture
def state_path(served_platform: ServedPlatform):
    path = served_platform.settings.release_state_path
    yield path
    path.unlink(missing_ok=True)  # the next test starts without a release


def wait_for(condition, seconds: float = 10) -> bool:
    deadline = datetime.now(UTC) + timedelta(seconds=seconds)
    while datetime.now(UTC) < deadline:
        if condition():
            return True
    return False


def test_a_30_percent_canary_is_sticky_by_request_id_and_changes_without_a_restart(
    served_platform: ServedPlatform, bento_server: BentoServer, state_path: Path
) -> None:
    champion, challenger = challenger_of(served_platform)
    state = start_release(REQUEST_CLASSIFIER, challenger, champion, ReleasePolicy(), "test")
    write_release_state(
        state_path, state.moved_to("canary", "test", stage=CANARY, step=1, canary_share=0.3)
    )
    time.sleep(1.0)  # a worker that read the state just before re-reads it within 0.5 s
    workers = psutil.Process(bento_server.process.pid).children(recursive=True)
    ids = [f"client-{uuid.uuid4().hex}" for _ in range(1000)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: classify(bento_server, i), ids))
    variants = {i: a["variant"] for i, a in zip(ids, answers, strict=True)}
    share = sum(v == "challenger" for v in variants.values()) / len(ids)
    assert 0.26 <= share <= 0.34, f"challenger share {share:.3f}"
    for answer in answers:
        expected = challenger if answer["variant"] == "challenger" else champion
        assert answer["model_version"] == expected
    again = {i: classify(bento_server, i)["variant"] for i in ids[:100]}
    assert again == {i: variants[i] for i in ids[:100]}, "an id keeps its variant"

    write_release_state(
        state_path,
        read_release_states(state_path)[REQUEST_CLASSIFIER].moved_to(
            "to 0", "test", canary_share=0.0
        ),
    )
    canaried = [i for i in ids if variants[i] == "challenger"][:50]
    # Each worker reads the new state within half a second of its next request.
    assert wait_for(
        lambda: {classify(bento_server, i)["variant"] for i in canaried} == {"champion"}
    )
    assert psutil.Process(bento_server.process.pid).children(recursive=True) == workers, (
        "the share changed without a restart"
    )

    def logged_variants() -> set[str]:
        now = datetime.now(UTC)
        outcomes = read_log(
            served_platform.settings.request_log_dir,
            now - timedelta(hours=1),
            now + timedelta(seconds=1),
            OUTCOME_SCHEMA,
        )
        return set(outcomes.filter(pl.col("request_id").is_in(ids))["variant"])

    assert wait_for(lambda: logged_variants() == {"champion", "challenger"}), logged_variants()


def test_internal_challenger_routes_are_not_callable_from_outside(
    bento_server: BentoServer,
) -> None:
    answer = requests.post(
        f"{bento_server.url}/internal/classify-challenger",
        json={"texts": "hi"},
        headers=bento_server.headers(),
        timeout=30,
    )
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    published = requests.get(f"{bento_server.url}/docs.json", timeout=30).json()
    assert not [p for p in published["paths"] if p.startswith("/internal/")]


def test_only_an_admin_key_halts_a_release_and_the_halt_says_who_and_why(
    served_platform: ServedPlatform, bento_server: BentoServer, state_path: Path
) -> None:
    champion, challenger = challenger_of(served_platform)
    state = start_release(REQUEST_CLASSIFIER, challenger, champion, ReleasePolicy(), "test")
    write_release_state(
        state_path, state.moved_to("all", "test", stage=CANARY, step=1, canary_share=1.0)
    )
    assert wait_for(lambda: classify(bento_server, uuid.uuid4().hex)["variant"] == "challenger")
    halt_url = f"{bento_server.url}/admin/halt-release"
    halt = {"model_name": REQUEST_CLASSIFIER, "reason": "on call: customers complain"}

    without = requests.post(halt_url, json=halt, timeout=30)
    application = requests.post(halt_url, json=halt, headers=bento_server.headers(), timeout=30)
    assert without.status_code == 401 and without.json()["error"] == "unauthorized"
    assert application.status_code == 403 and application.json()["error"] == "forbidden"
    assert "needs an admin key" in application.json()["message"]
    assert read_release_states(state_path)[REQUEST_CLASSIFIER].canary_share == 1.0, "untouched"

    admin = bento_server.headers(ADMIN)
    halted = requests.post(halt_url, json=halt, headers=admin, timeout=30)
    assert halted.status_code == 200, halted.text
    assert halted.json()["stage"] == "off" and halted.json()["canary_share"] == 0
    assert halted.json()["updated_by"] == "serving admin platform-admin"
    assert wait_for(
        lambda: {classify(bento_server, f"after-{i}")["variant"] for i in range(20)} == {"champion"}
    ), "the challenger still answered after the halt"
    listed = requests.post(
        f"{bento_server.url}/admin/release-states",
        json={"model_name": REQUEST_CLASSIFIER},
        headers=admin,
        timeout=30,
    )
    assert listed.status_code == 200, listed.text
    assert [s["reason"] for s in listed.json()] == ["halted: on call: customers complain"]
    again = requests.post(halt_url, json=halt, headers=admin, timeout=30)
    assert again.status_code == 400 and again.json()["fields"] == ["model_name"], again.text


def run_release_job(platform: ServedPlatform):
    return execute_quietly(platform.defs, platform.instance, "release_job")


def test_the_release_job_shadows_then_advances_a_good_challenger_one_step(
    served_platform: ServedPlatform, released: Released, state_path: Path
) -> None:
    challenger = released.challenger
    assert run_release_job(served_platform).success
    state = read_release_states(state_path)[REQUEST_CLASSIFIER]
    assert (state.stage, state.challenger_version, state.canary_share) == (SHADOW, challenger, 0)
    started = state.started
    ids = [uuid.uuid4().hex for _ in range(400)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: classify(released.server, i), ids))
    assert {a["variant"] for a in answers} == {"champion"}, "shadow answers are never returned"

    def shadowed():
        logged = read_predictions(
            served_platform.settings.prediction_log_dir,
            started,
            datetime.now(UTC) + timedelta(seconds=1),
            include_shadow=True,
        )
        return logged.filter(logged["variant"] == "shadow")

    assert wait_for(lambda: shadowed().height >= 50, seconds=30), shadowed().height
    assert set(shadowed()["model_version"]) == {challenger}
    assert run_release_job(served_platform).success
    state = read_release_states(state_path)[REQUEST_CLASSIFIER]
    assert (state.stage, state.step, state.canary_share) == (CANARY, 1, 0.05), state.reason


def test_an_erring_challenger_is_rolled_back_by_the_sensor_once_with_the_reason(
    served_platform: ServedPlatform, released: Released, state_path: Path
) -> None:
    """Last: it takes the challenger alias away. The evidence is written as the service's
    router writes it: the challenger's canary answered 5xx."""
    champion, challenger = released.champion, released.challenger
    settings = served_platform.settings
    state = start_release(REQUEST_CLASSIFIER, challenger, champion, ReleasePolicy(), "test")
    write_release_state(
        state_path, state.moved_to("canary", "test", stage=CANARY, step=1, canary_share=0.05)
    )
    writer = PredictionLogWriter(settings.request_log_dir, "injected-router")
    now = datetime.now(UTC) + timedelta(seconds=1)
    writer.log(
        {
            "request_id": uuid.uuid4().hex,
            "served_at": now.isoformat(),
            "endpoint": "classify",
            "model_name": REQUEST_CLASSIFIER,
            "variant": variant,
            "model_version": challenger if variant == "challenger" else champion,
            "status": 503 if variant == "challenger" and i % 2 else 200,
            "latency_ms": 20.0,
        }
        for i, variant in enumerate(["champion"] * 200 + ["challenger"] * 30)
    )
    writer.close()
    resources = build_resources(settings)
    context = build_sensor_context(instance=served_platform.instance, resources=resources)
    first = release_sensor(context)
    assert len(first) == 1 and first[0].run_key.endswith(":canary:1:rollback"), first
    assert release_sensor(context)[0].run_key == first[0].run_key, "one key per step"
    assert run_release_job(served_platform).success
    state = read_release_states(state_path)[REQUEST_CLASSIFIER]
    assert (state.stage, state.canary_share) == (OFF, 0.0)
    assert "error rate" in state.reason
    registry = registry_of(served_platform)
    assert registry.by_alias(REQUEST_CLASSIFIER, CHALLENGER) is None
    withdrawn = registry.audit(REQUEST_CLASSIFIER)[-1]
    assert (withdrawn.action, withdrawn.version) == ("withdraw", challenger)
    assert "error rate" in withdrawn.why
    assert registry.version(REQUEST_CLASSIFIER, challenger).tags["withdraw_reason"]
    after = release_sensor(
        build_sensor_context(instance=served_platform.instance, resources=resources)
    )
    assert not isinstance(after, list) or not after, "nothing left to release"


def test_a_pin_moves_the_champion_with_the_actor_and_reason_in_the_audit_record(
    served_platform: ServedPlatform,
) -> None:
    registry = registry_of(served_platform)
    current = registry.champion(REQUEST_CLASSIFIER).version
    earlier = next(
        v.version
        for v in reversed(registry.versions(REQUEST_CLASSIFIER))
        if v.tags.get("role") == "baseline" and v.version != current
    )
    pin = {
        "model_name": REQUEST_CLASSIFIER,
        "version": earlier,
        "actor": "ana@example.com",
        "reason": "incident 42: pin the known-good version",
    }
    result = execute_quietly(
        served_platform.defs,
        served_platform.instance,
        "pin_champion_job",
        config={"ops": {"pin_champion": {"config": pin}}},
    )
    assert result.success
    assert registry.champion(REQUEST_CLASSIFIER).version == earlier
    entry = registry.audit(REQUEST_CLASSIFIER)[-1]
    assert (entry.action, entry.who, entry.why) == ("pin", "ana@example.com", pin["reason"])
    assert entry.moves["champion"] == (current, earlier) and entry.outcome == "done"
    back = execute_quietly(
        served_platform.defs,
        served_platform.instance,
        "pin_champion_job",
        config={"ops": {"pin_champion": {"config": {**pin, "version": current, "reason": "back"}}}},
    )
    assert back.success and registry.champion(REQUEST_CLASSIFIER).version == current


def test_overload_is_shed_with_429_and_no_5xx_no_dead_worker_bounded_memory(
    served_platform: ServedPlatform,
) -> None:
    server = start_bento_server(
        served_platform.settings,
        served_platform.bento,
        free_port(),
        served_platform.settings.data_home / "logs" / "bentoml-serve-overload.log",
        MLOPS_SERVING_WORKERS="1",
        MLOPS_SERVING_MAX_IN_FLIGHT_CLASSIFY="4",
    )
    try:
        workers = psutil.Process(server.process.pid).children(recursive=True)
        rss_before = sum(w.memory_info().rss for w in workers)
        body = {"texts": ["my card has not arrived yet, what should I do?"] * 32}

        def call(_: int) -> int:
            return requests.post(
                f"{server.url}/classify", json=body, headers=server.headers(), timeout=120
            ).status_code

        with ThreadPoolExecutor(max_workers=48) as pool:
            statuses = list(pool.map(call, range(400)))
        assert statuses.count(429) > 0, "nothing was shed"
        assert statuses.count(200) > 0
        assert not [s for s in statuses if s >= 500], sorted(set(statuses))
        after_load = requests.post(
            f"{server.url}/classify", json=body, headers=server.headers(), timeout=60
        )
        assert after_load.status_code == 200, "capacity comes back once the load is gone"
        alive = psutil.Process(server.process.pid).children(recursive=True)
        assert [w.pid for w in alive] == [w.pid for w in workers], "no worker died"
        rss_after = sum(w.memory_info().rss for w in alive)
        assert rss_after < rss_before + 300 * 2**20, (rss_before, rss_after)
    finally:
        server.stop()
