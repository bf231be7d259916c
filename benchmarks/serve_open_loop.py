"""Open-loop load on `POST /classify`: requests start on a fixed schedule, whatever the answers,
and each latency is counted from the request's *scheduled* start (no coordinated omission: a
server that falls behind pays for the queue it built). One run, side by side on one Bento that
serves the champion and a challenger:

    python benchmarks/serve_open_loop.py                  # after `make demo`, 20 s per load
    python benchmarks/serve_open_loop.py --seconds 10 --limits 16,8,32

  1. capacity: the closed-loop rate with --concurrency requests in flight, direct to the Bento;
  2. direct, admission control at the first of --limits, at 50%, 80%, 100% and 120% of it;
  3. through the front door (Caddy, as `make serve` runs it) at 50% and 80%: the proxy's cost;
  4. shadow on (a release in shadow: the challenger scores a sample of champion traffic off
     the request path) at 80% and 100%: what it adds to the champion's p99;
  5. every other of --limits: the Bento restarted with it, at 100% and 120% (the tuning).

The Bento is the latest transformer version of `request_classifier` (or --model-version) with
its challenger beside it (the registry's `challenger`, else the version before it). The server
keeps its request log and release state in a temporary data home: nothing is written where
the platform's own release state is. Per run it prints the offered and answered rates,
p50/p95/p99 of answered requests, and the count of 429s, 5xx and failed connections; then the
design targets beside the measured ratios: 0 5xx at every load; at 120% the excess shed as 429
and the admitted p99 within 2x its value at 50%; the front door adds ≤ 1 ms at p50; shadow adds
≤ 10% to the champion's p99.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.resources import BentoStore
from benchmarks.serve_load import (
    REQUEST_TIMEOUT_S,
    api_key_headers,
    check_answer,
    drive,
    free_port,
    load_arguments,
    load_texts,
    pick_version,
)
from ml.lifecycle.aliases import CHALLENGER
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import ModelVersion, Registry
from ml.lifecycle.release import ReleasePolicy, start_release, write_release_state
from ml.monitoring.prediction_log import read_predictions
from ml.settings import Settings
from orchestration.front_door import start_front_door
from orchestration.serving import BentoServer, start_bento_server

LADDER = (0.5, 0.8, 1.0, 1.2)
FRONT_DOOR_LOADS = (0.5, 0.8)
SHADOW_LOADS = (0.8, 1.0)
LIMIT_LOADS = (1.0, 1.2)
TARGET_P99_GROWTH = 2.0
TARGET_FRONT_DOOR_P50_MS = 1.0
TARGET_SHADOW_P99_GROWTH = 1.10


@dataclass
class OpenLoopRun:
    way: str
    load: float
    offered_rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    drained_seconds: float = 0.0
    """From the first scheduled start to the last answer (past `seconds` when a queue built)."""

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))


async def open_loop(
    way: str, url: str, texts: list[str], load: float, capacity: float, seconds: float
) -> OpenLoopRun:
    """Start request i at `i / rate` seconds (rate = load x capacity), each in a task of its
    own, for `seconds`; wait for every answer (or its timeout) and measure it from its
    scheduled start."""
    rate = load * capacity
    run = OpenLoopRun(way, load, rate, seconds)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=api_key_headers()
    ) as session:
        started = time.perf_counter()

        async def one(scheduled: float, text: str) -> None:
            try:
                async with session.post(f"{url}/classify", json={"texts": text}) as response:
                    await response.read()
                    status = str(response.status)
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                status = type(error).__name__
            run.statuses[status] += 1
            if status == "200":
                run.latencies_ms.append(1000 * (time.perf_counter() - scheduled))

        tasks = []
        for i in range(int(rate * seconds)):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled, texts[i % len(texts)])))
        await asyncio.gather(*tasks)
        run.drained_seconds = time.perf_counter() - started
    return run


def fmt(value: float | None, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if value is not None else "–"


def print_table(capacity: float, runs: list[OpenLoopRun]) -> None:
    print(f"\ncapacity (closed loop, direct): {capacity:,.1f} req/s")
    print(
        f"{'way':<22} | {'load':>5} | {'offered/s':>9} | {'answered/s':>10} | "
        f"{'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'429':>5} | {'5xx':>5} | {'failed':>6}"
    )
    for run in runs:
        failed = sum(n for s, n in run.statuses.items() if not s.isdigit())
        print(
            f"{run.way:<22} | {run.load:>5.0%} | {run.offered_rate:>9.1f} | "
            f"{run.statuses['200'] / run.drained_seconds:>10.1f} | "
            f"{fmt(run.percentile(50), 1):>7} | {fmt(run.percentile(95)):>7} | "
            f"{fmt(run.percentile(99)):>7} | {run.statuses['429']:>5} | "
            f"{run.server_errors:>5} | {failed:>6}"
        )


def find(runs: list[OpenLoopRun], way: str, load: float) -> OpenLoopRun | None:
    return next((r for r in runs if r.way == way and r.load == load), None)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_targets(runs: list[OpenLoopRun], direct: str, limits: list[int]) -> None:
    server_errors = sum(run.server_errors for run in runs)
    print(f"\n5xx at any load, any way: {server_errors} (target 0)")
    for limit in limits:
        way = direct if limit == limits[0] else f"direct, limit {limit}"
        low = find(runs, direct, 0.5)
        high = find(runs, way, 1.2)
        if high is None or low is None:
            continue
        growth = ratio(high.percentile(99), low.percentile(99))
        print(
            f"limit {limit}: at 120% {high.statuses['429']} shed as 429 of "
            f"{sum(high.statuses.values())}; p99 at 120% / p99 at 50%: {fmt(growth, 1)}x "
            f"(target: excess shed, ≤ {TARGET_P99_GROWTH:g}x)"
        )
    for load in FRONT_DOOR_LOADS:
        proxied, plain = find(runs, "front door", load), find(runs, direct, load)
        if proxied and plain:
            added = proxied.percentile(50) - plain.percentile(50)
            print(
                f"front door at {load:.0%}: p50 {fmt(proxied.percentile(50), 1)} vs "
                f"{fmt(plain.percentile(50), 1)} ms direct: {added:+.1f} ms "
                f"(target ≤ {TARGET_FRONT_DOOR_P50_MS:g} ms)"
            )
    for load in SHADOW_LOADS:
        shadowed, plain = find(runs, "shadow on", load), find(runs, direct, load)
        if shadowed and plain:
            growth = ratio(shadowed.percentile(99), plain.percentile(99))
            print(
                f"shadow at {load:.0%}: champion p99 {fmt(shadowed.percentile(99))} vs "
                f"{fmt(plain.percentile(99))} ms without: {fmt(growth, 2)}x "
                f"(target ≤ {TARGET_SHADOW_P99_GROWTH:.2f}x)"
            )


def pick_challenger(registry: Registry, champion: ModelVersion, wanted: str) -> ModelVersion:
    """--challenger-version, else the registry's challenger, else the version before."""
    if wanted:
        return registry.version(REQUEST_CLASSIFIER, wanted)
    challenger = registry.by_alias(REQUEST_CLASSIFIER, CHALLENGER)
    if challenger is not None and challenger.version != champion.version:
        return challenger
    earlier = [
        v for v in registry.versions(REQUEST_CLASSIFIER) if int(v.version) < int(champion.version)
    ]
    if not earlier:
        raise SystemExit(
            f"{REQUEST_CLASSIFIER} has no version before v{champion.version} to serve as the "
            "challenger: pass --challenger-version"
        )
    return earlier[-1]


def serve(
    settings: Settings, bento: str, logs: Path, limit: int, workers: int, threads: int
) -> BentoServer:
    server = start_bento_server(
        settings,
        bento,
        free_port(),
        logs / f"serve_open_loop-limit{limit}.log",
        MLOPS_SERVING_WORKERS=str(workers),
        MLOPS_SERVING_TORCH_THREADS=str(threads),
        MLOPS_SERVING_MAX_IN_FLIGHT_CLASSIFY=str(limit),
        MLOPS_PREDICTION_LOG_DIR=str(settings.prediction_log_dir),
    )
    print(f"    limit {limit}: ready in {server.started_in_seconds:.1f} s", flush=True)
    return server


def measure(
    runs: list[OpenLoopRun],
    way: str,
    url: str,
    texts: list[str],
    load: float,
    capacity: float,
    seconds: float,
) -> None:
    run = asyncio.run(open_loop(way, url, texts, load, capacity, seconds))
    runs.append(run)
    print(f"    {way} at {load:.0%}: {dict(run.statuses)}", flush=True)
    time.sleep(2)  # let the queue drain between loads


def main() -> int:
    parser = load_arguments(__doc__.splitlines()[0])
    parser.add_argument("--challenger-version", default="", help="the challenger beside it")
    parser.add_argument(
        "--limits",
        default="16,8,32",
        help="max in-flight /classify per worker, first is the default",
    )
    args = parser.parse_args()
    limits = [int(x) for x in args.limits.split(",")]
    os.environ.setdefault("BENTOML_HOME", str(Settings.from_env().bentoml_home))
    settings = Settings.from_env()
    torch.set_num_threads(args.threads)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    champion = pick_version(registry, args.model_version)
    challenger = pick_challenger(registry, champion, args.challenger_version)
    texts, source = load_texts(args.texts)
    packaged = BentoStore(home=str(settings.bentoml_home)).package(
        settings.tracking_uri,
        {REQUEST_CLASSIFIER: champion.version},
        {REQUEST_CLASSIFIER: challenger.version},
    )
    bento = str(packaged["bento"])
    print(
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); {REQUEST_CLASSIFIER} "
        f"v{champion.version} ({champion.tags.get('kind', '?')}), challenger "
        f"v{challenger.version} ({challenger.tags.get('kind', '?')}), {source}; {bento}; "
        f"{args.workers} worker(s), {args.threads} torch thread(s); {args.seconds:g} s per load",
        flush=True,
    )
    runs: list[OpenLoopRun] = []
    direct = f"direct, limit {limits[0]}"
    with tempfile.TemporaryDirectory() as home:
        served = settings.moved_to(Path(home))
        logs = served.data_home / "logs"
        logs.mkdir(parents=True)
        server = serve(served, bento, logs, limits[0], args.workers, args.threads)
        front_door = start_front_door(served, free_port(), free_port())
        try:
            front_door.switch_to(server.port)
            asyncio.run(check_answer(server.url, texts[0]))
            # Closed loop within the limit: past it, 429s come back at once and the clients
            # spin on them, taking the CPU the server needs.
            in_flight = min(args.concurrency, limits[0] * args.workers)
            asyncio.run(drive(server.url, texts, in_flight, args.warm_up, None))
            capacity = asyncio.run(drive(server.url, texts, in_flight, args.seconds, None)).rate
            print(f"capacity: {capacity:,.1f} req/s ({in_flight} in flight)", flush=True)
            for load in LADDER:
                measure(runs, direct, server.url, texts, load, capacity, args.seconds)
            for load in FRONT_DOOR_LOADS:
                measure(runs, "front door", front_door.url, texts, load, capacity, args.seconds)
            release = start_release(
                REQUEST_CLASSIFIER,
                challenger.version,
                champion.version,
                ReleasePolicy(),
                "serve_open_loop",
            )
            write_release_state(served.release_state_path, release)
            time.sleep(1)  # each worker reads the state within half a second
            shadow_from = datetime.now(UTC)
            for load in SHADOW_LOADS:
                measure(runs, "shadow on", server.url, texts, load, capacity, args.seconds)
            served.release_state_path.unlink()
            time.sleep(3)  # the prediction log is flushed every 2 s
            scored = read_predictions(
                served.prediction_log_dir, shadow_from, datetime.now(UTC), include_shadow=True
            ).filter(pl.col("variant") == "shadow")
            answered = sum(r.statuses["200"] for r in runs if r.way == "shadow on")
            print(
                f"    shadow scored {scored.height:,} of {answered:,} champion answers "
                f"(share {release.shadow_share:g})",
                flush=True,
            )
        finally:
            front_door.stop()
            server.stop()
        for limit in limits[1:]:
            server = serve(served, bento, logs, limit, args.workers, args.threads)
            try:
                asyncio.run(
                    drive(
                        server.url,
                        texts,
                        min(args.concurrency, limit * args.workers),
                        args.warm_up,
                        None,
                    )
                )
                for load in LIMIT_LOADS:
                    way = f"direct, limit {limit}"
                    measure(runs, way, server.url, texts, load, capacity, args.seconds)
            finally:
                server.stop()
    print_table(capacity, runs)
    print_targets(runs, direct, limits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
