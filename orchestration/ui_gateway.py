"""The Dagster UI behind a login. Open-source Dagster's webserver has no accounts, so the
platform puts Caddy in front of it (HTTP basic authentication, bcrypt hashes, the same proxy as
the serving front door): ML engineers sign in on the UI port and reach the full webserver
(launch, re-execute, turn sensors on); viewers sign in on the viewer port and reach a second
webserver started with `--read-only`, which refuses every launch and change itself. The two
webservers listen on internal ports only.

Every person has an account of their own (`MLOPS_DAGSTER_ENGINEERS`, `MLOPS_DAGSTER_VIEWERS`;
by default one `engineer` and one `viewer`), with a random password generated once into
`dagster-ui-accounts.json` in the secrets folder (0600); Caddy holds only their hashes (made by
`caddy hash-password`, reading the password on stdin, never a command line). The engineers'
GraphQL requests go through the launch recorder (orchestration/launch_recorder.py), which tags
every run they launch with the signed-in account.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ml.security.secret_files import read_private_file, write_private_file
from ml.settings import Settings, environment_with, executable
from orchestration.front_door import run_caddy
from orchestration.processes import stop_process_group

ENGINEER, VIEWER = "engineer", "viewer"
"""The two roles of the Dagster UI (and the default account of each)."""
ACCOUNTS_FILE = "dagster-ui-accounts.json"
REALM = "Dagster (mlops platform)"


def ui_accounts(secrets_dir: Path, names: Iterable[str] = (ENGINEER, VIEWER)) -> dict[str, str]:
    """{account: password} of every account in `names` (and any made before), each generated
    once."""
    path = secrets_dir / ACCOUNTS_FILE
    accounts = json.loads(read_private_file(path)) if path.exists() else {}
    missing = [name for name in names if name not in accounts]
    if missing:
        accounts.update({name: secrets.token_urlsafe(18) for name in missing})
        write_private_file(path, json.dumps(accounts))
    return accounts


def password_hash(password: str) -> str:
    """bcrypt hash of `password`, by Caddy itself (the password on stdin)."""
    done = subprocess.run(
        [executable("caddy"), "hash-password", "--algorithm", "bcrypt"],
        input=f"{password}\n",
        capture_output=True,
        text=True,
        env=environment_with(),
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"caddy hash-password failed: {done.stderr[-500:]}")
    return done.stdout.strip().splitlines()[-1]


def _proxy(port: int) -> dict[str, object]:
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"127.0.0.1:{port}"}],
        # the signed-in account, set here whatever the client sent
        "headers": {"request": {"set": {"X-Forwarded-User": ["{http.auth.user.id}"]}}},
    }


@dataclass(frozen=True)
class GatedServer:
    """One sign-in port: who may sign in (account → password hash), the webserver behind it,
    and (for launches) the launch recorder its GraphQL requests go through."""

    listen: int
    upstream: int
    accounts: dict[str, str]
    recorder: int | None = None


def _gated(server: GatedServer) -> dict[str, object]:
    login = {
        "handler": "authentication",
        "providers": {
            "http_basic": {
                "accounts": [
                    {"username": name, "password": hashed}
                    for name, hashed in sorted(server.accounts.items())
                ],
                "hash": {"algorithm": "bcrypt"},
                "hash_cache": {},
                "realm": REALM,
            }
        },
    }
    routes: list[dict[str, object]] = [{"handle": [login]}]
    if server.recorder is not None:
        routes.append(
            {
                # every GraphQL request but a websocket's (subscriptions only, no launches)
                "match": [
                    {
                        "path": ["/graphql"],
                        "not": [{"header": {"Upgrade": ["websocket", "WebSocket"]}}],
                    }
                ],
                "handle": [_proxy(server.recorder)],
                "terminal": True,
            }
        )
    routes.append({"handle": [_proxy(server.upstream)]})
    return {
        "listen": [f"127.0.0.1:{server.listen}"],
        "protocols": ["h1", "h2c"],
        "automatic_https": {"disable": True},
        "routes": routes,
    }


def gateway_config(
    servers: dict[str, GatedServer], admin_port: int, storage: Path
) -> dict[str, object]:
    """Caddy's configuration: one gated server per role."""
    return {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(storage)},
        "apps": {"http": {"servers": {role: _gated(server) for role, server in servers.items()}}},
    }


@dataclass
class UiGateway:
    process: subprocess.Popen
    log_path: Path
    ports: dict[str, int]

    def stop(self) -> None:
        stop_process_group(self.process)


def start_ui_gateway(
    settings: Settings,
    routes: dict[str, tuple[int, int]],
    admin_port: int,
    recorder_port: int | None = None,
) -> UiGateway:
    """Caddy with a login in front of each role's {role: (listen port, upstream port)}: the
    engineers' accounts on the `engineer` port (their GraphQL requests through the launch recorder
    on `recorder_port`, when given), the viewers' on the `viewer` port."""
    people = {ENGINEER: settings.dagster_engineers, VIEWER: settings.dagster_viewers}
    accounts = ui_accounts(settings.secrets_dir, [n for role in routes for n in people[role]])
    servers = {
        role: GatedServer(
            listen,
            upstream,
            {name: password_hash(accounts[name]) for name in people[role]},
            recorder_port if role == ENGINEER else None,
        )
        for role, (listen, upstream) in routes.items()
    }
    config = gateway_config(servers, admin_port, settings.data_home / "caddy" / "data")
    ports = [listen for listen, _ in routes.values()]
    process, log_path = run_caddy(settings, "ui-gateway", config, ports, admin_port)
    return UiGateway(process, log_path, {role: listen for role, (listen, _) in routes.items()})
