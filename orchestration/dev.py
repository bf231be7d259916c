"""`make dev`: the Dagster UI and daemon (schedules and sensors run) on 127.0.0.1:3000 behind
a login (Caddy basic auth; a read-only UI for viewers on :3002: orchestration/ui_gateway.py),
with the Label Studio the annotation sensors talk to, the MLflow UI on :5000 (for the embedded
SQLite registry; a production registry has its own server) and the champion Bento behind its
front door (Caddy) on :3001, each new one `champion_bento` builds swapped in blue/green once it
passes its smoke test (see orchestration/serving.py); Ctrl-C stops them all."""

import signal
import subprocess
import sys
from pathlib import Path

from ml.security.encryption import generated_keys_into_environment
from ml.settings import PROJECT_ROOT, Settings, executable
from orchestration.celery_workers import start_workers
from orchestration.instance import open_instance
from orchestration.labelstudio import LabelStudioConfig, is_up, start_server
from orchestration.launch_recorder import start_launch_recorder
from orchestration.processes import stop_process_group
from orchestration.ui_gateway import ACCOUNTS_FILE, ENGINEER, VIEWER, start_ui_gateway

ENGINEER_PORT, VIEWER_PORT = 3000, 3002
"""Where people sign in: the UI, and the read-only UI."""
ENGINEER_UPSTREAM, VIEWER_UPSTREAM, LAUNCH_RECORDER = 3100, 3101, 3103
"""The two webservers and the launch recorder, on internal ports behind the login."""
GATEWAY_ADMIN_PORT = 2020


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # `kill` stops everything this started, as Ctrl-C does (the servers run in sessions of
    # their own, out of reach of a signal to this process's group).
    signal.signal(signal.SIGTERM, _interrupted)
    settings = Settings.from_env()
    generated_keys_into_environment(settings.secrets_dir)  # the logs' keys, for every process
    open_instance(settings)
    server = None
    if is_up(settings.label_studio_url):
        print(f"Label Studio already runs at {settings.label_studio_url}", flush=True)
    else:
        server = start_server(LabelStudioConfig.from_settings(settings))
        print(
            f"Label Studio is up at {server.config.url} (admin: {server.config.username})",
            flush=True,
        )
    mlflow_ui = None
    if not settings.tracking_uri.startswith(("http://", "https://")):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
        mlflow = executable("mlflow")
        where = ["--host", "127.0.0.1", "--port", "5000"]
        where += ["--backend-store-uri", settings.tracking_uri]
        mlflow_ui = subprocess.Popen([mlflow, "ui", *where])
        print("MLflow UI on http://127.0.0.1:5000", flush=True)
    workers = []
    if settings.executor == "celery":  # the production profile: steps run on Celery workers
        workers = start_workers(settings, settings.celery_workers)
        for worker in workers:
            print(f"Celery worker {worker.name} takes steps ({worker.log_path})", flush=True)
    serving = subprocess.Popen([sys.executable, "-m", "orchestration.serving"], cwd=PROJECT_ROOT)
    print(
        f"Serving the champion Bento on http://127.0.0.1:{settings.serving_port} "
        "(503 until one is built)",
        flush=True,
    )
    command = [
        executable("dagster"),
        "dev",
        "-w",
        "workspace.yaml",
        "-h",
        "127.0.0.1",
        "-p",
        str(ENGINEER_UPSTREAM),
    ]
    read_only = subprocess.Popen(
        [
            executable("dagster-webserver"),
            "--read-only",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(VIEWER_UPSTREAM),
        ],
        cwd=PROJECT_ROOT,
    )
    recorder = start_launch_recorder(
        LAUNCH_RECORDER,
        f"http://127.0.0.1:{ENGINEER_UPSTREAM}",
        settings.data_home / "logs" / "launch-recorder.log",
    )
    gateway = start_ui_gateway(
        settings,
        {ENGINEER: (ENGINEER_PORT, ENGINEER_UPSTREAM), VIEWER: (VIEWER_PORT, VIEWER_UPSTREAM)},
        GATEWAY_ADMIN_PORT,
        LAUNCH_RECORDER,
    )
    print(
        f"Dagster UI on http://127.0.0.1:{ENGINEER_PORT} (accounts "
        f"{', '.join(settings.dagster_engineers)}: run jobs; each run records who launched it) "
        f"and read-only on http://127.0.0.1:{VIEWER_PORT} (accounts "
        f"{', '.join(settings.dagster_viewers)}); passwords in "
        f"{settings.secrets_dir / ACCOUNTS_FILE}",
        flush=True,
    )
    try:
        return subprocess.call(command, cwd=PROJECT_ROOT)
    except KeyboardInterrupt:
        return 0
    finally:
        gateway.stop()
        for worker in workers:
            worker.stop()
        stop_process_group(recorder)
        read_only.terminate()
        serving.terminate()
        serving.wait(timeout=60)
        if mlflow_ui is not None:
            mlflow_ui.terminate()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
