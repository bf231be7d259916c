"""The serving supervisor's rollout record: one JSON line per outcome (a switch to a new Bento,
a restart, a Bento that failed to start or its smoke test) in `logs/serving-rollouts.jsonl`
under the data home. The supervisor appends; `serving_rollout_sensor` reads what is new."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

ROLLOUT_LOG = "serving-rollouts.jsonl"
SWITCHED = "switched"
RESTARTED = "restarted"
FAILED_TO_START = "failed_to_start"
FAILED_SMOKE_TEST = "failed_smoke_test"


def rollout_log(data_home: Path) -> Path:
    return data_home / "logs" / ROLLOUT_LOG


def append_rollout(
    data_home: Path,
    bento: str,
    outcome: str,
    reason: str,
    port: int | None,
    previous: str | None,
) -> dict[str, object]:
    """Append one outcome; the record written."""
    entry: dict[str, object] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bento": bento,
        "outcome": outcome,
        "reason": reason,
        "port": port,
        "previous": previous,
    }
    path = rollout_log(data_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry


def rollouts_after(path: Path, offset: int) -> tuple[list[dict[str, object]], int]:
    """The rollout records written after byte `offset` of `path`, and the offset after the last
    whole line (a line being written is read next time; a log replaced since is read whole)."""
    if not path.exists():
        return [], 0
    if path.stat().st_size < offset:
        offset = 0
    with path.open("rb") as handle:
        handle.seek(offset)
        written = handle.read()
    whole = written[: written.rfind(b"\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()], offset + len(whole)
