"""The champions served for real: `bentoml serve` of the Bento that `champion_bento` built,
called over HTTP. Good answers, every bad input a 4xx naming the field, concurrent requests
answered as if alone, every answer logged, a worker killed mid-load, a rollback's Bento (the
supervisor that rolls Bentos out behind the front door: test_front_door.py)."""

import itertools
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import requests
from dagster import AssetKey

from assets.resources import BentoStore
from ml.lifecycle.registered_models import DEMAND_FORECASTER, REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.monitoring.prediction_log import log_file_content, log_files, read_predictions
from ml.requests.taxonomy import load_taxonomy
from ml.synthetic.requests import generate_requests
from orchestration.pipeline import execute_quietly
from orchestration.serving import BentoServer, is_alive, start_bento_server
from serving.package import current_bento
from tests.conftest import ServedPlatform, free_port, logged_once_flushed


def post(server: BentoServer, route: str, body: object, timeout: float = 60) -> requests.Response:
    return requests.post(
        f"{server.url}/{route}", json=body, headers=server.headers(), timeout=timeout
    )


def texts(count: int, seed: int = 21) -> list[str]:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return generate_requests(count, seed=seed, start=moment, end=moment)["text"].to_list()


def registry_of(platform: ServedPlatform) -> Registry:
    return Registry(platform.settings.tracking_uri, platform.settings.artifact_root)


def metric_total(metrics: str, name: str) -> float:
    """A Prometheus metric summed over its label sets."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name)
    )


def a_series(platform: ServedPlatform) -> dict[str, str]:
    model = registry_of(platform).load(
        DEMAND_FORECASTER, registry_of(platform).champion(DEMAND_FORECASTER).version
    )
    store, item = model.unwrap_python_model().forecaster.keys[0]
    return {"store": store, "item": item}


def test_classify_answers_one_text_or_a_list_with_the_top_k(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    served = re.match(r"rc(\d+)(?:c\d+)?-", served_platform.bento.split(":")[1]).group(1)
    intents = set(load_taxonomy(served_platform.settings.intent_taxonomy).intents)
    one = post(bento_server, "classify", {"texts": "my card has not arrived yet"})
    assert one.status_code == 200, one.text
    many = post(bento_server, "classify", {"texts": texts(3)})
    assert many.status_code == 200, many.text
    assert len(one.json()) == 1 and len(many.json()) == 3
    for answer in one.json() + many.json():
        assert answer["intent"] in intents
        assert answer["model_version"] == served
        scores = [s["probability"] for s in answer["top_k"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert answer["top_k"][0]["intent"] == answer["intent"]
        assert answer["confidence"] == pytest.approx(scores[0])
        assert 0.0 < answer["confidence"] <= 1.0


def test_forecast_gives_quantiles_and_says_what_it_assumed(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    series = a_series(served_platform)
    plain = post(bento_server, "forecast", {"series": [series], "horizon": 7})
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["horizon"] == 7 and len(body["forecasts"]) == 7
    assert "price: last known" in body["assumed"][0]
    for period in body["forecasts"]:
        assert 0 <= period["p10"] <= period["p50"] <= period["p90"]
    days = [period["period_start"] for period in body["forecasts"]]
    planned = [
        {**series, "period_start": day, "price": 1.0, "deal": 1.0, "feature": 1.0} for day in days
    ]
    promoted = post(
        bento_server, "forecast", {"series": [series], "horizon": 7, "covariates": planned}
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["assumed"] == ["none"]


def test_forecast_at_item_level_sums_every_store_of_the_item(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    item = a_series(served_platform)["item"]
    registry = registry_of(served_platform)
    fitted = (
        registry.load(DEMAND_FORECASTER, registry.champion(DEMAND_FORECASTER).version)
        .unwrap_python_model()
        .forecaster
    )
    stores = sorted(s for s, i in fitted.keys if i == item)
    answer = post(
        bento_server, "forecast", {"series": [{"item": item}], "horizon": 5, "level": "item"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["level"] == "item"
    assert sorted({f["store"] for f in body["forecasts"]}) == stores
    assert len(body["totals"]) == 5
    for total in body["totals"]:
        same_period = [f for f in body["forecasts"] if f["period_start"] == total["period_start"]]
        assert total["item"] == item and total["stores"] == len(stores)
        assert total["p50"] == pytest.approx(sum(f["p50"] for f in same_period))
        assert 0 <= total["p10"] <= total["p50"] <= total["p90"]
    one_store = post(bento_server, "forecast", {"series": [{"store": stores[0], "item": item}]})
    assert one_store.json()["totals"] == [] and one_store.json()["level"] == "series"


CLASSIFY_BAD = [
    ({"texts": ""}, "texts"),
    ({"texts": ["fine", "   "]}, "texts"),
    ({"texts": "x" * 1001}, "texts"),
    ({"texts": ["card"] * 65}, "texts"),
    ({"texts": 5}, "texts"),
    ({"texts": [["nested"]]}, "texts"),
    ({}, "texts"),
]


@pytest.mark.parametrize(("body", "field"), CLASSIFY_BAD)
def test_bad_classify_input_is_a_400_naming_the_field(
    bento_server: BentoServer, body: object, field: str
) -> None:
    answer = post(bento_server, "classify", body)
    assert answer.status_code == 400, answer.text
    assert field in answer.text


def forecast_bad(series: dict[str, str]) -> list[tuple[dict, str]]:
    day = "2025-06-01"
    return [
        ({"series": [{"store": "nowhere", "item": series["item"]}]}, "series"),
        ({"series": []}, "series"),
        ({"series": [{"store": series["store"]}]}, "item"),
        ({"series": [{"item": "no such item"}]}, "series"),
        ({"series": [series], "level": "region"}, "level"),
        ({"series": [series], "horizon": 0}, "horizon"),
        ({"series": [series], "horizon": 10_000}, "horizon"),
        ({"series": [series], "horizon": "soon"}, "horizon"),
        (
            {
                "series": [series],
                "horizon": 3,
                "covariates": [{**series, "period_start": day, "price": 2.0}],
            },
            "covariates",
        ),
        (
            {"series": [series], "covariates": [{**series, "period_start": day, "price": "cheap"}]},
            "price",
        ),
        (
            {"series": [series], "covariates": [{**series, "period_start": "someday"}]},
            "period_start",
        ),
        (
            {
                "series": [series],
                "covariates": [{"store": "x", "item": "y", "period_start": day, "deal": 1}],
            },
            "covariates",
        ),
    ]


def test_bad_forecast_input_is_a_400_naming_the_field_and_no_worker_dies(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    for body, field in forecast_bad(a_series(served_platform)):
        answer = post(bento_server, "forecast", body)
        assert answer.status_code == 400, f"{body}: {answer.status_code} {answer.text}"
        assert field in answer.text, f"{body}: {answer.text}"
    assert requests.get(f"{bento_server.url}/readyz", timeout=10).status_code == 200
    assert post(bento_server, "classify", {"texts": "still there?"}).status_code == 200


def test_concurrent_requests_are_batched_and_answered_as_if_alone(
    bento_server: BentoServer,
) -> None:
    sample = texts(48, seed=33)
    alone = [post(bento_server, "classify", {"texts": text}).json()[0] for text in sample]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(lambda t: post(bento_server, "classify", {"texts": [t]}), sample))
    for single, answer in zip(alone, together, strict=True):
        assert answer.status_code == 200, answer.text
        batched = answer.json()[0]
        assert batched["intent"] == single["intent"]
        for a, b in zip(single["top_k"], batched["top_k"], strict=True):
            assert a["intent"] == b["intent"]
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    metrics = requests.get(f"{bento_server.url}/metrics", timeout=10).text
    assert metric_total(metrics, "mlops_batch_items_sum") > metric_total(
        metrics, "mlops_batch_items_count"
    ), "adaptive batching never merged two requests"


def test_every_answer_is_logged_with_its_model_and_version(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    answers = post(bento_server, "classify", {"texts": texts(5, seed=44)}).json()
    wanted = {a["request_id"] for a in answers}
    mine = logged_once_flushed(served_platform, wanted)
    assert mine.height == 5
    assert set(mine["model_name"]) == {REQUEST_CLASSIFIER}
    assert set(mine["model_version"]) == {answers[0]["model_version"]}
    assert mine["text"].null_count() == 0 and mine["confidence"].min() > 0
    metrics = requests.get(f"{bento_server.url}/metrics", timeout=10).text
    assert f'model_version="{answers[0]["model_version"]}"' in metrics
    assert "mlops_predictions_total" in metrics


def test_personal_data_is_answered_on_but_never_logged(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    text = (
        "my card 4111 1111 1111 1111 was stolen, call me on +1 415 555 0132 or anna.k@example.com"
    )
    answer = post(bento_server, "classify", {"texts": text})
    assert answer.status_code == 200, answer.text
    request_id = answer.json()[0]["request_id"]
    now = datetime.now(UTC)
    mine = logged_once_flushed(served_platform, {request_id})
    assert mine.height == 1
    assert mine["text"][0] == (
        "my card <CREDIT_CARD> was stolen, call me on <PHONE_NUMBER> or <EMAIL_ADDRESS>"
    )
    hour = (now - timedelta(hours=1), now)
    files = [Path(uri) for uri in log_files(served_platform.settings.prediction_log_dir, *hour)]
    assert files and all(p.name.endswith(".jsonl.enc") for p in files), "encrypted at rest"
    raw = b"".join(p.read_bytes() for p in files)
    kept = b"".join(log_file_content(p) for p in files)
    assert b"request_id" not in raw, "no plaintext on disk"
    for secret in (b"4111 1111", b"555 0132", b"anna.k@"):
        assert secret not in kept, f"{secret!r} reached the prediction log"


def _workers(server: BentoServer) -> list[psutil.Process]:
    """The live worker processes (a killed one lingers as a zombie until reaped)."""
    found = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if is_alive(child) and "_bentoml_impl.worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_a_worker_killed_mid_load_corrupts_no_log_and_the_service_recovers(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    workers = _workers(bento_server)
    assert len(workers) == 2, [w.cmdline() for w in workers]
    sample = texts(64, seed=55)
    stop = threading.Event()
    outcomes: list[tuple[float, int]] = []  # (time, status); -1: connection failed

    def keep_calling(offset: int) -> None:
        for i in itertools.count(offset):
            if stop.is_set():
                return
            text = sample[i % len(sample)]
            try:
                status = post(bento_server, "classify", {"texts": [text]}, timeout=30).status_code
            except requests.RequestException:
                status = -1
            outcomes.append((time.monotonic(), status))

    def wait_for(condition, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)

    with ThreadPoolExecutor(max_workers=8) as pool:
        clients = [pool.submit(keep_calling, 8 * n) for n in range(8)]
        wait_for(lambda: len(outcomes) >= 16)  # the load is running
        killed_at = time.monotonic()
        workers[0].send_signal(signal.SIGKILL)
        wait_for(lambda: sum(1 for m, s in outcomes if m > killed_at + 0.5 and s == 200) >= 16)
        stop.set()
        for client in clients:
            client.result()
    before = [status for moment, status in outcomes if moment < killed_at]
    after = [status for moment, status in outcomes if moment > killed_at + 0.5]
    assert before and set(before) == {200}, "the load was running when the worker died"
    assert after.count(200) > 0, "the other worker kept answering"
    deadline = time.monotonic() + 120
    while True:
        alive = _workers(bento_server)
        recovered = len(alive) == 2 and all(
            post(bento_server, "classify", {"texts": "card arrival"}).status_code == 200
            for _ in range(6)
        )
        if recovered or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert recovered, "the service did not come back to two answering workers"
    now = datetime.now(UTC)
    hour = (now - timedelta(hours=2), now + timedelta(hours=1))
    for path in log_files(served_platform.settings.prediction_log_dir, *hour):
        text = log_file_content(path).decode("utf-8")
        assert text.endswith("\n"), f"{path} is cut off"
        for line in text.splitlines():
            json.loads(line)
    logged = read_predictions(served_platform.settings.prediction_log_dir, *hour)
    assert logged["request_id"].n_unique() == logged.height


@pytest.fixture(scope="module")
def transformer_server(served_platform: ServedPlatform) -> Iterator[BentoServer]:
    """A Bento of a transformer version (not the champion: on CPU the baseline wins), so that
    batched answers are checked where padding could change them."""
    registry = registry_of(served_platform)
    version = next(
        v.version
        for v in reversed(registry.versions(REQUEST_CLASSIFIER))
        if v.tags["kind"] == "transformer"
    )
    packaged = BentoStore(home=str(served_platform.settings.bentoml_home)).package(
        served_platform.settings.tracking_uri, {REQUEST_CLASSIFIER: version}
    )
    server = start_bento_server(
        served_platform.settings,
        str(packaged["bento"]),
        free_port(),
        served_platform.settings.data_home / "logs" / "bentoml-transformer.log",
    )
    try:
        yield server
    finally:
        server.stop()


def test_a_transformer_answers_batched_requests_as_it_answers_each_alone(
    transformer_server: BentoServer,
) -> None:
    sample = [*texts(24, seed=66), "card", "where is the money I sent to my landlord last week"]
    alone = [post(transformer_server, "classify", {"texts": text}).json()[0] for text in sample]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(
            pool.map(lambda t: post(transformer_server, "classify", {"texts": [t]}), sample)
        )
    for single, answer in zip(alone, together, strict=True):
        batched = answer.json()[0]
        assert batched["intent"] == single["intent"]
        for a, b in zip(single["top_k"], batched["top_k"], strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    metrics = requests.get(f"{transformer_server.url}/metrics", timeout=10).text
    assert metric_total(metrics, "mlops_batch_items_sum") > metric_total(
        metrics, "mlops_batch_items_count"
    ), "adaptive batching never merged two requests"


def test_a_server_started_beside_the_serving_one_leaves_its_metrics_whole(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    """Each rollout starts the next Bento beside the one serving, and `bentoml serve` empties
    its Prometheus folder as it starts: each server has a BENTOML_HOME of its own."""

    def predictions(server: BentoServer) -> float:
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        return metric_total(metrics, "mlops_predictions_total")

    assert post(bento_server, "classify", {"texts": texts(3, seed=77)}).status_code == 200
    before = predictions(bento_server)
    assert before >= 3
    beside = start_bento_server(
        served_platform.settings,
        bento_server.bento,
        free_port(),
        served_platform.settings.data_home / "logs" / "bentoml-beside.log",
    )
    try:
        assert post(beside, "classify", {"texts": "card"}).status_code == 200
        assert predictions(beside) >= 1
        assert predictions(bento_server) >= before, "starting a server zeroed the other's"
        assert beside.home != bento_server.home
    finally:
        beside.stop()
    assert not beside.home.exists()
    assert predictions(bento_server) >= before


def test_a_bento_that_fails_to_start_leaves_no_server_home(
    served_platform: ServedPlatform,
) -> None:
    port = free_port()
    with pytest.raises(RuntimeError, match="mlops_platform:no-such-version"):
        start_bento_server(
            served_platform.settings,
            "mlops_platform:no-such-version",
            port,
            served_platform.settings.data_home / "logs" / "bentoml-missing.log",
        )
    assert not (served_platform.settings.bentoml_home / "servers" / str(port)).exists()


def test_a_rollback_serves_the_previous_champions_bento_again(
    served_platform: ServedPlatform,
) -> None:
    """Last in this module: it moves the request classifier's champion back."""
    instance, defs = served_platform.instance, served_platform.defs
    before = current_bento(served_platform.settings.bentoml_home)["bento"]
    history = registry_of(served_platform).champion_history(REQUEST_CLASSIFIER)
    assert len(history) >= 2, f"the fixture should have promoted twice: {history}"
    rollback = execute_quietly(
        defs,
        instance,
        "rollback_champion_job",
        config={"ops": {"rollback_champion": {"config": {"model_name": REQUEST_CLASSIFIER}}}},
    )
    assert rollback.success
    store = served_platform.settings.bentoml_home / "bentos" / "mlops_platform"
    packaged_before = {path.name for path in store.iterdir() if path.is_dir()}
    assert execute_quietly(defs, instance, "champion_bento_job").success
    metadata = instance.get_latest_materialization_event(
        AssetKey("champion_bento")
    ).asset_materialization.metadata
    assert metadata["bento"].value != before
    assert re.match(rf"rc{history[-2]}(c\d+)?-", metadata["bento"].value.split(":")[1])
    # The earlier champions' Bento again, unless the challenger beside them changed since.
    again = metadata["bento"].value.split(":")[1] in packaged_before
    assert metadata["action"].value.startswith("reused" if again else "built")
    assert current_bento(served_platform.settings.bentoml_home)["bento"] == metadata["bento"].value
