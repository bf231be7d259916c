"""`make dev`: the Dagster UI and daemon (schedules and sensors run) on 127.0.0.1:3000, with the
Label Studio the annotation sensors talk to; Ctrl-C stops both."""

import subprocess
import sys
from pathlib import Path

from ml.settings import PROJECT_ROOT, Settings
from orchestration.instance import open_instance
from orchestration.labelstudio import LabelStudioConfig, is_up, start_server


def main() -> int:
    settings = Settings.from_env()
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
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3000"]
    try:
        return subprocess.call(command, cwd=PROJECT_ROOT)
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
