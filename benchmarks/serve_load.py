"""Serving throughput of `POST /classify` under fixed concurrency: the BentoML service with and
without adaptive batching, a plain one-request-at-a-time HTTP server, and the model's own
batched throughput, on the same model version and the same texts, one after another in one run.

    python benchmarks/serve_load.py                       # after `make demo`: 32 clients, 20 s
    python benchmarks/serve_load.py --seconds 5 --concurrency 16 --model-version 3

The model is the latest `transformer` version of `request_classifier` in the registry (or
--model-version), packaged as a Bento (`python -m serving.package`, in its own process). Ways:

  (a) `bentoml serve` of that Bento, adaptive batching on (as shipped);
  (b) the same Bento with MLOPS_SERVING_BATCHING=off;
  (c) a plain `http.server.HTTPServer` (not threading) in its own process that loads the same
      MLflow version and answers each request alone, one text per model call, in the same JSON;
  (d) the loaded model's predictor called in-process on batches of 64 texts: texts/s, no HTTP
      (the upper limit the service can approach).

For (a)-(c) an asyncio + aiohttp load generator keeps exactly --concurrency requests in flight,
one text each, for a warm-up (not counted) and then --seconds; it records each request's
latency, and counts non-200 answers and exceptions as errors. Only one way runs at a time: each
server is stopped before the next starts. The load generator runs on the same machine and shares
its cores with the server, and so does anything else running: the 1-minute load average before
the run is printed. On a small CPU machine torch's intra-op threads (one per core by default)
fight that load: every way runs with --threads torch threads (default 1; the service's own
default is the cores shared among its workers, MLOPS_SERVING_TORCH_THREADS).
Prints requests/s, p50/p95/p99 latency and errors per way, then the ratios a/b, a/c and a/d
beside the design targets (a/c ≥ 4× req/s at equal or better p99, a/d ≥ 0.8×).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd
import polars as pl
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.resources import BentoStore
from ml.devices import pick_device
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import ModelVersion, Registry
from ml.security.redaction import Redactor
from ml.settings import PROJECT_ROOT, Settings
from ml.synthetic.requests import generate_requests
from orchestration.processes import stop_process_group, wait_until_ready
from orchestration.serving import start_bento_server
from serving.api_keys import platform_credentials

RAW_BATCH_SIZE = 64
GENERATED_TEXTS = 2000
REQUEST_TIMEOUT_S = 120.0
PLAIN_START_TIMEOUT_S = 240.0
TARGET_A_OVER_C = 4.0
TARGET_A_OVER_D = 0.8
BAR = "{desc}: {bar} {n:.0f}/{total:.0f} s {postfix}"


@dataclass
class Measured:
    """One way's result: a rate (requests/s; texts/s for the in-process way) and latencies."""

    label: str
    rate: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    note: str = ""

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


# --- the texts and the model ----------------------------------------------------------------


def load_texts(path: Path | None) -> tuple[list[str], str]:
    """(texts, where they came from): a CSV's non-blank `text` column, or generated requests."""
    if path is None:
        now = datetime.now(UTC)
        texts = generate_requests(GENERATED_TEXTS, seed=11, start=now - timedelta(days=1), end=now)
        return texts["text"].to_list(), f"{GENERATED_TEXTS:,} generated requests (seed 11)"
    frame = pl.read_csv(path, infer_schema=False)
    if "text" not in frame.columns:
        raise SystemExit(f"{path}: no `text` column (columns: {', '.join(frame.columns)})")
    texts = [t for t in frame["text"].to_list() if t and t.strip()]
    if not texts:
        raise SystemExit(f"{path}: column `text` holds no non-blank text")
    return texts, f"{len(texts):,} texts from {path}"


def pick_version(registry: Registry, wanted: str) -> ModelVersion:
    """--model-version when given, else the latest complete `transformer` version."""
    versions = registry.versions(REQUEST_CLASSIFIER)
    if wanted:
        found = [v for v in versions if v.version == wanted]
        if not found:
            known = ", ".join(v.version for v in versions) or "none"
            raise SystemExit(
                f"{REQUEST_CLASSIFIER} has no complete version {wanted} in {registry.tracking_uri} "
                f"(complete versions: {known})"
            )
        return found[0]
    transformers = [v for v in versions if v.tags.get("kind") == "transformer"]
    if not transformers:
        raise SystemExit(
            f"no transformer version of {REQUEST_CLASSIFIER} in {registry.tracking_uri}: run "
            "`make demo` first (it trains and registers one), or pass --model-version"
        )
    return transformers[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- way (c): the plain server ----------------------------------------------------------------


def serve_one_at_a_time(settings: Settings, version: str, port: int, threads: int) -> None:
    """A single-threaded HTTPServer answering /classify like the service, one text per model
    call (runs in its own process, started by `plain_server`)."""
    from pydantic import TypeAdapter

    torch.set_num_threads(threads)

    from serving.service import SETTINGS, Classification, ScoredIntent

    model = Registry(settings.tracking_uri, settings.artifact_root).load(
        REQUEST_CLASSIFIER, version
    )
    classes = list(model.metadata.metadata["classes"])
    answers = TypeAdapter(list[Classification])

    def classify(text: str) -> Classification:
        predicted = model.predict(pd.DataFrame({"text": [text]}))
        probabilities = np.asarray(predicted["probabilities"].iloc[0])
        best = np.argsort(-probabilities)[: SETTINGS.top_k]
        return Classification(
            request_id=uuid.uuid4().hex,
            intent=str(predicted["intent"].iloc[0]),
            confidence=float(predicted["confidence"].iloc[0]),
            top_k=[
                ScoredIntent(intent=classes[i], probability=float(probabilities[i])) for i in best
            ],
            model_version=version,
        )

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.reply(200 if self.path == "/readyz" else 404, b'"ok"')

        def do_POST(self) -> None:
            if self.path != "/classify":
                self.reply(404, b'"not found"')
                return
            try:
                texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
                texts = [texts] if isinstance(texts, str) else list(texts)
            except (KeyError, TypeError, ValueError) as error:
                self.reply(400, json.dumps(f"texts: {error}").encode())
                return
            self.reply(200, answers.dump_json([classify(text) for text in texts]))

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(HTTPServer):
        request_queue_size = 256  # the default backlog of 5 drops connections under load

    print(f"plain server for {REQUEST_CLASSIFIER} v{version} on port {port}", flush=True)
    Server(("127.0.0.1", port), Handler).serve_forever()


@contextlib.contextmanager
def plain_server(version: str, port: int, log_path: Path, threads: int) -> Iterator[str]:
    """This file run with --serve-plain in a process of its own; yields its URL."""
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-plain", str(port)]
    command += ["--threads", str(threads)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*command, "--model-version", version],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(
            process, f"{url}/readyz", log_path, PLAIN_START_TIMEOUT_S, "the plain HTTP server"
        )
        yield url
    finally:
        stop_process_group(process)


@contextlib.contextmanager
def bento_server(
    settings: Settings,
    bento: str,
    log_path: Path,
    log_dir: Path,
    batching: bool,
    workers: int,
    threads: int,
    concurrency: int,
) -> Iterator[str]:
    server = start_bento_server(
        settings,
        bento,
        free_port(),
        log_path,
        MLOPS_SERVING_BATCHING="on" if batching else "off",
        MLOPS_SERVING_WORKERS=str(workers),
        MLOPS_SERVING_TORCH_THREADS=str(threads),
        MLOPS_PREDICTION_LOG_DIR=str(log_dir),
        # Closed loop: every request in flight is admitted (admission control is measured by
        # serve_open_loop.py).
        MLOPS_SERVING_MAX_IN_FLIGHT_CLASSIFY=str(max(16, concurrency)),
    )
    print(f"    ready in {server.started_in_seconds:.1f} s", flush=True)
    try:
        yield server.url
    finally:
        server.stop()


# --- the load generator -----------------------------------------------------------------------


def api_key_headers() -> dict[str, str]:
    """The platform's application key (the plain server of way c ignores it)."""
    return platform_credentials(Settings.from_env().secrets_dir).headers()


async def check_answer(url: str, text: str) -> None:
    """One request before the load: a list of one answer with the service's fields."""
    async with (
        aiohttp.ClientSession(headers=api_key_headers()) as session,
        session.post(f"{url}/classify", json={"texts": text}) as response,
    ):
        body = await response.text()
    answer = json.loads(body) if response.status == 200 else None
    expected = {"request_id", "intent", "confidence", "top_k", "model_version", "variant"}
    if not (isinstance(answer, list) and len(answer) == 1 and set(answer[0]) == expected):
        raise RuntimeError(
            f"{url}/classify answered {response.status} {body[:300]!r}; expected a list of one "
            f"answer with {sorted(expected)}"
        )


async def drive(
    url: str, texts: list[str], concurrency: int, seconds: float, label: str | None
) -> Measured:
    """Exactly `concurrency` clients, each sending its next text as soon as its previous
    request is answered, until `seconds` have passed; requests in flight then are finished."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    cursor = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=api_key_headers()
    ) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                text = texts[next(cursor) % len(texts)]
                sent = time.perf_counter()
                try:
                    async with session.post(f"{url}/classify", json={"texts": text}) as response:
                        await response.read()
                        problem = "" if response.status == 200 else f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError, OSError) as error:
                    problem = type(error).__name__
                if problem:
                    errors[problem] += 1
                else:
                    latencies.append(1000 * (time.perf_counter() - sent))

        async def show_progress(bar: tqdm) -> None:
            while True:
                await asyncio.sleep(0.5)
                bar.n = min(seconds, round(time.perf_counter() - started, 1))
                bar.set_postfix(requests=len(latencies), errors=sum(errors.values()))

        with tqdm(
            total=seconds, desc=label, bar_format=BAR, disable=label is None, leave=False
        ) as bar:
            progress = asyncio.create_task(show_progress(bar))
            await asyncio.gather(*(client() for _ in range(concurrency)))
            progress.cancel()
        elapsed = time.perf_counter() - started
    return Measured(label or "", len(latencies) / elapsed, latencies, errors)


def measure_http(url: str, texts: list[str], args: argparse.Namespace, label: str) -> Measured:
    asyncio.run(check_answer(url, texts[0]))
    asyncio.run(drive(url, texts, args.concurrency, args.warm_up, None))
    measured = asyncio.run(drive(url, texts, args.concurrency, args.seconds, label))
    print(f"    {measured.rate:,.1f} req/s, {measured.error_count:,} errors", flush=True)
    return measured


# --- way (d): the model in-process ------------------------------------------------------------


def measure_raw(
    registry: Registry, version: str, texts: list[str], seconds: float, warm_up: float, label: str
) -> Measured:
    """The pyfunc's predict on batches of RAW_BATCH_SIZE texts for `seconds`: texts/s."""
    model = registry.load(REQUEST_CLASSIFIER, version)
    frames = [
        pd.DataFrame({"text": texts[start : start + RAW_BATCH_SIZE]})
        for start in range(0, len(texts) - RAW_BATCH_SIZE + 1, RAW_BATCH_SIZE)
    ] or [pd.DataFrame({"text": (texts * RAW_BATCH_SIZE)[:RAW_BATCH_SIZE]})]
    batches = itertools.cycle(frames)
    warm_until = time.perf_counter() + warm_up
    while time.perf_counter() < warm_until:
        model.predict(next(batches))
    done, batch_ms = 0, []
    with tqdm(total=seconds, desc=label, bar_format=BAR, leave=False) as bar:
        started = time.perf_counter()
        while (now := time.perf_counter()) - started < seconds:
            model.predict(next(batches))
            batch_ms.append(1000 * (time.perf_counter() - now))
            done += RAW_BATCH_SIZE
            bar.n = min(seconds, round(time.perf_counter() - started, 1))
            bar.refresh()
        elapsed = time.perf_counter() - started
    note = f"texts/s, no HTTP; p50 {np.percentile(batch_ms, 50):,.0f} ms per batch"
    print(f"    {done / elapsed:,.1f} texts/s", flush=True)
    return Measured(label, done / elapsed, note=note)


def measure_redaction(texts: list[str], seconds: float) -> Measured:
    """What the prediction log's redaction costs: texts/s of presidio on one core (it runs in
    each worker's log-writer thread, off the request path, so it costs CPU, not latency)."""
    redactor = Redactor()
    samples = itertools.cycle(
        [
            *texts[:200],
            *(f"{t} reach me at anna.k@example.com or +1 415 555 0132" for t in texts[:50]),
        ]
    )
    per_text, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        text = next(samples)
        begun = time.perf_counter()
        redactor.redact(text)
        per_text.append(1000 * (time.perf_counter() - begun))
    elapsed = time.perf_counter() - started
    note = (
        f"texts/s on one core; p50 {np.percentile(per_text, 50):.2f} ms, "
        f"p99 {np.percentile(per_text, 99):.2f} ms per text (1 in 5 with personal data)"
    )
    print(f"    {len(per_text) / elapsed:,.1f} texts/s", flush=True)
    return Measured("(e) redaction, presidio offline", len(per_text) / elapsed, note=note)


# --- the report -------------------------------------------------------------------------------


def print_table(ways: dict[str, Measured]) -> None:
    def ms(value: float | None) -> str:
        return f"{value:,.1f}" if value is not None else "-"

    width = max(len(way.label) for way in ways.values()) + 2
    print(f"\n{'way':<{width}}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for way in ways.values():
        print(
            f"{way.label:<{width}}{way.rate:>10,.1f}{ms(way.percentile(50)):>10}"
            f"{ms(way.percentile(95)):>10}{ms(way.percentile(99)):>10}{way.error_count:>8,}"
            + (f"   {way.note}" if way.note else "")
        )
    for way in ways.values():
        if way.errors:
            kinds = ", ".join(f"{kind} × {count:,}" for kind, count in way.errors.most_common())
            print(f"  {way.label} errors: {kinds}")


def print_ratios(ways: dict[str, Measured]) -> None:
    a, b, c, d = (ways[key] for key in "abcd")

    def ratio(x: Measured, y: Measured) -> float:
        return x.rate / y.rate if y.rate else float("inf")

    p99_a, p99_c = a.percentile(99), c.percentile(99)
    equal_or_better = p99_a is not None and p99_c is not None and p99_a <= p99_c
    meets_c = ratio(a, c) >= TARGET_A_OVER_C and equal_or_better
    meets_d = ratio(a, d) >= TARGET_A_OVER_D
    p99 = f"p99 {p99_a or 0:,.0f} vs {p99_c or 0:,.0f} ms"
    print(
        f"\na/b {ratio(a, b):>6.2f}× req/s   adaptive batching on / off, same Bento\n"
        f"a/c {ratio(a, c):>6.2f}× req/s   {p99}; target ≥ {TARGET_A_OVER_C:g}× at equal or "
        f"better p99: {'meets' if meets_c else 'misses'}\n"
        f"a/d {ratio(a, d):>6.2f}×         req/s over the model's batched texts/s; target "
        f"≥ {TARGET_A_OVER_D:g}×: {'meets' if meets_d else 'misses'}"
    )


def load_arguments(description: str) -> argparse.ArgumentParser:
    """The options every serving benchmark takes: how long, how much load, which model."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per way")
    parser.add_argument("--warm-up", type=float, default=5.0, help="uncounted seconds per way")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--workers", type=int, default=1, help="BentoML serving workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, every way")
    parser.add_argument("--model-version", default="", help="MLflow version of request_classifier")
    parser.add_argument("--texts", type=Path, help="a CSV with a `text` column (else generated)")
    return parser


def main() -> int:
    parser = load_arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--serve-plain", type=int, metavar="PORT", help="only run way (c)'s server on PORT"
    )
    parser.add_argument(
        "--redaction-only", action="store_true", help="only measure (e), the log's redaction"
    )
    args = parser.parse_args()
    settings = Settings.from_env()
    if args.redaction_only:
        texts, source = load_texts(args.texts)
        print(f"{source}; {args.seconds:g} s", flush=True)
        print_table({"e": measure_redaction(texts, args.seconds)})
        return 0
    if args.serve_plain:
        serve_one_at_a_time(settings, args.model_version, args.serve_plain, args.threads)
        return 0
    torch.set_num_threads(args.threads)

    registry = Registry(settings.tracking_uri, settings.artifact_root)
    version = pick_version(registry, args.model_version)
    texts, source = load_texts(args.texts)
    print(
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} before the run), torch "
        f"device {pick_device()}, {torch.get_num_threads()} torch threads per process; the "
        "load generator runs on the same machine and shares its cores with the server\n"
        f"{REQUEST_CLASSIFIER} v{version.version} ({version.tags.get('kind', '?')}), {source}\n"
        f"{args.concurrency} requests in flight, one text each; {args.warm_up:g} s warm-up + "
        f"{args.seconds:g} s per way; {args.workers} BentoML worker(s)\n"
        f"packaging the Bento (python -m serving.package) …",
        flush=True,
    )
    packaged = BentoStore(home=str(settings.bentoml_home)).package(
        settings.tracking_uri, {REQUEST_CLASSIFIER: version.version}
    )
    bento = str(packaged["bento"])
    print(f"    {bento} ({'built' if packaged['built'] else 'already built'})", flush=True)

    logs = settings.data_home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    labels = {
        "a": "(a) BentoML, adaptive batching",
        "b": "(b) BentoML, batching off",
        "c": "(c) plain HTTPServer, one at a time",
        "d": f"(d) model in-process, batches of {RAW_BATCH_SIZE}",
    }
    ways: dict[str, Measured] = {}
    with tempfile.TemporaryDirectory() as prediction_logs:  # not the monitoring windows
        for key, batching in (("a", True), ("b", False)):
            print(f"{labels[key]}: bentoml serve {bento} …", flush=True)
            log_path = logs / f"serve_load-{key}.log"
            with bento_server(
                settings,
                bento,
                log_path,
                Path(prediction_logs),
                batching,
                args.workers,
                args.threads,
                args.concurrency,
            ) as url:
                ways[key] = measure_http(url, texts, args, labels[key])
    print(f"{labels['c']}: starting …", flush=True)
    with plain_server(version.version, free_port(), logs / "serve_load-c.log", args.threads) as url:
        ways["c"] = measure_http(url, texts, args, labels["c"])
    print(f"{labels['d']} …", flush=True)
    ways["d"] = measure_raw(
        registry, version.version, texts, args.seconds, args.warm_up, labels["d"]
    )
    print("(e) redaction of the logged texts …", flush=True)
    ways["e"] = measure_redaction(texts, args.seconds)
    print_table(ways)
    print_ratios(ways)
    print(
        f"a/e {ways['a'].rate / ways['e'].rate:>6.2f}          of one core spent redacting at "
        "(a)'s rate, in the log writers' threads"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
