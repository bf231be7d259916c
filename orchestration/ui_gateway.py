"""The Dagster UI behind a login. Open-source Dagster's webserver has no accounts, so the
platform puts Caddy in front of it (HTTP basic authentication, bcrypt hashes, the same proxy as
the serving front door): ML engineers sign in on the UI port and reach the full webserver
(launch, re-execute, turn sensors on); viewers sign in on the viewer port and reach a second
webserver started with `--read-only`, which refuses every launch and change itself. The two
webservers listen on internal ports only.

The accounts (`engineer`, `viewer`) get random passwords, generated once into
`dagster-ui-accounts.json` in the secrets folder (0600); Caddy holds only their hashes (made by
`caddy hash-password`, reading the password on stdin, never a command line).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ml.security.secret_files import read_private_file, write_private_file
from ml.settings import Settings, environment_with, executable
from orchestration.front_door import run_caddy
from orchestration.processes import stop_process_group

ENGINEER, VIEWER = "engineer", "viewer"
ACCOUNTS_FILE = "dagster-ui-accounts.json"
REALM = "Dagster (mlops platform)"


def ui_accounts(secrets_dir: Path) -> dict[str, str]:
    """{account: password}, generated once."""
    path = secrets_dir / ACCOUNTS_FILE
    if path.exists():
        return json.loads(read_private_file(path))
    accounts = {name: secrets.token_urlsafe(18) for name in (ENGINEER, VIEWER)}
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


def _gated(listen: int, upstream: int, account: str, hashed: str) -> dict[str, object]:
    return {
        "listen": [f"127.0.0.1:{listen}"],
        "protocols": ["h1", "h2c"],
        "automatic_https": {"disable": True},
        "routes": [
            {
                "handle": [
                    {
                        "handler": "authentication",
                        "providers": {
                            "http_basic": {
                                "accounts": [{"username": account, "password": hashed}],
                                "hash": {"algorithm": "bcrypt"},
                                "hash_cache": {},
                                "realm": REALM,
                            }
                        },
                    },
                    {
                        "handler": "reverse_proxy",
                        "upstreams": [{"dial": f"127.0.0.1:{upstream}"}],
                        # the signed-in account, for the upstream's logs
                        "headers": {
                            "request": {"set": {"X-Forwarded-User": ["{http.auth.user.id}"]}}
                        },
                    },
                ]
            }
        ],
    }


def gateway_config(
    routes: dict[str, tuple[int, int, str]], admin_port: int, storage: Path
) -> dict[str, object]:
    """Caddy's configuration: for each account, its port, the upstream port it reaches and its
    password hash ({account: (listen, upstream, hash)})."""
    return {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(storage)},
        "apps": {
            "http": {
                "servers": {
                    account: _gated(listen, upstream, account, hashed)
                    for account, (listen, upstream, hashed) in routes.items()
                }
            }
        },
    }


@dataclass
class UiGateway:
    process: subprocess.Popen
    log_path: Path
    ports: dict[str, int]

    def stop(self) -> None:
        stop_process_group(self.process)


def start_ui_gateway(
    settings: Settings, routes: dict[str, tuple[int, int]], admin_port: int
) -> UiGateway:
    """Caddy with a login in front of each {account: (listen port, upstream port)}."""
    accounts = ui_accounts(settings.secrets_dir)
    config = gateway_config(
        {
            account: (listen, upstream, password_hash(accounts[account]))
            for account, (listen, upstream) in routes.items()
        },
        admin_port,
        settings.data_home / "caddy" / "data",
    )
    ports = [listen for listen, _ in routes.values()]
    process, log_path = run_caddy(settings, "ui-gateway", config, ports, admin_port)
    return UiGateway(process, log_path, {a: listen for a, (listen, _) in routes.items()})
