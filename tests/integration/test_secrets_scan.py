"""No secret leaks. With a known secret in the environment (an MLflow password, set by the
suite's conftest before anything starts) and the platform's generated serving keys in use, the
session's whole platform run (ingestion, training, the registry, the Bentos, then serving
traffic with an application and an admin key) leaves neither in any log, the Dagster event log,
the MLflow store, any Bento or anywhere else in the data home, except the secrets folder made
to hold them; and no process was given one on its command line."""

import os

import psutil
import requests

from orchestration.serving import BentoServer
from serving.api_keys import ADMIN
from tests.conftest import KNOWN_ENVIRONMENT_SECRET, ServedPlatform


def files_holding(root, secrets: dict[str, bytes], skip) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(part in skip for part in path.relative_to(root).parts):
            continue
        data = path.read_bytes()
        found += [f"{name} in {path}" for name, value in secrets.items() if value in data]
    return found


def test_no_secret_is_left_in_logs_the_event_log_the_registry_bentos_or_the_data_home(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    credentials = bento_server.credentials
    answered = requests.post(
        f"{bento_server.url}/classify",
        json={"texts": "where is my card?"},
        headers=bento_server.headers(),
        timeout=60,
    )
    assert answered.status_code == 200, answered.text
    listed = requests.post(
        f"{bento_server.url}/admin/release-states",
        json={},
        headers=bento_server.headers(ADMIN),
        timeout=60,
    )
    assert listed.status_code == 200, listed.text
    refused = requests.post(
        f"{bento_server.url}/classify",
        json={"texts": "hi"},
        headers={"Authorization": f"Bearer {credentials.application}x"},
        timeout=60,
    )
    assert refused.status_code == 401 and credentials.application not in refused.text
    secrets = {
        "the application key": credentials.application.encode(),
        "the admin key": credentials.admin.encode(),
        "MLFLOW_TRACKING_PASSWORD": KNOWN_ENVIRONMENT_SECRET.encode(),
        "the logs' encryption key": os.environ["MLOPS_ENCRYPTION_KEYS"].encode(),
    }

    home = served_platform.settings.data_home
    assert credentials.keys_file.parent == home / "secrets"
    assert not files_holding(home, secrets, skip={"secrets"})

    instance = served_platform.instance
    events = [str(r) for run in instance.get_runs() for r in instance.all_logs(run.run_id)]
    assert events, "the session's runs left events"
    for name, value in secrets.items():
        assert not [e for e in events if value.decode() in e], f"{name} in the Dagster event log"

    server = psutil.Process(bento_server.process.pid)
    for process in [server, *server.children(recursive=True)]:
        command = " ".join(process.cmdline())
        for name, value in secrets.items():
            assert value.decode() not in command, f"{name} on the command line of {process.pid}"
