"""The Dagster UI is reached only through its login (Caddy basic auth, as `make dev` starts
it): no account or a wrong password is a 401; an ML engineer reaches the full webserver; a
viewer reaches only the read-only one, and that webserver (`dagster-webserver --read-only`,
the real one over this code location) refuses to launch a run."""

import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from assets.resources import LAUNCHED_BY_TAG
from ml.settings import Settings
from orchestration.launch_recorder import start_launch_recorder
from orchestration.processes import stop_process_group
from orchestration.ui_gateway import ACCOUNTS_FILE, ENGINEER, VIEWER, start_ui_gateway, ui_accounts
from tests.conftest import dagster_webserver, free_port


def upstream(name: str) -> ThreadingHTTPServer:
    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{name} {self.headers.get('X-Forwarded-User', '')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_each_account_reaches_only_its_webserver_and_nobody_gets_in_without_one(
    settings: Settings,
) -> None:
    full, read_only = upstream("full"), upstream("read-only")
    ports = {ENGINEER: free_port(), VIEWER: free_port()}
    gateway = start_ui_gateway(
        settings,
        {
            ENGINEER: (ports[ENGINEER], full.server_address[1]),
            VIEWER: (ports[VIEWER], read_only.server_address[1]),
        },
        free_port(),
    )
    try:
        accounts = ui_accounts(settings.secrets_dir)
        assert (settings.secrets_dir / ACCOUNTS_FILE).stat().st_mode & 0o077 == 0
        config = (settings.data_home / "caddy" / "ui-gateway.json").read_text()
        assert all(password not in config for password in accounts.values()), "hashes only"

        def get(account: str, auth: tuple[str, str] | None) -> requests.Response:
            return requests.get(f"http://127.0.0.1:{ports[account]}/", auth=auth, timeout=30)

        for account in (ENGINEER, VIEWER):
            nobody = get(account, None)
            assert nobody.status_code == 401 and "Basic" in nobody.headers["WWW-Authenticate"]
            assert get(account, (account, accounts[account] + "x")).status_code == 401
        engineer = get(ENGINEER, (ENGINEER, accounts[ENGINEER]))
        assert engineer.status_code == 200 and engineer.text == "full engineer"
        viewer = get(VIEWER, (VIEWER, accounts[VIEWER]))
        assert viewer.status_code == 200 and viewer.text == "read-only viewer"
        assert get(ENGINEER, (VIEWER, accounts[VIEWER])).status_code == 401, "viewers stay out"
    finally:
        gateway.stop()
        full.shutdown()
        read_only.shutdown()


@pytest.fixture
def read_only_webserver(settings: Settings, tmp_path: Path) -> Iterator[str]:
    with dagster_webserver(settings, tmp_path / "webserver.log", "--read-only") as url:
        yield url


LAUNCH = """
mutation {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "mlops_platform", repositoryName: "__repository__",
               jobName: "warehouse_job"}
  }) { __typename ... on UnauthorizedError { message } }
}"""


def test_the_read_only_webserver_refuses_to_launch_a_run(read_only_webserver: str) -> None:
    graphql = f"{read_only_webserver}/graphql"
    permissions = requests.post(
        graphql, json={"query": "{ permissions { permission value } }"}, timeout=120
    ).json()["data"]["permissions"]
    allowed = {p["permission"]: p["value"] for p in permissions}
    assert allowed["launch_pipeline_execution"] is False
    assert allowed["edit_sensor"] is False
    launched = requests.post(graphql, json={"query": LAUNCH}, timeout=120).json()
    assert launched["data"]["launchRun"]["__typename"] == "UnauthorizedError", launched


LAUNCH_WITH_VARIABLES = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
RUN_TAGS = """
query Tags($runId: ID!) { runOrError(runId: $runId) { ... on Run { tags { key value } } } }"""


def test_every_run_launched_through_the_ui_records_the_signed_in_engineer(
    settings: Settings, tmp_path: Path
) -> None:
    settings = replace(settings, dagster_engineers=("alice", "bob"))
    with dagster_webserver(settings, tmp_path / "webserver.log") as url:
        upstream_port = int(url.rsplit(":", 1)[1])
        recorder_port, listen = free_port(), free_port()
        recorder = start_launch_recorder(recorder_port, url, tmp_path / "recorder.log")
        gateway = None
        try:
            gateway = start_ui_gateway(
                settings, {ENGINEER: (listen, upstream_port)}, free_port(), recorder_port
            )
            accounts = ui_accounts(settings.secrets_dir)
            graphql = f"http://127.0.0.1:{listen}/graphql"

            def post(account: str, query: str, variables: dict, op: str) -> requests.Response:
                return requests.post(
                    graphql,
                    params={"op": op},
                    auth=(account, accounts[account]),
                    json={"query": query, "variables": variables},
                    timeout=120,
                )

            params = {
                "selector": {
                    "repositoryLocationName": "mlops_platform",
                    "repositoryName": "__repository__",
                    "jobName": "retention_job",
                },
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": LAUNCHED_BY_TAG, "value": "mallory"}]},
            }
            launched = post("alice", LAUNCH_WITH_VARIABLES, {"executionParams": params}, "Launch")
            result = launched.json()["data"]["launchPipelineExecution"]
            assert result["__typename"] == "LaunchRunSuccess", result
            run_id = result["run"]["runId"]
            tags = post("bob", RUN_TAGS, {"runId": run_id}, "Tags").json()["data"]["runOrError"]
            recorded = {tag["key"]: tag["value"] for tag in tags["tags"]}
            assert recorded[LAUNCHED_BY_TAG] == "alice", "the signed-in account, not the client's"

            inline = post("bob", LAUNCH, {}, "LaunchRun")
            assert inline.status_code == 400 and "variable" in inline.text, inline.text
            by_get = requests.get(
                graphql, params={"query": LAUNCH}, auth=("bob", accounts["bob"]), timeout=120
            )
            assert by_get.status_code == 400, "a launch in the URL is refused, not run untagged"
            page = requests.get(
                f"http://127.0.0.1:{listen}/", auth=("bob", accounts["bob"]), timeout=60
            )
            assert page.status_code == 200 and "<html" in page.text.lower()
            reads = post("bob", "{ version }", {}, "Version")
            assert reads.status_code == 200 and reads.json()["data"]["version"]
            assert (
                requests.post(graphql, json={"query": "{ version }"}, timeout=30).status_code == 401
            )
        finally:
            if gateway is not None:
                gateway.stop()
            stop_process_group(recorder)
