"""`make demo`: generate the seeded demo data, materialize the whole asset graph on the embedded
defaults, and say what was built and where to look. `--real` does the same on the public
datasets (banking77 requests, Dominick's orange-juice demand), read in place."""

import argparse
import base64
import contextlib
import json
import logging
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from dagster import AssetKey, BetaWarning, DagsterInstance, PreviewWarning

# The demo talks to a person: API-maturity warnings of Dagster and MLflow's notices belong in the
# developer's log (and in the UIs), not on the terminal.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from assets.monitoring.drift import window_partition_key  # noqa: E402
from assets.resources import DataHome, Warehouse, warehouse_of  # noqa: E402
from ml.annotation.label_studio_client import LabelStudioClient  # noqa: E402
from ml.data import objects  # noqa: E402
from ml.data.ingestion import IngestionError  # noqa: E402
from ml.data.sources import DemandSource, demand_source_of, orange_juice_source  # noqa: E402
from ml.data.warehouse import warehouse_location  # noqa: E402
from ml.defects.classifiers import CLASSES  # noqa: E402
from ml.defects.packaged import elpv_cells  # noqa: E402
from ml.lifecycle.aliases import GATE_REASON, GATE_SCORE, GATE_TEST_VERSION  # noqa: E402
from ml.lifecycle.registered_models import (  # noqa: E402
    DEFECT_CLASSIFIER,
    DEMAND_FORECASTER,
    REQUEST_CLASSIFIER,
)
from ml.lifecycle.registry import ModelVersion, Registry  # noqa: E402
from ml.lifecycle.release import ReleaseState, read_release_states  # noqa: E402
from ml.monitoring.prediction_log import read_predictions  # noqa: E402
from ml.security.encryption import generated_keys_into_environment  # noqa: E402
from ml.security.erasure import ERASURE_LOG, erasure_records  # noqa: E402
from ml.settings import Settings, set_environment_defaults  # noqa: E402
from ml.synthetic.defect_images import generate_cell_images, image_drop_zip  # noqa: E402
from ml.synthetic.demand import generate_demand  # noqa: E402
from ml.synthetic.requests import generate_requests  # noqa: E402
from orchestration.definitions import build_definitions  # noqa: E402
from orchestration.front_door import admin_port_from_env  # noqa: E402
from orchestration.instance import open_instance  # noqa: E402
from orchestration.labelstudio import LabelStudioConfig, is_up, start_server  # noqa: E402
from orchestration.pipeline import (  # noqa: E402
    DEFECT_ROUND,
    FULL_CNN,
    FULL_TRANSFORMER,
    QUICK_CNN,
    QUICK_TRANSFORMER,
    REQUEST_ROUND,
    execute_quietly,
    run_annotation_round,
    run_platform,
    train_defect_models,
    train_demand_models,
    train_request_models,
)
from orchestration.serving import FollowedChampion, champion_behind_front_door  # noqa: E402
from orchestration.simulated_annotators import SIMULATED_DOMAIN  # noqa: E402
from serving.api_keys import CLIENT_KEYS_FILE_NAME  # noqa: E402

DEMO_REQUEST_DROPS = (
    # (file, rows, seed, first moment, last moment): two drops, as if two exports arrived.
    (
        "requests_2025_h1.csv",
        4000,
        7,
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 6, 30, tzinfo=UTC),
    ),
    (
        "requests_2025_h2.csv",
        2000,
        8,
        datetime(2025, 7, 1, tzinfo=UTC),
        datetime(2025, 12, 31, tzinfo=UTC),
    ),
)
DEMO_UNLABELED_DROP = (
    # Arrives with its labels hidden (MLOPS_HIDDEN_LABEL_SOURCES): the annotation loop's work.
    "synthetic_unlabeled",
    "requests_2026_01.csv",
    1000,
    9,
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 1, 31, tzinfo=UTC),
)
DEMO_DEFECT_DROP = ("line1", "cells_2025_12.zip", 600, 11)
"""(source folder, file, cells, seed): generated cell images with their labels, as one ZIP."""
DEMO_UNLABELED_DEFECT_DROP = ("line1_unlabeled", "cells_2026_01.zip", 120, 12)
"""New cells whose labels are hidden at ingestion (MLOPS_HIDDEN_LABEL_SOURCES): annotated."""
DEMO_DEFECT_BATCH_SIZE = 40
DEMO_DEFECT_ERROR_RATES = (0.02, 0.05)
"""The simulated annotators' slips on a two-way question: at the request rates (5%, 10%), a
40-image batch has about 6 disagreements, which puts binary kappa at the gate's 0.7 by chance
alone."""
REAL_DEFECT_DROP = ("elpv", "elpv_cells.parquet")
"""Where `make demo-real` drops the packaged cells (one Parquet of the PNGs as shipped)."""
DEMO_BATCH_SIZE = 60
DEMO_DEMAND = {
    "stores": 5,
    "items": 8,
    "start": date(2024, 1, 1),
    "end": date(2025, 12, 31),
    "seed": 7,
}


def write_demo_sources(settings: Settings) -> list[Path]:
    """The seeded generator's files, written once; an existing file is left as it is."""
    written = []
    request_dir = Path(settings.request_drops_uri) / "synthetic"
    request_dir.mkdir(parents=True, exist_ok=True)
    for name, rows, seed, start, end in DEMO_REQUEST_DROPS:
        path = request_dir / name
        if not path.exists():
            generate_requests(rows, seed=seed, start=start, end=end).write_csv(path)
            written.append(path)
    folder, name, rows, seed, start, end = DEMO_UNLABELED_DROP
    unlabeled = Path(settings.request_drops_uri) / folder / name
    if not unlabeled.exists():
        unlabeled.parent.mkdir(parents=True, exist_ok=True)
        generate_requests(rows, seed=seed, start=start, end=end).write_csv(unlabeled)
        written.append(unlabeled)
    for source, name, cells, seed in (DEMO_DEFECT_DROP, DEMO_UNLABELED_DEFECT_DROP):
        images = Path(settings.defect_drops_uri) / source / name
        if not images.exists():
            images.parent.mkdir(parents=True, exist_ok=True)
            images.write_bytes(image_drop_zip(generate_cell_images(cells, seed=seed)))
            written.append(images)
    demand_dir = settings.data_home / "sources" / "demand"
    demand_dir.mkdir(parents=True, exist_ok=True)
    demand_path = demand_dir / "demand.csv"
    if not demand_path.exists():
        generate_demand(**DEMO_DEMAND).write_csv(demand_path)
        written.append(demand_path)
    return written


def real_data_deployment(
    settings: Settings,
) -> tuple[Settings, DemandSource, list[tuple[str, str]]]:
    """banking77 and orange juice, read where they lie, in a data home of their own."""
    banking77 = settings.shared_data / "banking77"
    if not (banking77 / "train.csv").exists():
        raise IngestionError(
            f"{banking77 / 'train.csv'}: file not found; set MLOPS_SHARED_DATA to the folder "
            "holding banking77/ and orange_juice/"
        )
    real = replace(
        settings.moved_to(settings.data_home / "real"),
        intent_taxonomy=banking77 / "categories.json",
    )
    source, name = REAL_DEFECT_DROP
    cells = Path(real.defect_drops_uri) / source / name
    if not cells.exists():  # the packaged images arrive as one drop, read from the wheel
        cells.parent.mkdir(parents=True, exist_ok=True)
        elpv_cells().write_parquet(cells)
    return (
        real,
        orange_juice_source(settings.shared_data),
        [("banking77", str(banking77 / "train.csv"))],
    )


@contextlib.contextmanager
def label_studio_running(settings: Settings, report) -> Iterator[LabelStudioClient]:
    """The Label Studio at MLOPS_LABEL_STUDIO_URL if it answers, else one started for the demo
    and stopped when it is done."""
    config = LabelStudioConfig.from_settings(settings)
    if is_up(settings.label_studio_url):
        report(f"  ok   using the Label Studio already running at {settings.label_studio_url}")
        yield LabelStudioClient(settings.label_studio_url, config.token)
        return
    server = start_server(config)
    report(f"  ok   Label Studio started at {config.url} in {server.started_in_seconds:.0f} s")
    try:
        yield LabelStudioClient(config.url, config.token)
    finally:
        server.stop()
        report("  ok   Label Studio stopped (make labelstudio or make dev keep it running)")


def summarize(warehouse: Warehouse) -> list[tuple[str, int]]:
    tables = warehouse.query(
        "select cast(table_name as varchar) as table_name from information_schema.tables "
        "where table_schema = current_schema() order by table_name"
    )["table_name"].to_list()
    return [
        (table, int(warehouse.query(f'select count(*) as n from "{table}"').item()))
        for table in tables
    ]


def transformer_run(real: bool, quick: bool) -> tuple[dict, str]:
    """The transformer's training config and the line that tells the person which it is."""
    if real and not quick:
        return FULL_TRANSFORMER, (
            "  the transformer trains in full (every training row, the tuned epochs and learning "
            "rate): about 8 min on 2 idle CPU cores; add QUICK=1 (--quick) for a short run"
        )
    rows = QUICK_TRANSFORMER["max_train_samples"]
    epochs = QUICK_TRANSFORMER["epochs"]
    why = "--quick" if real else "the demo's generated data"
    return QUICK_TRANSFORMER, (
        f"  quick run ({why}): the transformer trains {epochs} epoch on {rows:,} rows, far "
        "below what it reaches in full; the gate will likely prefer a classical model"
    )


GATE_MEASURES = {
    REQUEST_CLASSIFIER: ("test_f1_macro", "test F1-macro"),
    DEMAND_FORECASTER: ("backtest_wape", "backtest WAPE"),
    DEFECT_CLASSIFIER: ("test_defect_f1", "test defect F1"),
}
"""Each registered model's gate metric: (MLflow metric, as said to a person)."""


def latest_versions(registry: Registry) -> dict[str, int]:
    """The newest version number of each registered model (0: none yet)."""
    return {
        model: max((int(v.version) for v in registry.versions(model)), default=0)
        for model in GATE_MEASURES
    }


def print_registry(settings: Settings, before: dict[str, int]) -> None:
    """The versions this run registered, each with the gate's decision, then the champion with
    its score on the frozen test split and the reason the gate gave."""
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    print(f"MLflow registry ({settings.tracking_uri}):")
    for model, (metric, _) in GATE_MEASURES.items():
        versions = [v for v in registry.versions(model) if int(v.version) > before[model]]
        if versions:
            print(f"  {model} (versions this run registered):")
        for version in versions:
            aliases = f" @{','.join(version.aliases)}" if version.aliases else ""
            print(
                f"    v{version.version:<3} {version.tags.get('kind', ''):<14} {metric} "
                f"{version.metric(metric) or 0:.4f}{aliases}: {version.tags.get(GATE_REASON, '')}"
            )
        champion = registry.champion(model)
        if champion is not None:
            print(f"  {champion_line(model, champion)}")


ROI_ASSETS = ("request_classifier_roi", "defect_classifier_roi", "demand_forecaster_roi")


def returns(instance: DagsterInstance) -> list[str]:
    """What each champion earns and cost, as its ROI asset priced it (ml/lifecycle/economics)."""
    lines = ["Returns (prices: ml/lifecycle/business_case.toml or MLOPS_BUSINESS_CASE):"]
    for name in ROI_ASSETS:
        event = instance.get_latest_materialization_event(AssetKey(name))
        if event is None or event.asset_materialization is None:
            lines.append(f"  {name}: not materialized")
            continue
        m = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        if "benefit_per_month" not in m:
            lines.append(f"  {name}: {m.get('priced', 'not priced')}")
            continue
        roi = f"{m['roi']:,.1f}×" if isinstance(m["roi"], float) else str(m["roi"])
        lines.append(
            f"  {name}: {m['champion']} earns {m['benefit_per_month']:,.2f} a month; spent "
            f"{m['spent']:,.2f}, serving {m['serving_per_month']:,.2f} a month; ROI {roi} over "
            f"the horizon, payback {m['payback']}"
        )
    return lines


def champion_line(model: str, champion: ModelVersion) -> str:
    """`model`'s champion, the gate's score of it and why the gate chose it."""
    test = champion.tags.get(GATE_TEST_VERSION, "?")
    measure = GATE_MEASURES[model][1]
    return (
        f"{model} champion: v{champion.version} ({champion.tags.get('kind', '')}), "
        f"{measure} {champion.metric(GATE_SCORE) or 0:.4f} on the frozen test version {test}; "
        f"the gate: {champion.tags.get(GATE_REASON, '')}"
    )


DEMO_TRAFFIC = 240
"""Requests the demo sends to the live service: one hour's worth for the drift report."""
DEMO_RELEASE_TRAFFIC = 400
"""Requests per batch of release traffic: a quarter of them scored in shadow when the shadow
scorer keeps up."""
DEMO_RELEASE_ROUNDS = 4
"""Batches of release traffic at most: up to three in shadow, then one in the canary step."""


def serve_and_monitor(settings: Settings, defs, instance, run, report, log_path: Path) -> None:
    """Serve the champion Bento as `make serve` does (the front door on the service port, the
    Bento switched in once its smoke test passed), show its answers, send it traffic, release
    the challenger in stages, stop (the workers flush their logs), then profile this hour's
    traffic and score its drift."""
    admin_port = admin_port_from_env()
    started = time.monotonic()
    with champion_behind_front_door(settings, settings.serving_port, admin_port) as server:
        report(
            f"  ok   front door (Caddy) on {server.url} → bentoml serve {server.bento}, smoke-"
            f"tested and switched in ({time.monotonic() - started:.0f} s)"
        )
        keys = server.credentials.keys_file
        report(
            f"       API keys: digests in {keys}, the keys for your own calls in "
            f"{keys.parent / CLIENT_KEYS_FILE_NAME} (mode 0600)"
            if keys
            else "       API keys: from the environment (MLOPS_SERVING_API_KEYS_FILE)"
        )
        for line in refused_without_a_key(server):
            report(f"  ok   {line}")
        for line in show_answers(server, settings):
            report(f"       {line}")
        # A sample of a large draw keeps the generator's natural intent mix (one draw of 240
        # would force all 77 intents in: a near-uniform mix, which is itself a shift), and
        # every request of the hour is a draw of its own: the same requests sent again are
        # not new draws, and the drift report would see the calm hour as drift. (Texts that
        # recur within the draw stay: many customers ask the same short question.)
        now = datetime.now(UTC)
        total = DEMO_TRAFFIC + DEMO_RELEASE_ROUNDS * DEMO_RELEASE_TRAFFIC
        texts = (
            generate_requests(10 * total, seed=10, start=now, end=now)
            .sample(total, seed=0)["text"]
            .to_list()
        )
        private = post_json(server, "/classify", {"texts": PRIVATE_REQUEST})[0]
        sent = send_traffic(server, texts[:DEMO_TRAFFIC])
        report(
            f"  ok   {sent} requests answered on /classify, logged in {settings.prediction_log_uri}"
        )
        cells = inspection_cells(settings, DEMO_INSPECTIONS)
        inspector = Registry(settings.tracking_uri, settings.artifact_root).champion(
            DEFECT_CLASSIFIER
        )
        if cells and inspector is not None:
            report(
                f"  ok   {send_inspections(server, cells)} cell images answered on /inspect, "
                f"kept by id in {settings.image_uri}"
            )
        release_in_stages(settings, defs, instance, server, texts[DEMO_TRAFFIC:], report)
    report("  ok   front door and bentoml serve stopped (make serve or make dev keep them running)")
    report(f"  ok   {redaction_shown(settings, private['request_id'])}")
    hour = window_partition_key(datetime.now(UTC))
    with log_path.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run.record(
            "drift report",
            execute_quietly(defs, instance, "monitoring_job", partition=hour),
            f"(window {hour})",
        )
        if instance.get_latest_materialization_event(AssetKey("defect_image_reference")):
            run.record(
                "image drift report",
                execute_quietly(defs, instance, "defect_monitoring_job", partition=hour),
                f"(window {hour})",
            )
    for asset, what in (("drift_report", "drift report"), ("defect_image_drift", "image drift")):
        latest = instance.get_latest_materialization_event(AssetKey(asset))
        verdict = latest and latest.asset_materialization.metadata.get("verdict")
        if verdict is not None:
            report(f"       {what} {hour}: {verdict.value}")
    erase_on_request(settings, defs, instance, run, private["request_id"], report)


def erase_on_request(settings: Settings, defs, instance, run, request_id: str, report) -> None:
    """The customer who sent the private request asks for its erasure: the erasure job runs as
    an ML engineer would launch it, and the demo shows what it removed where."""
    config = {
        "ops": {
            "erase_requests": {
                "config": {
                    "request_ids": [request_id],
                    "requested_by": "demo: the customer of the private request",
                    "reason": "the customer asked for their request to be erased",
                }
            }
        }
    }
    run.record("erasure", execute_quietly(defs, instance, "erasure_job", config=config), request_id)
    records = erasure_records(settings.data_home / "erasure")
    if records and records[-1]["request_ids"] == [request_id]:
        removed = ", ".join(f"{k} {v}" for k, v in records[-1]["removed"].items() if v)
        report(
            f"       erased request {request_id}: {removed or 'nothing left to remove'}; "
            f"recorded in {settings.data_home / 'erasure' / ERASURE_LOG}"
        )


def release_step(settings: Settings, defs, instance, report) -> ReleaseState | None:
    """One run of the release job (what the release sensor starts in `make dev`)."""
    result = execute_quietly(defs, instance, "release_job")
    state = read_release_states(settings.release_state_path).get(REQUEST_CLASSIFIER)
    if not result.success or state is None:
        report("  FAIL release job: see the Dagster run log")
        return None
    share = f"canary {state.canary_share:.0%}" if state.stage == "canary" else state.stage
    decided = [
        entry.user_message.removeprefix(f"{REQUEST_CLASSIFIER}: ")
        for entry in instance.all_logs(result.run_id)
        if entry.user_message.startswith(f"{REQUEST_CLASSIFIER}: ")
    ]
    report(f"  ok   release of request_classifier v{state.challenger_version}: {share}")
    report(f"       {decided[-1] if decided else state.reason}")
    return state


def release_in_stages(
    settings: Settings, defs, instance, server: FollowedChampion, texts: list[str], report
):
    """The challenger in shadow (it scores a sample of champion traffic, answers nothing),
    then the first canary step (a sticky share of request ids), as the release sensor would
    walk it; each step and the alias history are on request_classifier_promotion in the UI.
    `texts`: batches of DEMO_RELEASE_TRAFFIC, the last one for the canary step."""
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    if registry.by_alias(REQUEST_CLASSIFIER, "challenger") is None:
        report("       no request_classifier challenger: nothing to release in stages")
        return
    state = release_step(settings, defs, instance, report)
    batches = [
        texts[start : start + DEMO_RELEASE_TRAFFIC]
        for start in range(0, len(texts), DEMO_RELEASE_TRAFFIC)
    ]
    while state is not None and state.stage == "shadow" and len(batches) > 1:
        # The shadow scorer skips answers while its queue is full (2 busy cores): a step may
        # need more than one batch before it has seen enough shadow answers to advance.
        send_traffic(server, batches.pop(0))
        time.sleep(3)  # the workers flush their logs every 2 s
        state = release_step(settings, defs, instance, report)
    if state is None or state.stage != "canary":
        return
    answers = send_traffic(server, batches[0], answers=True)
    by_variant = Counter(answer[0]["variant"] for answer in answers)
    report(
        f"       canary traffic: {by_variant['champion']} answered by the champion, "
        f"{by_variant['challenger']} by the challenger (sticky by X-Request-ID)"
    )
    for entry in registry.audit(REQUEST_CLASSIFIER)[-3:]:
        moves = ", ".join(f"{a}: {f or '-'} → {t or '-'}" for a, (f, t) in entry.moves.items())
        report(f"       audit #{entry.id} {entry.when} {entry.action} v{entry.version} ({moves})")


PRIVATE_REQUEST = "my card 4111 1111 1111 1111 was stolen, please call me on +1 415 555 0132"


def redaction_shown(settings: Settings, request_id: str) -> str:
    """What the prediction log kept of a request carrying personal data."""
    now = datetime.now(UTC)
    logged = read_predictions(
        settings.prediction_log_uri, now - timedelta(hours=2), now + timedelta(hours=1)
    )
    kept = logged.filter(logged["request_id"] == request_id)["text"].to_list()
    if len(kept) != 1 or "4111" in kept[0] or "555 0132" in kept[0]:
        raise RuntimeError(f"the prediction log kept {kept!r} of {PRIVATE_REQUEST!r}")
    return f"the prediction log keeps {kept[0]!r} (sent: {PRIVATE_REQUEST!r})"


def refused_without_a_key(server: FollowedChampion) -> list[str]:
    """What an application without a key, and one calling an admin route, are told."""
    lines = []
    for what, headers, route, body in (
        ("no key", {}, "/classify", {"texts": "hello"}),
        ("a wrong key", {"Authorization": "Bearer not-a-key"}, "/classify", {"texts": "hello"}),
        ("the application key", server.headers(), "/admin/release-states", {}),
    ):
        request = urllib.request.Request(
            f"{server.url}{route}",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        if status not in (401, 403):
            raise RuntimeError(f"POST {route} with {what} answered {status}, not 401/403")
        lines.append(f"POST {route} with {what} → {status}")
    return lines


def show_answers(server: FollowedChampion, settings: Settings) -> list[str]:
    """One /classify and one /forecast call, as an application would make them."""
    question = "I still have not received my new card, when will it arrive?"
    classified = post_json(server, "/classify", {"texts": question})[0]
    lines = [
        f"POST /classify {question!r} → {classified['intent']} "
        f"({classified['confidence']:.2f}, request_classifier v{classified['model_version']})"
    ]
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    champion = registry.champion(DEMAND_FORECASTER)
    if champion is not None:
        model = registry.load(DEMAND_FORECASTER, champion.version)
        store, item = model.unwrap_python_model().forecaster.keys[0]
        answer = post_json(
            server, "/forecast", {"series": [{"store": store, "item": item}], "horizon": 3}
        )
        first = answer["forecasts"][0]
        lines.append(
            f"POST /forecast {store}/{item}, 3 periods → {first['period_start']}: P10 "
            f"{first['p10']:.1f} / P50 {first['p50']:.1f} / P90 {first['p90']:.1f} "
            f"(demand_forecaster v{answer['model_version']}; assumed {answer['assumed'][0]})"
        )
    cells = inspection_cells(settings, 1)
    if cells and registry.champion(DEFECT_CLASSIFIER) is not None:
        (inspected,) = post_json(server, "/inspect", {"images": cells})
        lines.append(
            f"POST /inspect one cell image → {inspected['label']} (defect probability "
            f"{inspected['defect_probability']:.2f}, threshold {inspected['threshold']:.2f}, "
            f"defect_classifier v{inspected['model_version']})"
        )
    return lines


DEMO_INSPECTIONS = 64
"""Cell images the demo sends to /inspect: enough for the hour's image drift report."""


def inspection_cells(settings: Settings, n: int) -> list[str]:
    """`n` test-split cell images as a camera station would send them (base64 of the file)."""
    warehouse = warehouse_of(settings)
    if not warehouse.table_exists("defect_image_splits"):
        return []
    uris = warehouse.query(
        "select image_uri from defect_image_splits where split = 'test' order by image_id limit ?",
        [n],
    )["image_uri"]
    return [base64.b64encode(objects.read_bytes(uri)).decode("ascii") for uri in uris]


def send_inspections(server: FollowedChampion, cells: list[str]) -> int:
    """`cells` sent to /inspect four at a time by 4 clients; how many images were answered."""

    def call(batch: list[str]) -> int:
        return len(post_json(server, "/inspect", {"images": batch}, uuid.uuid4().hex))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return sum(pool.map(call, [cells[i : i + 4] for i in range(0, len(cells), 4)]))


def post_json(server: FollowedChampion, route: str, body: object, request_id: str = "") -> object:
    """The JSON answer of a POST with the application key, as an application makes it."""
    headers = {"Content-Type": "application/json", **server.headers()}
    if request_id:
        headers["X-Request-ID"] = request_id
    request = urllib.request.Request(f"{server.url}{route}", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def send_traffic(server: FollowedChampion, texts: list[str], answers: bool = False):
    """`texts` sent to /classify by 8 clients, each request with an id of its own; how many
    were answered (or the answers)."""

    def call(text: str) -> object:
        return post_json(server, "/classify", {"texts": text}, uuid.uuid4().hex)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answered = list(pool.map(call, texts))
    return answered if answers else len(answered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--real",
        action="store_true",
        help="run on ../shared/data (banking77, orange juice) instead of generated data",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="with --real: a short transformer run (1 epoch, 1,024 rows) instead of the full one",
    )
    args = parser.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # after mlflow set up its own logger
    started = time.monotonic()
    # The demo's annotators are simulated: they are its allow-list, unless one is configured.
    set_environment_defaults(MLOPS_ANNOTATORS=f"@{SIMULATED_DOMAIN}")
    settings = Settings.from_env()
    if args.real:
        settings, demand_source, request_files = real_data_deployment(settings)
    else:
        demand_source = demand_source_of(settings)
        request_files = []
        for path in write_demo_sources(settings):
            print(f"  generated {path.relative_to(settings.data_home)}")
    # The deployment's keys (for logs and models), kept in its own data home, for every process.
    generated_keys_into_environment(settings.secrets_dir)
    print(f"Data home: {settings.data_home}")
    defs = build_definitions(settings, demand_source)
    instance = open_instance(settings)
    print("Materializing the asset graph (request drops → demand periods → warehouse)…")
    log_path = settings.data_home / "logs" / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout

    def report(line: str) -> None:
        print(line, file=terminal, flush=True)

    print(f"  (run output: {log_path})")
    with log_path.open("w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run = run_platform(
            defs, instance, DataHome(path=str(settings.data_home)), request_files, report=report
        )

    def annotation_round(batch_size: int, **round_) -> None:
        """One batch through Label Studio (started for it, if need be) and the kappa gate."""
        with (
            label_studio_running(settings, report) as admin,
            log_path.open("a", encoding="utf-8") as log,
            contextlib.redirect_stdout(log),
        ):
            run_annotation_round(
                defs, instance, admin, warehouse_of(settings), run, batch_size, **round_
            )

    if not args.real:
        report("Annotation: Label Studio, simulated annotators, kappa gate, review…")
        annotation_round(DEMO_BATCH_SIZE)
    report(
        "Models: request classifiers, demand forecasters and defect classifiers → MLflow → "
        "promotion gates…"
    )
    transformer, said = transformer_run(args.real, args.quick)
    report(said)
    cnn = FULL_CNN if args.real and not args.quick else QUICK_CNN
    report(
        f"  the defect CNN trains {cnn['epochs']} epochs at {cnn['input_size']} px"
        + (" (about 15 min on 2 CPU cores)" if cnn is FULL_CNN else "")
    )
    before = latest_versions(Registry(settings.tracking_uri, settings.artifact_root))
    with (
        log_path.open("a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        train_request_models(defs, instance, run, transformer)
        train_demand_models(defs, instance, run)
        train_defect_models(defs, instance, run, cnn)
    if not args.real:
        report(
            "Annotation of new cell images: the defect champion's least certain first, its "
            "guess pre-filled; simulated annotators, kappa gate, review…"
        )
        annotation_round(
            DEMO_DEFECT_BATCH_SIZE,
            labels=CLASSES,
            round_=DEFECT_ROUND,
            error_rates=DEMO_DEFECT_ERROR_RATES,
        )
    report("Serving: champion Bento → bentoml serve → /classify, /forecast → drift report…")
    with (
        log_path.open("a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        run.record("champion Bento", execute_quietly(defs, instance, "champion_bento_job"))
    if run.results["champion Bento"].success:
        serve_and_monitor(settings, defs, instance, run, report, log_path)
    for uri in run.redrops:
        print(f"  no-op: {uri} holds content already ingested")
    passed, failed = run.check_outcomes()
    assets = len(defs.resolve_asset_graph().get_all_asset_keys())
    print(f"\nAssets in the graph: {assets}; asset checks: {passed} passed, {failed} failed")
    warehouse = warehouse_of(settings)
    for loop, what in ((REQUEST_ROUND.loop, "requests"), (DEFECT_ROUND.loop, "images")):
        if warehouse.table_exists(loop.agreement_table):
            for batch in warehouse.query(
                f"select batch_id, status, kappa from {loop.agreement_table} order by collected_at"
            ).iter_rows(named=True):
                kappa = f"{batch['kappa']:.2f}" if batch["kappa"] is not None else "n/a"
                print(f"Annotation batch {batch['batch_id']}: kappa {kappa}, {batch['status']}")
        if warehouse.table_exists(loop.versions_table):
            latest = warehouse.query(
                f"select version, rows from {loop.versions_table} order by version desc limit 1"
            ).row(0, named=True)
            print(f"Labeled {what}: version {latest['version']}, {latest['rows']} labels")
    print_registry(settings, before)
    for line in returns(instance):
        print(line)
    print("Warehouse tables:")
    for table, rows in summarize(warehouse_of(settings)):
        print(f"  {table:<24} {rows:>8,} rows")
    print(
        f"\nDone in {time.monotonic() - started:.0f} s. Where to look:\n"
        f"  make dev     Dagster UI + daemon on http://127.0.0.1:3000\n"
        f"  instance     DAGSTER_HOME={settings.dagster_home}\n"
        f"  warehouse    {warehouse_location(settings.warehouse_path, settings.warehouse_url)}\n"
        f"  MLflow UI    make mlflow (http://127.0.0.1:5000), registry {settings.tracking_uri}\n"
        f"  serving      make serve (the champion Bento on http://127.0.0.1:3001)\n"
        f"  credentials  {settings.secrets_dir} (serving API keys; mode 0600) and "
        f"{settings.data_home / 'labelstudio'} (.admin_password, .admin_token)\n"
        f"  new data     drop request files into {settings.request_drops_uri}/<source>/, "
        f"image drops (.zip, .parquet) into {settings.defect_drops_uri}/<source>/"
    )
    return 0 if run.success else 1


if __name__ == "__main__":
    sys.exit(main())
