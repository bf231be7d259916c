"""API keys on the service: stored as digests, checked in constant time by an ASGI middleware;
401 without or with a wrong key, 403 for an application key on an admin route, probes open, the
documentation page open to read, /metrics only from the loopback address, key files only when
no one else can read them."""

import asyncio
import json
import os

import pytest

from serving.api_keys import (
    ADMIN,
    ADMIN_KEY_VARIABLE,
    APPLICATION,
    CLIENT_KEY_VARIABLE,
    KEYS_FILE_VARIABLE,
    KEYS_VARIABLE,
    ApiKeyAuth,
    ApiKeyError,
    current_caller,
    key_line,
    keys_for_service,
    load_keys,
    new_key,
    parse_keys,
    platform_credentials,
    write_key_file,
)

APP_KEY, ADMIN_KEY = new_key(), new_key()
KEYS = parse_keys(
    "\n".join([key_line("shop", APPLICATION, APP_KEY), key_line("ops", ADMIN, ADMIN_KEY)]),
    "test",
)


async def _inner(scope, receive, send):
    body = json.dumps({"caller": current_caller()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def call(
    path: str,
    headers: dict[str, str] | None = None,
    client: str = "127.0.0.1",
    method: str = "POST",
):
    app = ApiKeyAuth(_inner, KEYS, admin_paths={"/admin/release-share"})
    scope = {
        "type": "http",
        "path": path,
        "method": method,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (client, 50000),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]) or b"null")
    return start["status"], dict(start["headers"]), body


def test_a_valid_key_lets_its_caller_in_by_either_header():
    assert call("/classify", {"Authorization": f"Bearer {APP_KEY}"})[::2] == (
        200,
        {"caller": "shop"},
    )
    assert call("/classify", {"X-API-Key": ADMIN_KEY})[2] == {"caller": "ops"}


def test_no_key_or_a_wrong_key_is_401_in_the_error_shape():
    for headers, says in (
        ({}, "no API key"),
        ({"Authorization": "Bearer " + new_key()}, "not valid"),
        ({"Authorization": f"Basic {APP_KEY}"}, "no API key"),
        ({"X-API-Key": APP_KEY[:-1]}, "not valid"),
    ):
        status, sent_headers, body = call("/classify", headers)
        assert status == 401, headers
        assert body["error"] == "unauthorized" and says in body["message"]
        assert body["request_id"] and sent_headers[b"www-authenticate"].startswith(b"Bearer")
        assert APP_KEY not in json.dumps(body)


def test_admin_routes_need_an_admin_key():
    status, _, body = call("/admin/release-share", {"Authorization": f"Bearer {APP_KEY}"})
    assert status == 403 and body["error"] == "forbidden" and "role application" in body["message"]
    assert call("/admin/release-share", {"Authorization": f"Bearer {ADMIN_KEY}"})[0] == 200


def test_probes_stay_open_and_metrics_answer_only_the_loopback_address():
    assert call("/readyz")[0] == 200 and call("/livez", client="10.1.2.3")[0] == 200
    assert call("/metrics")[0] == 200
    assert call("/metrics", client="10.1.2.3")[0] == 404
    assert call("/metrics", {"Authorization": f"Bearer {ADMIN_KEY}"}, client="10.1.2.3")[0] == 404


def test_a_developer_reads_the_documentation_page_without_a_key_but_calls_nothing_through_it():
    page = ["/", "/static_content/swagger-ui-bundle.js", "/static_content/favicon-light-32x32.png"]
    for path in page:
        for method in ("GET", "HEAD"):
            assert call(path, method=method)[0] == 200, (method, path)
    assert call("/docs.json", method="GET")[0] == 200
    still_closed = [
        ("POST", "/"),
        ("PUT", "/static_content/swagger-ui.css"),
        ("DELETE", "/static_content/swagger-ui.css"),
        ("GET", "/static_content/"),
        ("GET", "/static_content"),
        ("GET", "/static_content/nested/file.js"),
        ("GET", "/static_content/../serving-api-keys"),
        ("GET", "/static_content/.env"),
        ("GET", "/static_contentswagger-ui.css"),
        ("GET", "/classify"),
        ("GET", "/admin/release-share"),
    ]
    for method, path in still_closed:
        status, _, body = call(path, method=method)
        assert status == 401 and body["error"] == "unauthorized", (method, path)


def test_key_files_hold_digests_only_and_must_be_private(tmp_path):
    path = tmp_path / "keys"
    write_key_file(path, [key_line("shop", APPLICATION, APP_KEY), "# a comment", ""])
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert APP_KEY not in path.read_text()
    assert load_keys({KEYS_FILE_VARIABLE: str(path)})[0].caller == "shop"
    path.chmod(0o644)
    with pytest.raises(ApiKeyError, match="readable by others"):
        load_keys({KEYS_FILE_VARIABLE: str(path)})
    assert load_keys({}) is None
    inline = load_keys({KEYS_VARIABLE: key_line("a", APPLICATION, APP_KEY)})
    assert inline[0].role == APPLICATION


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("shop application", "expected '<caller> <role> sha256:<hex>'"),
        (f"shop owner sha256:{'0' * 64}", "role 'owner' is not one of"),
        (f"shop application {APP_KEY}", "never the key itself"),
        (f"shop application sha256:{'z' * 64}", "not hexadecimal"),
        (f"a application sha256:{'0' * 64}\na admin sha256:{'1' * 64}", "appears twice"),
    ],
)
def test_a_bad_key_line_is_named(line, says):
    with pytest.raises(ApiKeyError, match=says):
        parse_keys(line, "keys.txt")


def test_the_service_does_not_start_without_keys():
    with pytest.raises(ApiKeyError, match=KEYS_FILE_VARIABLE):
        keys_for_service({})
    with pytest.raises(ApiKeyError, match="no API keys"):
        ApiKeyAuth(_inner, None)


def test_the_platform_generates_its_keys_once_in_private_files(tmp_path):
    secrets = tmp_path / "secrets"
    first = platform_credentials(secrets, {})
    assert first.application != first.admin
    assert platform_credentials(secrets, {}) == first, "generated once, then reused"
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    for path in secrets.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
        assert first.application not in path.read_text() or path.suffix == ".json"
    keys = load_keys({KEYS_FILE_VARIABLE: str(first.keys_file)})
    roles = {key.role for key in keys}
    assert roles == {APPLICATION, ADMIN}
    app = ApiKeyAuth(_inner, keys)
    assert app.keys == keys
    assert first.server_environment() == {KEYS_FILE_VARIABLE: str(first.keys_file)}
    assert first.headers(ADMIN) == {"Authorization": f"Bearer {first.admin}"}


def test_keys_the_operator_configures_need_the_platforms_own_from_the_environment(tmp_path):
    configured = {KEYS_VARIABLE: key_line("shop", APPLICATION, APP_KEY)}
    with pytest.raises(ApiKeyError, match=f"{CLIENT_KEY_VARIABLE} and {ADMIN_KEY_VARIABLE}"):
        platform_credentials(tmp_path, configured)
    given = platform_credentials(
        tmp_path, {**configured, CLIENT_KEY_VARIABLE: APP_KEY, ADMIN_KEY_VARIABLE: ADMIN_KEY}
    )
    assert (given.application, given.admin, given.keys_file) == (APP_KEY, ADMIN_KEY, None)
    assert given.server_environment() == {}, "the service reads the operator's keys"
    assert not list(tmp_path.iterdir()), "nothing generated"
