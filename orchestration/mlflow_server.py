"""The registry's server in the production profile: `mlflow server --app-name basic-auth` on
PostgreSQL (`make mlflow-server`), so that only accounts may write to the registry.

Accounts: `admin` (MLflow's own administrator: manages accounts), `platform` (the service
account Dagster's runs and the serving build use: it creates the experiments and registered
models, so it manages them) and `viewer` (people reading the UI: the default permission, READ,
on everything). Their passwords are generated once into `mlflow-accounts.json` in the secrets
folder (0600); the auth settings, with the administrator's password, in `mlflow-basic-auth.ini`
(0600), so MLflow never bootstraps an administrator with a known password. Clients send
`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (never credentials inside the URI). The
backend URI reaches the server through `MLFLOW_BACKEND_STORE_URI`, never its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from ml.security.secret_files import private_dir, read_private_file, write_private_file
from ml.settings import Settings, child_environment, executable
from orchestration.processes import stop_process_group, wait_until_ready

ADMIN_USER, PLATFORM_USER, VIEWER_USER = "admin", "platform", "viewer"
ACCOUNTS_FILE = "mlflow-accounts.json"
AUTH_CONFIG_FILE = "mlflow-basic-auth.ini"
START_TIMEOUT_SECONDS = 120.0
USERS_API = "/api/2.0/mlflow/users"
AUTH_DATABASE_VARIABLE = "MLOPS_MLFLOW_AUTH_DATABASE_URI"


class MlflowAuthError(RuntimeError):
    """The server's accounts are not what the secrets folder says, naming which."""


@dataclass(frozen=True)
class MlflowAccounts:
    admin: str
    platform: str
    viewer: str
    """Passwords."""
    session_key: str
    """The server's Flask secret (CSRF tokens of the UI's forms)."""

    def environment(self, user: str = PLATFORM_USER) -> dict[str, str]:
        """What a client of the server is started with to act as `user`."""
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": getattr(self, user)}


def mlflow_accounts(secrets_dir: Path) -> MlflowAccounts:
    """The accounts' passwords: generated once, then read back."""
    path = secrets_dir / ACCOUNTS_FILE
    if path.exists():
        return MlflowAccounts(**json.loads(read_private_file(path)))
    accounts = MlflowAccounts(*(secrets.token_urlsafe(24) for _ in range(4)))
    write_private_file(path, json.dumps(asdict(accounts)))
    return accounts


def write_auth_config(secrets_dir: Path, auth_database_uri: str, accounts: MlflowAccounts) -> Path:
    """MLflow's basic-auth settings: READ by default, the administrator with our password, the
    user store in `auth_database_uri` (PostgreSQL in production)."""
    path = secrets_dir / AUTH_CONFIG_FILE
    write_private_file(
        path,
        "\n".join(
            [
                "[mlflow]",
                "default_permission = READ",
                f"database_uri = {auth_database_uri}",
                f"admin_username = {ADMIN_USER}",
                f"admin_password = {accounts.admin}",
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
                "",
            ]
        ),
    )
    return path


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    accounts: MlflowAccounts

    def stop(self) -> None:
        stop_process_group(self.process)


def _users_call(url: str, auth: tuple[str, str], method: str, what: str, **body: str):
    """MLflow's user API: a GET takes its fields as the query, the others as JSON."""
    fields = {"params": body} if method == "GET" else {"json": body}
    return requests.request(method, f"{url}{USERS_API}/{what}", auth=auth, timeout=30, **fields)


def ensure_accounts(url: str, accounts: MlflowAccounts) -> None:
    """The platform and viewer accounts exist with the passwords of the secrets folder
    (created, or their password set again: idempotent)."""
    admin = (ADMIN_USER, accounts.admin)
    probe = _users_call(url, admin, "GET", "get", username=ADMIN_USER)
    if probe.status_code == 401:
        raise MlflowAuthError(
            f"{url} refuses the administrator's password of {AUTH_CONFIG_FILE}: its user store "
            "was created with another; rotate it with the update-password API"
        )
    probe.raise_for_status()
    for user in (PLATFORM_USER, VIEWER_USER):
        password = getattr(accounts, user)
        found = _users_call(url, admin, "GET", "get", username=user)
        if found.status_code == 404:
            done = _users_call(url, admin, "POST", "create", username=user, password=password)
        else:
            found.raise_for_status()
            done = _users_call(
                url, admin, "PATCH", "update-password", username=user, password=password
            )
        if not done.ok:
            raise MlflowAuthError(f"{user}: {done.status_code} {done.text[:300]}")


@contextmanager
def running_mlflow_server(
    backend_uri: str,
    auth_database_uri: str,
    artifacts: Path,
    port: int,
    secrets_dir: Path,
    log_path: Path,
) -> Iterator[MlflowServer]:
    """`mlflow server --app-name basic-auth` on 127.0.0.1:`port`, its accounts ensured; stopped
    on exit. The job runner is off (it starts seven consumer processes nothing here uses)."""
    accounts = mlflow_accounts(secrets_dir)
    config = write_auth_config(secrets_dir, auth_database_uri, accounts)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                executable("mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--serve-artifacts",
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=log_path.parent,
            env=child_environment(
                MLFLOW_BACKEND_STORE_URI=backend_uri,
                MLFLOW_AUTH_CONFIG_PATH=str(config),
                MLFLOW_FLASK_SERVER_SECRET_KEY=accounts.session_key,
                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    server = MlflowServer(url, process, log_path, accounts)
    try:
        wait_until_ready(process, f"{url}/health", log_path, START_TIMEOUT_SECONDS, "mlflow server")
        ensure_accounts(url, accounts)
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    backend = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend:
        parser.error("set MLFLOW_BACKEND_STORE_URI (postgresql://…/mlflow) for the server")
    folder = settings.secrets_dir
    auth_database = os.environ.get(
        AUTH_DATABASE_VARIABLE, f"sqlite:///{private_dir(folder) / 'mlflow-auth.db'}"
    )
    with running_mlflow_server(
        backend,
        auth_database,
        Path(settings.artifact_root),
        args.port,
        folder,
        settings.data_home / "logs" / "mlflow-server.log",
    ) as server:
        print(
            f"mlflow server (basic-auth) on {server.url}; accounts {ADMIN_USER}, {PLATFORM_USER}"
            f" (the platform's: set MLFLOW_TRACKING_USERNAME/PASSWORD from it) and "
            f"{VIEWER_USER} (READ): passwords in {folder / ACCOUNTS_FILE}",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            server.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
