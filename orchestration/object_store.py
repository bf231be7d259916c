"""An S3-compatible object store on this machine: `rclone serve s3` over a folder, objects kept on
disk (`make object-store`; the tests start and stop their own). Production points the same
variables at any S3 endpoint instead.

Clients find it through the standard variables: `AWS_ENDPOINT_URL_S3` (s3fs, boto3),
`MLFLOW_S3_ENDPOINT_URL` (MLflow's S3 artifact repository), `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY`. The keys are generated once into the secrets folder (0600) and reach
rclone through its environment, never its command line.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ml.security.secret_files import read_private_file, write_private_file
from ml.settings import Settings, environment_with, executable
from orchestration.processes import log_tail, stop_process_group

CREDENTIALS_FILE = "object-store.json"
BUCKET = "mlops"
"""The platform's bucket: one prefix per kind of object (drops/, mlflow/, …)."""
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class ObjectStoreKeys:
    access_key: str
    secret_key: str

    def client_environment(self, endpoint: str) -> dict[str, str]:
        """What a client of the store at `endpoint` is started with (or runs under)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def object_store_keys(secrets_dir: Path) -> ObjectStoreKeys:
    """The store's access key pair: generated once, then read back."""
    path = secrets_dir / CREDENTIALS_FILE
    if not path.exists():
        keys = ObjectStoreKeys(f"mlops-{secrets.token_hex(8)}", secrets.token_urlsafe(32))
        write_private_file(path, json.dumps(asdict(keys)))
    return ObjectStoreKeys(**json.loads(read_private_file(path)))


@dataclass
class ObjectStoreServer:
    root: Path
    port: int
    keys: ObjectStoreKeys
    process: subprocess.Popen
    log_path: Path
    started_in_seconds: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_environment(self) -> dict[str, str]:
        return self.keys.client_environment(self.url)

    def stop(self) -> None:
        stop_process_group(self.process)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_object_store(
    root: Path,
    port: int,
    keys: ObjectStoreKeys,
    log_path: Path,
    buckets: tuple[str, ...] = (BUCKET,),
) -> ObjectStoreServer:
    """`rclone serve s3` of `root` (each top-level folder a bucket) on 127.0.0.1:`port`, once it
    accepts connections; a clear error with its log's tail if it exits or never listens."""
    for bucket in buckets:
        (root / bucket).mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [executable("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}", str(root)],
            # rclone reads a string-list flag from its variable as CSV: the pair is one field.
            env=environment_with(RCLONE_AUTH_KEY=f'"{keys.access_key},{keys.secret_key}"'),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while not _listening(port):
        if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_SECONDS:
            stop_process_group(process)
            raise RuntimeError(
                f"the object store (rclone serve s3 on port {port}) did not start; its log "
                f"({log_path}) ends:\n{log_tail(log_path)}"
            )
        time.sleep(0.1)
    return ObjectStoreServer(root, port, keys, process, log_path, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the object store on this machine (rclone)")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    server = start_object_store(
        settings.data_home / "object_store",
        args.port,
        object_store_keys(settings.secrets_dir),
        settings.data_home / "logs" / "object-store.log",
    )
    print(f"S3-compatible store on {server.url}, bucket {BUCKET!r}, objects in {server.root}")
    keys_file = settings.secrets_dir / CREDENTIALS_FILE
    print(f"keys: {keys_file} (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for clients)")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
