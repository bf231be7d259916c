"""Run the platform's jobs in-process against an instance, in dependency order: the path
`make demo` takes, and the one the integration tests take."""

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult

from assets.annotation_loop import AnnotationLoop
from assets.defects.annotation import DEFECT_ANNOTATION
from assets.defects.intake import defect_drops
from assets.defects.sensors import scan_defect_drops
from assets.requests.annotation import REQUEST_ANNOTATION
from assets.requests.intake import request_drops
from assets.requests.sensors import scan_request_drops
from assets.resources import DataHome, Warehouse
from ml.annotation.label_studio_client import (
    FROM_NAME,
    IMAGE_FROM_NAME,
    IMAGE_TO_NAME,
    TO_NAME,
    LabelStudioClient,
)
from ml.data.drops import DropRegistration, register_drop
from ml.settings import PROJECT_ROOT, executable
from orchestration.simulated_annotators import simulated_annotator

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Runs log to the instance (the UI shows everything); the terminal gets warnings and errors."""
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"


def execute_quietly(
    defs: Definitions,
    instance: DagsterInstance,
    job: str,
    *,
    partition: str | None = None,
    config: dict | None = None,
    tags: dict[str, str] | None = None,
    assets: Sequence[str] | None = None,
) -> ExecuteInProcessResult:
    """Run a job in-process (only its `assets`, when given); a failure is returned (and shown
    in the UI), not raised."""
    return defs.resolve_job_def(job).execute_in_process(
        run_config={**QUIET, **(config or {})},
        instance=instance,
        partition_key=partition,
        tags=tags,
        raise_on_error=False,
        asset_selection=[AssetKey(name) for name in assets] if assets else None,
    )


def launch_job(
    job: str,
    log_path: Path,
    *,
    partition: str | None = None,
    tags: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Run `job` in a process of its own, loaded from the code location as a deployment's run
    worker loads it (`dagster job execute`), so its executor, resources and instance come from
    the environment: under MLOPS_EXECUTOR=celery its steps go to the Celery workers."""
    all_tags = {**(tags or {}), **({PARTITION_TAG: partition} if partition else {})}
    command = [executable("dagster"), "job", "execute", "-m", "orchestration.definitions"]
    command += ["-a", "defs", "-j", job, "--tags", json.dumps(all_tags)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )


@dataclass
class PipelineRun:
    results: dict[str, ExecuteInProcessResult] = field(default_factory=dict)
    redrops: list[str] = field(default_factory=list)
    report: Callable[[str], None] = lambda line: None
    """Called with one line per finished run (the demo prints them as progress)."""

    def record(self, name: str, result: ExecuteInProcessResult, detail: str = "") -> None:
        self.results[name] = result
        self.report(f"  {'ok  ' if result.success else 'FAIL'} {name} {detail}".rstrip())

    @property
    def success(self) -> bool:
        return all(result.success for result in self.results.values())

    def check_outcomes(self) -> tuple[int, int]:
        """(passed, failed) asset-check evaluations over every run."""
        evaluations = [
            evaluation
            for result in self.results.values()
            for evaluation in result.get_asset_check_evaluations()
        ]
        passed = sum(1 for evaluation in evaluations if evaluation.passed)
        return passed, len(evaluations) - passed


def ingest_request_drops(
    defs: Definitions, instance: DagsterInstance, data_home: DataHome, run: PipelineRun
) -> None:
    """Register the files in the drops folder and ingest every drop not yet validated."""
    intake = defs.resources["request_intake"].process_config_and_initialize()
    _ingest(defs, instance, scan_request_drops(data_home, intake, {}).registrations, run)


def ingest_request_file(
    defs: Definitions,
    instance: DagsterInstance,
    data_home: DataHome,
    uri: str,
    source: str,
    run: PipelineRun,
) -> None:
    """Ingest one file where it lies (any fsspec URI), as a drop of `source`."""
    _ingest(defs, instance, [register_drop(uri, source, data_home.drop_registry_dir)], run)


@dataclass(frozen=True)
class DropIntake:
    """How one domain's drops are ingested: their partitions, the job, what says done."""

    domain: str
    partitions: str
    job: str
    validated: str


REQUEST_INTAKE = DropIntake(
    "requests", request_drops.name, "request_ingest_job", "validated_requests"
)
DEFECT_INTAKE = DropIntake(
    "defects", defect_drops.name, "defect_ingest_job", "validated_defect_images"
)


def _ingest(
    defs: Definitions,
    instance: DagsterInstance,
    registrations: list[DropRegistration],
    run: PipelineRun,
    intake: DropIntake = REQUEST_INTAKE,
) -> None:
    """One run per drop not yet validated: a drop whose earlier run failed is retried, a
    validated one is left alone, and known content under a new name is only recorded."""
    validated = instance.get_materialized_partitions(AssetKey(intake.validated))
    for registration in registrations:
        drop_id = registration.drop.drop_id
        name = f"{intake.domain} {drop_id}"
        if registration.is_redrop:
            run.redrops.append(registration.seen_uri)
        if drop_id in validated or name in run.results:
            continue
        if not instance.has_dynamic_partition(intake.partitions, drop_id):
            instance.add_dynamic_partitions(intake.partitions, [drop_id])
        run.record(name, execute_quietly(defs, instance, intake.job, partition=drop_id))


def ingest_defect_drops(
    defs: Definitions, instance: DagsterInstance, data_home: DataHome, run: PipelineRun
) -> None:
    """Register the image drops in their folder and ingest every one not yet validated."""
    intake = defs.resources["defect_intake"].process_config_and_initialize()
    scan = scan_defect_drops(data_home, intake, {})
    _ingest(defs, instance, scan.registrations, run, DEFECT_INTAKE)


def ingest_demand(defs: Definitions, instance: DagsterInstance, run: PipelineRun) -> None:
    """Every demand partition in one run (the assets' single-run backfill policy)."""
    job = defs.resolve_job_def("demand_ingest_job")
    keys = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    run.record(
        "demand",
        execute_quietly(
            defs, instance, "demand_ingest_job", tags={RANGE_START: keys[0], RANGE_END: keys[-1]}
        ),
        f"{keys[0]} … {keys[-1]} ({len(keys)} partitions)",
    )


def build_warehouse(defs: Definitions, instance: DagsterInstance, run: PipelineRun) -> None:
    run.record(
        "warehouse",
        execute_quietly(defs, instance, "warehouse_job"),
    )


def run_platform(
    defs: Definitions,
    instance: DagsterInstance,
    data_home: DataHome,
    request_files: list[tuple[str, str]] = (),
    report: Callable[[str], None] = lambda line: None,
) -> PipelineRun:
    """Everything in dependency order: request drops (and `(source, uri)` files read in place),
    image drops, every demand period, then the calendar and the dbt models."""
    run = PipelineRun(report=report)
    for source, uri in request_files:
        ingest_request_file(defs, instance, data_home, uri, source, run)
    ingest_request_drops(defs, instance, data_home, run)
    ingest_defect_drops(defs, instance, data_home, run)
    ingest_demand(defs, instance, run)
    build_warehouse(defs, instance, run)
    return run


@dataclass(frozen=True)
class AnnotationRound:
    """One domain's annotation jobs, and where the simulated annotators find their answers."""

    what: str
    loop: AnnotationLoop
    candidates: str
    """The candidates asset (its job is `<candidates>_job`)."""
    answers_sql: str
    """(ext_id, label) of a batch's items, from the labels hidden at ingestion."""
    control: tuple[str, str]
    batch_job: str
    annotated_job: str
    labels_job: str


REQUEST_ROUND = AnnotationRound(
    "requests",
    REQUEST_ANNOTATION,
    "annotation_candidates",
    "select i.ext_id, h.intent from annotation_items i "
    "join hidden_labels h using (request_id) where i.batch_id = ?",
    (FROM_NAME, TO_NAME),
    "annotation_batch_job",
    "annotated_batch_job",
    "labeled_requests_job",
)
DEFECT_ROUND = AnnotationRound(
    "images",
    DEFECT_ANNOTATION,
    "defect_annotation_candidates",
    "select i.ext_id, case when h.defective then 'defective' else 'functional' end "
    "from defect_annotation_items i join hidden_defect_labels h using (image_id) "
    "where i.batch_id = ?",
    (IMAGE_FROM_NAME, IMAGE_TO_NAME),
    "defect_annotation_batch_job",
    "defect_annotated_batch_job",
    "labeled_defect_images_job",
)


def run_annotation_round(
    defs: Definitions,
    instance: DagsterInstance,
    admin: LabelStudioClient,
    warehouse: Warehouse,
    run: PipelineRun,
    batch_size: int,
    error_rates: tuple[float, float] = (0.05, 0.1),
    labels: Sequence[str] = (),
    round_: AnnotationRound = REQUEST_ROUND,
) -> None:
    """One batch through the loop with simulated annotators (the demo's stand-in for people):
    candidates → tasks → two annotators → reviews of disagreements → gate → labeled data.
    `labels`: the choices (default: the intent taxonomy)."""
    loop = round_.loop
    picked = execute_quietly(
        defs,
        instance,
        f"{round_.candidates}_job",
        config={"ops": {round_.candidates: {"config": {"batch_size": batch_size}}}},
    )
    event = instance.get_latest_materialization_event(AssetKey(round_.candidates))
    batch = event.asset_materialization.metadata["batch"].value if picked.success else "none"
    run.record(f"annotation candidates ({round_.what})", picked, f"(batch {batch})")
    if batch == "none":
        return
    run.record(
        f"annotation batch ({round_.what}) → Label Studio",
        execute_quietly(defs, instance, round_.batch_job, partition=batch),
    )
    answers = dict(warehouse.query(round_.answers_sql, [batch]).iter_rows())
    if not labels:
        intake = defs.resources["request_intake"].process_config_and_initialize()
        labels = intake.taxonomy().intents
    project = admin.find_project(loop.project_title(batch))
    for seed, (name, rate) in enumerate(zip(("ada", "ben"), error_rates, strict=True)):
        annotator = simulated_annotator(admin, name, rate, seed)
        done = annotator.annotate(project, answers, labels, control=round_.control)
        run.report(f"  ok   {done} annotations by {annotator.email} (simulated)")
    run.record(
        f"annotated batch ({round_.what}, kappa gate)",
        execute_quietly(defs, instance, round_.annotated_job, partition=batch),
    )
    review = admin.find_project(loop.review_title(batch))
    if review is not None:
        reviewer = simulated_annotator(admin, "cleo", 0.0, seed=7)
        reviewed = reviewer.annotate(
            review,
            {f"review:{ext}": label for ext, label in answers.items()},
            labels,
            control=round_.control,
        )
        run.report(f"  ok   {reviewed} reviews by {reviewer.email} (simulated)")
    run.record(f"labeled {round_.what}", execute_quietly(defs, instance, round_.labels_job))
    build_warehouse(defs, instance, run)


QUICK_TRANSFORMER = {
    "epochs": 1,
    "batch_size": 32,
    "max_length": 48,
    "max_train_samples": 1024,
    "max_validation_samples": 256,
}
"""A smoke run that fits a laptop-sized demo on CPU (a minute or two): a real but small
fine-tune, far from what the model can reach (`make demo`, `make demo-real QUICK=1`)."""

FULL_TRANSFORMER = {"progress_bar": True}
"""The tuned training (TransformerConfig's epochs and learning rate, chosen on banking77's
validation split) on every training row, with a progress bar: about 8 minutes for banking77 on 2
idle CPU cores (446 s measured), the whole `make demo-real` about 20."""


def train_request_models(
    defs: Definitions,
    instance: DagsterInstance,
    run: PipelineRun,
    transformer: dict,
) -> None:
    """Freeze the test version (first time only), train every candidate (baseline, tuned
    linear model, transformer with `transformer`'s config, ensemble), register them and let the
    promotion gate pick the champion."""
    run.record(
        "request models (baseline, tuned linear, transformer, ensemble, promotion gate)",
        execute_quietly(
            defs,
            instance,
            "request_models_job",
            config={"ops": {"request_classifier": {"config": transformer}}},
        ),
    )


QUICK_CNN = {"input_size": 96, "epochs": 3, "batch_size": 32}
"""The demo's CNN on its small generated cells: a minute on CPU."""
FULL_CNN = {"input_size": 160, "epochs": 8, "progress_bar": True}
"""`make demo-real`'s CNN on the 2,624 packaged cells, sized for 2 CPU cores (about 15 min);
`benchmarks/defect_quality.py` trains it at its own 224 px for the reported figures."""


def train_defect_models(
    defs: Definitions, instance: DagsterInstance, run: PipelineRun, cnn: dict
) -> None:
    """Freeze the test version (first time only), train the baseline and the CNN (`cnn`'s
    config), register both and let the promotion gate pick the champion."""
    run.record(
        "defect models (baseline, CNN, promotion gate)",
        execute_quietly(
            defs,
            instance,
            "defect_training_job",
            config={"ops": {"defect_cnn": {"config": cnn}}},
        ),
    )


CPU_FORECASTING = {"epochs": 8, "hidden_size": 32, "trees": 80}
"""The global models' training kept to a couple of minutes each on 2 CPU cores."""


def train_demand_models(
    defs: Definitions,
    instance: DagsterInstance,
    run: PipelineRun,
    forecasting: dict | None = None,
) -> None:
    """Backtest every forecasting model, register the best and the best baseline, gate the
    champion and write its forecasts."""
    config = forecasting or CPU_FORECASTING
    run.record(
        "demand models (backtests, forecaster, promotion gate, forecasts)",
        execute_quietly(
            defs,
            instance,
            "demand_models_job",
            config={
                "ops": {
                    "demand_backtests": {"config": config},
                    "demand_forecaster": {"config": config},
                }
            },
        ),
    )
