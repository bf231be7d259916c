"""The HTTP contract holds for any client: a property-based fuzz run (schemathesis, a client
nobody here wrote) against `bentoml serve` of the champion Bento finds nothing; malformed
bodies are refused before parsing; every error has the one shape the published OpenAPI
document declares; a client's mistake is a warning line, never an error with a traceback."""

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
import requests
from openapi_spec_validator import validate as validate_openapi

from ml.monitoring.prediction_log import read_predictions
from ml.settings import environment_with, executable
from orchestration.serving import BentoServer
from tests.conftest import ServedPlatform

SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
FUZZ_SEED = 20261202
FUZZ_EXAMPLES = 40
"""Cases per operation and phase; with six operations the run generates a few hundred."""


@pytest.fixture(scope="module")
def published(bento_server: BentoServer) -> dict:
    answer = requests.get(f"{bento_server.url}/docs.json", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def error_schema(document: dict, path: str, status: int) -> dict:
    """The schema `document` declares for `status` on POST `path`, with its components, ready
    for a JSON Schema validator."""
    response = document["paths"][path]["post"]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def assert_published_error(document: dict, path: str, answer: requests.Response, status: int):
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    jsonschema.validate(body, error_schema(document, path, status))
    assert body["request_id"] == answer.headers["x-request-id"]
    return body


def test_a_fuzz_run_of_every_endpoint_finds_no_failure(
    bento_server: BentoServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    run = subprocess.run(
        [
            executable("st"),
            "--config-file",
            str(SCHEMATHESIS_CONFIG),
            "run",
            f"{bento_server.url}/docs.json",
            "--seed",
            str(FUZZ_SEED),
            "--max-examples",
            str(FUZZ_EXAMPLES),
            # One worker: CPython 3.11's AST recursion counter is shared between threads, and
            # two hypothesis workers compiling at once fail with "AST constructor recursion
            # depth mismatch" (a SystemError inside the fuzzer, not a finding about the API).
            "--workers",
            "1",
            "--request-timeout",
            "60",
            "--generation-database",
            "none",
            "--no-color",
            "--output-truncate",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=environment_with(MLOPS_FUZZ_API_KEY=bento_server.credentials.application),
        cwd=tmp_path,  # its report folder, if any, stays out of the checkout
    )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(f"\nschemathesis, {time.monotonic() - started:.0f} s:\n{summary}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert counted, summary
    assert counted.group(1) == counted.group(2)
    assert int(counted.group(1)) >= 150, "the fuzz run generated too few cases to mean much"
    assert "Tested: 9" in summary and "❌" not in summary


def test_the_published_document_is_valid_openapi_and_self_contained(published: dict) -> None:
    validate_openapi(published)
    references = re.findall(r'"\$ref": "([^"]+)"', json.dumps(published))
    assert references
    for reference in references:
        assert reference.startswith("#/components/schemas/"), reference
        assert (
            reference.removeprefix("#/components/schemas/") in published["components"]["schemas"]
        ), f"{reference} does not resolve"
    classify = published["components"]["schemas"]["classify__Input"]["properties"]["texts"]
    assert {branch["type"] for branch in classify["anyOf"]} == {"string", "array"}
    horizon = published["components"]["schemas"]["forecast__Input"]["properties"]["horizon"]
    assert {"type": "null"} in horizon["anyOf"]
    for path in ("/classify", "/forecast"):
        declared = set(published["paths"][path]["post"]["responses"])
        assert {"200", "400", "413", "415", "429", "500", "503"} <= declared


@pytest.mark.parametrize("path", ["/classify", "/forecast"])
def test_a_multipart_content_type_is_a_415_never_a_500(
    api: requests.Session, bento_server: BentoServer, published: dict, path: str
) -> None:
    """Reproducer: `curl -X POST -H 'Content-Type: multipart/form-data' -d '{"texts": ["0"]}'`
    was a 500."""
    answer = api.post(
        f"{bento_server.url}{path}",
        data=b'{"texts": ["0"]}',
        headers={"Content-Type": "multipart/form-data"},
        timeout=30,
    )
    body = assert_published_error(published, path, answer, 415)
    assert body["error"] == "unsupported_media_type" and body["fields"] == ["Content-Type"]
    assert "application/json" in body["message"]


@pytest.mark.parametrize(
    ("path", "request_body", "field"),
    [
        ("/classify", {"texts": {}}, "texts"),
        (
            "/forecast",
            {"series": [{"item": "0", "store": "0"}], "horizon": 1, "covariates": {}},
            "covariates",
        ),
    ],
)
def test_a_validation_error_has_the_published_error_shape(
    api: requests.Session,
    bento_server: BentoServer,
    published: dict,
    path: str,
    request_body: dict,
    field: str,
) -> None:
    """Reproducers: the 400 bodies carried `detail` as a list while the schema said string."""
    answer = api.post(f"{bento_server.url}{path}", json=request_body, timeout=30)
    body = assert_published_error(published, path, answer, 400)
    assert body["error"] == "invalid_input" and body["fields"] == [field]
    assert body["message"].startswith(f"{field}: ")


def new_log_lines(log_path: Path, offset: int, needle: str, timeout_s: float = 10) -> str:
    """What the server logged after `offset`, once a line containing `needle` is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_an_empty_text_is_a_warning_line_without_traceback_or_the_text(
    api: requests.Session, bento_server: BentoServer, published: dict
) -> None:
    """Reproducer: an empty text was logged at ERROR with a full traceback."""
    offset = bento_server.log_path.stat().st_size
    request_id = f"contract-{uuid.uuid4().hex[:8]}"
    secret = "alice.example@mail.test 4111111111111111"
    answer = api.post(
        f"{bento_server.url}/classify",
        json={"texts": ["", f"{secret} " * 30]},  # empty, and over the length limit
        headers={"X-Request-ID": request_id},
        timeout=30,
    )
    body = assert_published_error(published, "/classify", answer, 400)
    assert body["request_id"] == request_id and set(body["fields"]) == {"texts.0", "texts.1"}
    logged = new_log_lines(bento_server.log_path, offset, request_id)
    mine = [line for line in logged.splitlines() if request_id in line]
    assert len(mine) == 1, logged
    assert "[WARNING]" in mine[0] and "texts.0" in mine[0]
    assert "Traceback" not in logged and "[ERROR]" not in logged
    assert secret.split()[0] not in logged, "a client's text reached the service log"


def test_bodies_are_refused_before_parsing_with_the_right_status(
    api: requests.Session, bento_server: BentoServer, published: dict
) -> None:
    url = f"{bento_server.url}/classify"
    json_type = {"Content-Type": "application/json"}
    cases = [
        (api.post(url, data=b'{"texts": "', headers=json_type, timeout=30), 400, "body"),
        (api.post(url, data=b'["hello"]', headers=json_type, timeout=30), 400, "body"),
        (api.post(url, data=b"\xff\xfe{}", headers=json_type, timeout=30), 400, "body"),
        (
            api.post(
                url,
                data='{"texts": "hi"}'.encode("utf-16"),
                headers={"Content-Type": "application/json; charset=utf-16"},
                timeout=30,
            ),
            415,
            "Content-Type",
        ),
        (
            api.post(url, data=b"texts=hi", headers={"Content-Type": "text/plain"}, timeout=30),
            415,
            "Content-Type",
        ),
        (
            api.post(url, data=b" " * (3 * 1024 * 1024), headers=json_type, timeout=30),
            413,
            "body",
        ),
    ]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only while reading
        for _ in range(40):
            yield b" " * (128 * 1024)

    cases.append((api.post(url, data=chunks(), headers=json_type, timeout=30), 413, "body"))
    for answer, status, field in cases:
        body = assert_published_error(published, "/classify", answer, status)
        assert body["fields"] == [field], body
    assert api.post(url, json={"texts": "still answering?"}, timeout=30).status_code == 200


def test_unknown_routes_and_methods_answer_in_the_same_shape(
    api: requests.Session, bento_server: BentoServer
) -> None:
    missing = api.get(f"{bento_server.url}/no-such-route", timeout=30)
    wrong_method = api.get(f"{bento_server.url}/classify", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"
    for answer in (missing, wrong_method):
        assert set(answer.json()) == {"error", "message", "fields", "request_id"}


def test_a_broken_log_disk_fails_readyz_and_loses_no_record_once_repaired(
    api: requests.Session, served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    root = served_platform.settings.prediction_log_dir
    root.mkdir(parents=True, exist_ok=True)
    aside = root.with_name(f"{root.name}-aside")
    marker = f"disk-fault-{uuid.uuid4().hex[:8]}"
    root.rename(aside)
    root.write_text("a file where the prediction log folder should be")  # the fault
    try:
        for i in range(16):  # enough to reach both workers
            answer = api.post(
                f"{bento_server.url}/classify",
                json={"texts": f"{marker} {i}: my card has still not arrived"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text  # answering goes on
        deadline, refused = time.monotonic() + 15, None
        while refused is None and time.monotonic() < deadline:
            probe = requests.get(f"{bento_server.url}/readyz", timeout=10)
            refused = probe if probe.status_code == 503 else None
            time.sleep(0.1)
        assert refused is not None, "/readyz stayed ready while the log could not be written"
        assert refused.json()["error"] == "unavailable"
        metrics = requests.get(f"{bento_server.url}/metrics", timeout=10).text
        failures = re.findall(r"^mlops_prediction_log_write_failures_total\S* (\S+)", metrics, re.M)
        assert failures and sum(float(f) for f in failures) > 0, "no write failure was counted"
    finally:
        root.unlink()
        aside.rename(root)
    deadline, ready_in_a_row = time.monotonic() + 20, 0
    while ready_in_a_row < 10 and time.monotonic() < deadline:
        ok = requests.get(f"{bento_server.url}/readyz", timeout=10).status_code == 200
        ready_in_a_row = ready_in_a_row + 1 if ok else 0
        time.sleep(0.05)
    assert ready_in_a_row == 10, "/readyz did not recover once the log could be written again"
    now = datetime.now(UTC)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        logged = read_predictions(root, now - timedelta(hours=1), now + timedelta(hours=1))
        kept = logged.filter(logged["text"].str.starts_with(marker))
        if kept.height >= 16:
            break
        time.sleep(0.2)
    assert kept.height == 16, "records served while the disk was broken were lost"


def test_every_route_but_the_probes_and_the_contract_needs_a_valid_key(
    bento_server: BentoServer, published: dict
) -> None:
    key = bento_server.credentials.application
    wrong = [
        {},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Basic {key}"},
        {"X-API-Key": key[:-1]},
    ]
    for path in ("/classify", "/forecast", "/admin/halt-release", "/no-such-route"):
        for headers in wrong:
            answer = requests.post(
                f"{bento_server.url}{path}", json={"texts": "hi"}, headers=headers, timeout=30
            )
            assert answer.status_code == 401, (path, headers, answer.text)
            assert answer.json()["error"] == "unauthorized"
            assert answer.headers["www-authenticate"].startswith("Bearer")
            if path in published["paths"]:
                assert_published_error(published, path, answer, 401)
    by_header = requests.post(
        f"{bento_server.url}/classify", json={"texts": "hi"}, headers={"X-API-Key": key}, timeout=30
    )
    assert by_header.status_code == 200, by_header.text
    for path in ("/livez", "/readyz", "/docs.json", "/metrics"):  # /metrics: from loopback
        assert requests.get(f"{bento_server.url}{path}", timeout=30).status_code == 200, path
    assert published["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert published["security"] == [{"apiKey": []}]
    assert published["paths"]["/readyz"]["get"]["security"] == []
    assert "security" not in published["paths"]["/classify"]["post"], "it needs the key"
    assert "403" in published["paths"]["/admin/halt-release"]["post"]["responses"]


def test_the_documentation_page_loads_without_a_key_and_opens_nothing_else(
    bento_server: BentoServer,
) -> None:
    page = requests.get(f"{bento_server.url}/", timeout=30)
    assert page.status_code == 200 and "swagger-ui" in page.text, page.text[:300]
    files = re.findall(r"""(?:href|src)="\./static_content/([^"]+)\"""", page.text)
    assert "swagger-ui-bundle.js" in files and "swagger-ui.css" in files, files
    for name in files:
        answer = requests.get(f"{bento_server.url}/static_content/{name}", timeout=30)
        assert answer.status_code == 200 and answer.content, name
    assert requests.head(f"{bento_server.url}/", timeout=30).status_code != 401
    for method, path in (
        ("POST", "/"),
        ("PUT", "/static_content/swagger-ui.css"),
        ("GET", "/static_content/.env"),
        ("GET", "/static_content/"),
        ("GET", "/static_content/nested/swagger-ui.css"),
    ):
        answer = requests.request(method, f"{bento_server.url}{path}", timeout=30)
        assert answer.status_code == 401, (method, path, answer.status_code)
        assert answer.json()["error"] == "unauthorized"
