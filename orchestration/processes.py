"""Local server processes the platform starts (BentoML, MLflow in tests): started in a session of
their own so that stopping one stops its workers too."""

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def stop_process_group(process: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM to the group `process` leads (it was started in a session of its own), wait until
    the whole group is gone, SIGKILL whatever is left after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


def log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def answers(url: str, timeout: float = 2) -> bool:
    """True once `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(
    process: subprocess.Popen,
    url: str,
    log: Path,
    timeout_s: float,
    what: str,
    failure_marker: str = "",
) -> float:
    """Seconds until `url` answered 200; a clear error (with the log's tail) if the process
    exits first, its log shows `failure_marker`, or `timeout_s` passes."""
    started = time.monotonic()
    while not answers(url):
        if failure_marker and failure_marker in log_tail(log, 200):
            stop_process_group(process)
            raise RuntimeError(f"{what} failed to start; its log ({log}) ends:\n{log_tail(log)}")
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode} before {url} answered; "
                f"its log ({log}) ends:\n{log_tail(log)}"
            )
        if time.monotonic() - started > timeout_s:
            stop_process_group(process)
            raise RuntimeError(
                f"{what} did not answer {url} within {timeout_s:.0f} s; its log ({log}) ends:\n"
                f"{log_tail(log)}"
            )
        time.sleep(0.25)
    return time.monotonic() - started
