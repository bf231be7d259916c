"""The Label Studio server: installed into a virtual environment of its own (its pins clash with
ours), started on localhost with its data under the data home, stopped cleanly.

`make labelstudio` runs it in the foreground; the tests and the demo start the same server.
The admin token comes from MLOPS_LABEL_STUDIO_TOKEN, or is generated once and kept (mode 0600)
in the data home; it is never printed or logged.
"""

import hashlib
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ml.security.secret_files import read_private_file, write_private_file
from ml.settings import PostgresURL, Settings, environment_with

LABEL_STUDIO_VERSION = "1.23.2"
LABEL_STUDIO_CONSTRAINTS = Path(__file__).with_name("labelstudio-constraints.txt")
START_TIMEOUT_SECONDS = 240.0


@dataclass(frozen=True)
class LabelStudioConfig:
    venv: Path
    data_dir: Path
    port: int
    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)
    task_lock_ttl: int = 600
    """Seconds a task fetched from the labeling stream stays locked to its annotator."""
    database_url: str = field(default="", repr=False)
    """postgresql://user[:password]@host:port/name (the production profile); '' = SQLite in
    `data_dir`."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def from_settings(cls, settings: Settings, port: int | None = None) -> "LabelStudioConfig":
        data_dir = settings.data_home / "labelstudio"
        return cls(
            venv=settings.label_studio_venv,
            data_dir=data_dir,
            port=port or settings.label_studio_port,
            username=settings.label_studio_username,
            password=settings.label_studio_password or _kept_secret(data_dir, "admin_password", 16),
            token=settings.label_studio_token or _kept_secret(data_dir, "admin_token", 20),
            task_lock_ttl=settings.label_studio_task_lock_ttl,
            database_url=settings.label_studio_database_url,
        )

    @classmethod
    def scratch(
        cls, data_dir: Path, port: int, username: str, database_url: str = ""
    ) -> "LabelStudioConfig":
        """A server of its own for a test or a benchmark: fresh credentials kept nowhere, the
        deployment's Label Studio venv (MLOPS_LABEL_STUDIO_VENV)."""
        return cls(
            venv=Settings.from_env().label_studio_venv,
            data_dir=data_dir,
            port=port,
            username=username,
            password=secrets.token_hex(8),
            token=secrets.token_hex(20),
            database_url=database_url,
        )


def _kept_secret(folder: Path, name: str, size: int) -> str:
    """A random secret made once per data home and reused, readable by its owner only."""
    path = folder / f".{name}"
    if path.exists():
        return read_private_file(path).strip()
    value = secrets.token_hex(size)
    write_private_file(path, value)  # 0600 from its first byte
    return value


def ensure_installed(venv: Path) -> Path:
    """The `label-studio` executable, installing the pinned server into `venv` on first use.

    Every package is pinned by the constraints file (a new release of one of its loose
    dependencies has broken its start before); a changed file reinstalls the venv."""
    executable = venv / "bin" / "label-studio"
    pins = hashlib.sha256(LABEL_STUDIO_CONSTRAINTS.read_bytes()).hexdigest()[:12]
    stamp = venv / f".installed-{LABEL_STUDIO_VERSION}-{pins}"
    if executable.exists() and stamp.exists():
        return executable
    print(
        f"installing label-studio {LABEL_STUDIO_VERSION} into {venv} (once, about a minute)…",
        flush=True,
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, "-c", str(LABEL_STUDIO_CONSTRAINTS), f"label-studio=={LABEL_STUDIO_VERSION}"],
        check=True,
    )
    stamp.touch()
    return executable


def database_environment(database_url: str) -> dict[str, str]:
    """Label Studio's own variables for a PostgreSQL database (its default is SQLite)."""
    if not database_url:
        return {}
    database = PostgresURL.parse(database_url, "MLOPS_LABEL_STUDIO_DATABASE_URL")
    return {
        "DJANGO_DB": "postgresql",
        "POSTGRE_NAME": database.database,
        "POSTGRE_USER": database.user,
        "POSTGRE_PASSWORD": database.password,
        "POSTGRE_HOST": database.host,
        "POSTGRE_PORT": str(database.port),
    }


def server_environment(config: LabelStudioConfig) -> dict[str, str]:
    return environment_with(
        passing=("POSTGRE_PASSWORD",),  # its own database's, in the production profile
        **database_environment(config.database_url),
        LABEL_STUDIO_BASE_DATA_DIR=str(config.data_dir),
        LATEST_VERSION_CHECK="false",
        # Nobody signs up without an invite link from an administrator.
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        TASK_LOCK_TTL=str(config.task_lock_ttl),
        # Credentials travel in the environment, never on the command line (`ps` shows that).
        LABEL_STUDIO_USERNAME=config.username,
        LABEL_STUDIO_PASSWORD=config.password,
        LABEL_STUDIO_USER_TOKEN=config.token,
    )


def server_command(config: LabelStudioConfig, executable: Path) -> list[str]:
    return [
        str(executable),
        "start",
        "--no-browser",
        "--host",
        "127.0.0.1",
        "--port",
        str(config.port),
        "--data-dir",
        str(config.data_dir),
        "--enable-legacy-api-token",
    ]


def is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return b"UP" in response.read()
    except OSError:
        return False


@dataclass
class LabelStudioServer:
    config: LabelStudioConfig
    process: subprocess.Popen
    log_path: Path
    started_in_seconds: float

    def restart(self) -> None:
        """Stop and start again on the same address and data (what an outage looks like)."""
        self.stop()
        fresh = start_server(self.config)
        self.process, self.started_in_seconds = fresh.process, fresh.started_in_seconds

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(config: LabelStudioConfig) -> LabelStudioServer:
    """Start the server in the background and wait until /health says UP."""
    if is_up(config.url):
        raise RuntimeError(f"something already answers on {config.url}; choose another port")
    executable = ensure_installed(config.venv)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.data_dir / "server.log"
    started = time.monotonic()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            server_command(config, executable),
            env=server_environment(config),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabelStudioServer(config, process, log_path, 0.0)
    while not is_up(config.url):
        if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_SECONDS:
            server.stop()
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(
                f"Label Studio did not come up on {config.url} within "
                f"{START_TIMEOUT_SECONDS:.0f} s (exit code {process.poll()}); "
                f"log {log_path}:\n{tail}"
            )
        time.sleep(1)
    server.started_in_seconds = time.monotonic() - started
    return server


def main() -> int:
    config = LabelStudioConfig.from_settings(Settings.from_env())
    server = start_server(config)
    print(
        f"Label Studio is up on {config.url} after {server.started_in_seconds:.0f} s "
        f"(admin {config.username}; password and token in {config.data_dir}, mode 0600). "
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
