"""What one annotation batch costs end to end with a real Label Studio, phase by phase.

Starts the server (its own venv, installed on first use), ingests generated requests with their
labels hidden, and runs one batch of --size tasks through the loop: candidates → tasks in Label
Studio → two simulated annotators working in parallel through the labeling stream → completion
check → collection and kappa gate → labeled data. Prints seconds per phase.
"""

import argparse
import os
import socket
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from dagster import AssetKey, BetaWarning, DagsterInstance, PreviewWarning

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from assets.requests.sensors import completed_batches  # noqa: E402
from assets.resources import DataHome, Warehouse  # noqa: E402
from ml.annotation.label_studio_client import LabelStudioClient  # noqa: E402
from ml.data.sources import synthetic_demand_source  # noqa: E402
from ml.requests.taxonomy import synthetic_taxonomy  # noqa: E402
from ml.settings import Settings  # noqa: E402
from ml.synthetic.demand import generate_demand  # noqa: E402
from ml.synthetic.requests import generate_requests  # noqa: E402
from orchestration.definitions import build_definitions  # noqa: E402
from orchestration.labelstudio import LabelStudioConfig, start_server  # noqa: E402
from orchestration.pipeline import execute_quietly, run_platform  # noqa: E402
from orchestration.simulated_annotators import simulated_annotator  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500)
    args = parser.parse_args()
    phases: dict[str, float] = {}

    def phase(name: str, started: float) -> None:
        phases[name] = time.monotonic() - started
        print(f"  {name:<44}{phases[name]:>8.1f} s", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        config = LabelStudioConfig.scratch(home / "labelstudio", free_port(), "admin@bench.local")
        print(f"one batch of {args.size} tasks, two simulated annotators", flush=True)
        started = time.monotonic()
        server = start_server(config)
        phase("Label Studio start (fresh data dir)", started)
        try:
            os.environ.update(
                MLOPS_DATA_HOME=str(home),
                MLOPS_WAREHOUSE_PATH=str(home / "warehouse.duckdb"),
                MLOPS_LABEL_STUDIO_URL=config.url,
                MLOPS_LABEL_STUDIO_TOKEN=config.token,
            )
            settings = Settings.from_env()
            drops = Path(settings.request_drops_uri) / "synthetic_unlabeled"
            drops.mkdir(parents=True)
            window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
            generate_requests(
                int(args.size * 1.5), seed=21, start=window[0], end=window[1]
            ).write_csv(drops / "stream.csv")
            demand = synthetic_demand_source(home)
            Path(demand.uri).mkdir(parents=True)
            generate_demand(start=demand.start, end=demand.start, seed=1).write_csv(
                Path(demand.uri) / "demand.csv"
            )
            defs = build_definitions(settings, demand)
            instance = DagsterInstance.ephemeral()
            started = time.monotonic()
            assert run_platform(defs, instance, DataHome(path=str(home))).success
            phase("ingest + validate + dbt (for context)", started)

            def run(job: str, partition: str | None = None, config: dict | None = None):
                result = execute_quietly(defs, instance, job, partition=partition, config=config)
                assert result.success, job
                return result

            started = time.monotonic()
            run(
                "annotation_candidates_job",
                config={"ops": {"annotation_candidates": {"config": {"batch_size": args.size}}}},
            )
            event = instance.get_latest_materialization_event(AssetKey("annotation_candidates"))
            batch = event.asset_materialization.metadata["batch"].value
            phase("pick candidates", started)
            started = time.monotonic()
            run("annotation_batch_job", batch)
            phase(f"create {args.size} tasks in Label Studio", started)

            admin = LabelStudioClient(config.url, config.token)
            project = admin.find_project(f"Requests {batch}")
            rows = Warehouse(path=str(settings.warehouse_path)).query(
                "select i.ext_id, h.intent from annotation_items i "
                "join hidden_labels h using (request_id) where i.batch_id = ?",
                [batch],
            )
            answers = dict(zip(rows["ext_id"], rows["intent"], strict=True))
            annotators = [
                simulated_annotator(admin, name, 0.05, seed)
                for seed, name in enumerate(("ann", "bob"))
            ]
            started = time.monotonic()
            with ThreadPoolExecutor(2) as pool:
                done = list(
                    pool.map(
                        lambda a: a.annotate(project, answers, synthetic_taxonomy().intents),
                        annotators,
                    )
                )
            assert done == [args.size, args.size], done
            phase(f"2 × {args.size} annotations (stream + submit)", started)
            started = time.monotonic()
            assert completed_batches(instance, admin) == [batch]
            phase("completion check (the sensor's work)", started)
            started = time.monotonic()
            run("annotated_batch_job", batch)
            phase("collect + kappa gate + open reviews", started)
            started = time.monotonic()
            run("labeled_requests_job")
            phase("merge into a labeled-data version", started)
        finally:
            server.stop()
    loop = sum(v for k, v in phases.items() if not k.startswith(("Label Studio", "ingest")))
    print(f"\nend to end, batch of {args.size} (without server start and ingestion): {loop:.0f} s")
    annotating = next(seconds for name, seconds in phases.items() if name.startswith("2 ×"))
    print(f"simulated annotation throughput: {2 * args.size / annotating:.1f} annotations/s")


if __name__ == "__main__":
    main()
