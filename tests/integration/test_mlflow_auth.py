"""The registry of the production profile refuses anyone without an account: a real
`mlflow server --app-name basic-auth` on PostgreSQL (backend and user store), started by
`orchestration.mlflow_server` as `make mlflow-server` starts it. The platform's service account
registers and moves aliases; a person's READ account reads and is refused a move; no account
or a wrong password is refused; MLflow's well-known default password does not open it."""

import os
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ml.lifecycle.registry import Registry
from ml.settings import environment_set
from orchestration.mlflow_server import (
    ACCOUNTS_FILE,
    ADMIN_USER,
    AUTH_CONFIG_FILE,
    PLATFORM_USER,
    VIEWER_USER,
    running_mlflow_server,
)
from tests.conftest import free_port, scratch_postgres_database

MODEL = "request_classifier_auth_test"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def as_nobody():
    """No credentials in the environment (what MLflow's client sends then: nothing)."""
    return environment_set(**{name: "" for name in CREDENTIALS})


def register_one_version(client: MlflowClient) -> str:
    experiment = client.create_experiment("auth_test")
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "flavors: {}\n", "model/MLmodel")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL)
    source = f"{run.info.artifact_uri}/model"
    return client.create_model_version(MODEL, source, run.info.run_id).version


@pytest.mark.postgres
def test_only_the_platform_account_moves_an_alias_and_people_only_read(tmp_path: Path) -> None:
    before = {name: os.environ.get(name) for name in CREDENTIALS}
    with (
        scratch_postgres_database("mlops_mlflow") as backend,
        scratch_postgres_database("mlops_mlflow_auth") as users,
        running_mlflow_server(
            backend,
            users,
            tmp_path / "artifacts",
            free_port(),
            tmp_path / "secrets",
            tmp_path / "logs" / "mlflow-server.log",
        ) as server,
    ):
        accounts = server.accounts
        for name in (ACCOUNTS_FILE, AUTH_CONFIG_FILE):
            assert (tmp_path / "secrets" / name).stat().st_mode & 0o077 == 0, name
        known_default = requests.get(
            f"{server.url}/api/2.0/mlflow/users/get",
            params={"username": ADMIN_USER},
            auth=(ADMIN_USER, "password1234"),
            timeout=30,
        )
        assert known_default.status_code == 401, "the administrator has a generated password"
        client = MlflowClient(server.url)

        with environment_set(**accounts.environment(PLATFORM_USER)):
            version = register_one_version(client)
            client.set_registered_model_alias(MODEL, "champion", version)
            assert Registry(server.url).champion(MODEL).version == version

        with as_nobody(), pytest.raises(MlflowException, match=r"401|nauthorized|credentials"):
            client.set_registered_model_alias(MODEL, "champion_by_nobody", version)
        wrong = {**accounts.environment(PLATFORM_USER), "MLFLOW_TRACKING_PASSWORD": "guess"}
        with environment_set(**wrong), pytest.raises(MlflowException, match=r"401|nauthorized"):
            client.set_registered_model_alias(MODEL, "champion_by_a_guess", version)

        with environment_set(**accounts.environment(VIEWER_USER)):
            assert client.get_model_version_by_alias(MODEL, "champion").version == version
            with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403|ermission"):
                client.set_registered_model_alias(MODEL, "champion_by_a_viewer", version)
            with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403|ermission"):
                client.delete_registered_model_alias(MODEL, "champion")

        with environment_set(**accounts.environment(PLATFORM_USER)):
            aliases = client.get_registered_model(MODEL).aliases
        assert aliases == {"champion": version}, "no refused move took effect"
    assert {name: os.environ.get(name) for name in CREDENTIALS} == before, "restored"


def test_credentials_inside_a_tracking_uri_are_refused() -> None:
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME"):
        Registry("http://platform:secret@127.0.0.1:5000")
