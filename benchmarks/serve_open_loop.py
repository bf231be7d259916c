"""Open-loop load on `POST /classify`: requests start on a fixed schedule, whatever the answers,
at 50%, 80%, 100% and 120% of the capacity measured first, and each latency is counted from the
request's *scheduled* start (no coordinated omission: a server that falls behind pays for the
queue it built).

    python benchmarks/serve_open_loop.py                  # after `make demo`, 20 s per load
    python benchmarks/serve_open_loop.py --seconds 10 --model-version 3

The Bento is the one `benchmarks/serve_load.py` builds (the latest transformer version of
`request_classifier`, as shipped: adaptive batching on). Capacity is the closed-loop rate with
--concurrency requests in flight. Per load it prints the offered and answered rates, p50/p95/p99
of answered requests, and the count of 429s, 5xx and failed connections; the design targets
(0 5xx at every load; at 120% the excess shed as 429 and the admitted p99 within 2x its value at
50%) are printed beside them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.resources import BentoStore
from benchmarks.serve_load import (
    REQUEST_TIMEOUT_S,
    bento_server,
    check_answer,
    drive,
    load_arguments,
    load_texts,
    pick_version,
)
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.settings import Settings

LOADS = (0.5, 0.8, 1.0, 1.2)
TARGET_P99_GROWTH = 2.0


@dataclass
class OpenLoopRun:
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
    url: str, texts: list[str], load: float, capacity: float, seconds: float
) -> OpenLoopRun:
    """Start request i at `i / rate` seconds (rate = load x capacity), each in a task of its
    own, for `seconds`; wait for every answer (or its timeout) and measure it from its
    scheduled start."""
    rate = load * capacity
    run = OpenLoopRun(load, rate, seconds)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
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


def fmt(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "–"


def print_table(capacity: float, runs: list[OpenLoopRun]) -> None:
    print(f"\ncapacity (closed loop): {capacity:,.1f} req/s")
    print(
        f"{'load':>5} | {'offered/s':>9} | {'answered/s':>10} | {'drained s':>9} | "
        f"{'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'429':>5} | {'5xx':>5} | "
        f"{'failed':>6}"
    )
    for run in runs:
        failed = sum(n for s, n in run.statuses.items() if not s.isdigit())
        print(
            f"{run.load:>5.0%} | {run.offered_rate:>9.1f} | "
            f"{run.statuses['200'] / run.drained_seconds:>10.1f} | {run.drained_seconds:>9.1f} | "
            f"{fmt(run.percentile(50)):>7} | "
            f"{fmt(run.percentile(95)):>7} | {fmt(run.percentile(99)):>7} | "
            f"{run.statuses['429']:>5} | {run.server_errors:>5} | {failed:>6}"
        )
    low, high = runs[0], runs[-1]
    growth = (
        high.percentile(99) / low.percentile(99)
        if high.percentile(99) and low.percentile(99)
        else None
    )
    server_errors = sum(run.server_errors for run in runs)
    print(
        f"\n5xx at any load: {server_errors} (target 0); 429s at {high.load:.0%}: "
        f"{high.statuses['429']} (target: the excess is shed as 429); p99 at {high.load:.0%} / "
        f"p99 at {low.load:.0%}: {f'{growth:.1f}x' if growth else '–'} "
        f"(target ≤ {TARGET_P99_GROWTH:g}x)"
    )


def main() -> int:
    parser = load_arguments(__doc__.splitlines()[0])
    args = parser.parse_args()
    settings = Settings.from_env()
    torch.set_num_threads(args.threads)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    version = pick_version(registry, args.model_version)
    texts, source = load_texts(args.texts)
    packaged = BentoStore(home=str(settings.bentoml_home)).package(
        settings.tracking_uri, {REQUEST_CLASSIFIER: version.version}
    )
    bento = str(packaged["bento"])
    print(
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); {REQUEST_CLASSIFIER} "
        f"v{version.version} ({version.tags.get('kind', '?')}), {source}; {bento}; "
        f"{args.workers} worker(s), {args.threads} torch thread(s); {args.seconds:g} s per load",
        flush=True,
    )
    logs = settings.data_home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs = []
    with (
        tempfile.TemporaryDirectory() as prediction_logs,
        bento_server(
            settings,
            bento,
            logs / "serve_open_loop.log",
            Path(prediction_logs),
            True,
            args.workers,
            args.threads,
        ) as url,
    ):
        asyncio.run(check_answer(url, texts[0]))
        asyncio.run(drive(url, texts, args.concurrency, args.warm_up, None))
        capacity = asyncio.run(drive(url, texts, args.concurrency, args.seconds, None)).rate
        print(f"capacity: {capacity:,.1f} req/s", flush=True)
        for load in LOADS:
            run = asyncio.run(open_loop(url, texts, load, capacity, args.seconds))
            runs.append(run)
            print(f"    {load:.0%}: {dict(run.statuses)}", flush=True)
            time.sleep(2)  # let the queue drain between loads
    print_table(capacity, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
