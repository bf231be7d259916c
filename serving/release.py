"""The service's half of a staged release: which variant answers a request, the log of every
request's variant, status and latency, and shadow scoring off the request path.

`ReleaseRouter` is an ASGI middleware inside `HttpContract` (which has set the request id): on
a model endpoint it reads the release state (`ml.lifecycle.release`, re-read when the file
changes, no restart) and sends a stable share of request ids to the challenger's internal route;
clients never call those routes themselves (404). Every request to a model endpoint leaves an
outcome record, so error rates and latencies are measured per variant where clients see them.

`OffRequestQueue` is a thread of the worker for what an answer must not wait for: it runs the
challenger on a sample of champion answers (logged with the variant `shadow`, never returned)
and keeps served images (`serving.served_images`); a full queue skips (and counts) the work
instead of slowing the champion.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ml.lifecycle.release import (
    CANARY,
    CHALLENGER_VARIANT,
    CHAMPION_VARIANT,
    OFF,
    ReleaseState,
    read_release_states,
    variant_of,
)
from ml.monitoring.prediction_log import PredictionLogWriter, now
from serving.http_contract import (
    INTERNAL_PREFIX,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    current_request_id,
)

LOGGER = logging.getLogger("mlops.serving")


@dataclass(frozen=True)
class Route:
    """A public model endpoint, the model behind it and where its challenger answers."""

    model_name: str
    champion_version: str
    challenger_version: str
    challenger_path: str


class ReleaseStates:
    """The release state file as a worker sees it: stat at most every `interval_s`, parsed
    again only when it changed; a broken file keeps the last good state and says so."""

    def __init__(self, path: Path, interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._checked = float("-inf")
        self._stamp: tuple[int, int, int] | None = None
        self._states: dict[str, ReleaseState] = {}

    def get(self, model_name: str) -> ReleaseState | None:
        moment = time.monotonic()
        if moment - self._checked >= self.interval_s:
            self._checked = moment
            self._refresh()
        return self._states.get(model_name)

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._states = None, {}
            return
        # The state is written by rename: a new inode, even within the file system's mtime tick.
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            self._states = read_release_states(self.path)
        except (OSError, ValueError, TypeError) as error:
            LOGGER.error("release state %s unreadable, keeping the last one: %s", self.path, error)
            return
        self._stamp = stamp


def releases_this_bento(state: ReleaseState | None, route: Route) -> bool:
    """Whether `state` is a live release of the very champion and challenger this Bento serves:
    a state about other versions (an older or newer Bento) routes nothing here."""
    return (
        state is not None
        and state.stage != OFF
        and bool(route.challenger_version)
        and state.challenger_version == route.challenger_version
        and state.champion_version == route.champion_version
    )


def canary_variant(state: ReleaseState | None, route: Route, request_id: str) -> str:
    """Who answers `request_id`: the challenger only for the canary share of a release of this
    Bento's challenger."""
    if not releases_this_bento(state, route) or state.stage != CANARY:
        return CHAMPION_VARIANT
    return variant_of(request_id, state.canary_share)


def shadow_share(state: ReleaseState | None, route: Route) -> float:
    """The share of champion answers the challenger scores in shadow (0 without a release)."""
    return state.shadow_share if releases_this_bento(state, route) else 0.0


_outcome_logs: dict[Path, PredictionLogWriter] = {}
_outcome_lock = threading.Lock()


def outcome_log(root: Path, flush_seconds: float = 2.0) -> PredictionLogWriter:
    """This worker's writer of request outcomes (one per process and folder)."""
    with _outcome_lock:
        if root not in _outcome_logs:
            _outcome_logs[root] = PredictionLogWriter(
                root, f"router{os.getpid()}", flush_seconds=flush_seconds
            )
        return _outcome_logs[root]


def close_outcome_logs() -> None:
    """Flush what the router logged (the service's shutdown hook)."""
    with _outcome_lock:
        writers = list(_outcome_logs.values())
        _outcome_logs.clear()
    for writer in writers:
        with contextlib.suppress(Exception):
            writer.close()


class ReleaseRouter:
    """ASGI middleware: see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[str, Route],
        state_path: str,
        outcome_dir: str,
        flush_seconds: float = 2.0,
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.states = ReleaseStates(Path(state_path))
        self.outcome_dir = Path(outcome_dir)
        self.flush_seconds = flush_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(INTERNAL_PREFIX):
            await _not_found(send)
            return
        route = self.routes.get(path) if scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        request_id = current_request_id() or ""
        variant = canary_variant(self.states.get(route.model_name), route, request_id)
        version = route.champion_version
        if variant == CHALLENGER_VARIANT:
            version = route.challenger_version
            scope = {
                **scope,
                "path": route.challenger_path,
                "raw_path": route.challenger_path.encode(),
            }
        status = {"code": 500}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, watch)
        finally:
            outcome_log(self.outcome_dir, self.flush_seconds).log(
                [
                    {
                        "request_id": request_id,
                        "served_at": now().isoformat(),
                        "endpoint": path.strip("/"),
                        "model_name": route.model_name,
                        "variant": variant,
                        "model_version": version,
                        "status": status["code"],
                        "latency_ms": (time.perf_counter() - started) * 1000,
                    }
                ]
            )


async def _not_found(send: Send) -> None:
    body = json.dumps({"detail": "no such route"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class OffRequestQueue:
    """One thread per worker doing what an answer must not wait for (shadow scoring, keeping
    served images). `work(items)` does it; `submit` never blocks: a full queue skips the items
    and tells `on_skip` how many."""

    def __init__(
        self,
        work: Callable[[list], None],
        max_queued: int,
        on_skip: Callable[[int], None],
        name: str,
    ):
        self._work = work
        self._on_skip = on_skip
        self.name = name
        self._queue: queue.Queue[list | None] = queue.Queue(maxsize=max_queued)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: list) -> None:
        try:
            self._queue.put_nowait(items)
        except queue.Full:
            self._on_skip(len(items))

    def _run(self) -> None:
        while (items := self._queue.get()) is not None:
            try:
                self._work(items)
            except Exception:  # a failing challenger must not stop this thread, nor serving
                LOGGER.exception("%s of %d items failed", self.name, len(items))

    def close(self, timeout_s: float = 10) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout=timeout_s)
