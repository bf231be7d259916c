"""Nothing that cannot be rebuilt lives in one file only: the lineage tables (frozen test
versions, label versions, split assignments, annotation history) are snapshotted by the real
asset and restored by the real CLI into a fresh data home, checked row by row; a changed,
missing or half-written snapshot is refused, naming the table."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, materialize

from assets.annotation_loop import MIN_KAPPA_THRESHOLD
from assets.requests.datasets import request_test_set
from assets.resources import DataHome, Warehouse
from ml.annotation.label_studio_client import LabelStudioClient
from ml.data.ingestion import file_sha256
from ml.data.lineage_snapshot import LINEAGE_TABLES, MANIFEST
from ml.requests.taxonomy import synthetic_taxonomy
from ml.settings import PROJECT_ROOT, Settings
from ml.synthetic.requests import generate_requests
from orchestration import restore
from orchestration.definitions import build_definitions
from orchestration.labelstudio import LabelStudioServer
from orchestration.pipeline import execute_quietly, run_platform
from orchestration.simulated_annotators import simulated_annotator
from tests.conftest import small_demand_source, write_request_drop
from tests.integration.test_annotation_loop import Loop, annotate


@dataclass
class Lineage:
    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    snapshot: Path
    fingerprints: dict[str, tuple[dict[str, str], int, str]]

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(path=str(self.settings.warehouse_path))

    def take_snapshot(self) -> Path:
        assert execute_quietly(self.defs, self.instance, "lineage_snapshot_job").success
        event = self.instance.get_latest_materialization_event(AssetKey("lineage_snapshot"))
        return Path(event.asset_materialization.metadata["snapshot"].value)


def fingerprint(warehouse: Warehouse, table: str) -> tuple[dict[str, str], int, str]:
    """(column types, rows, sha256 of the sorted rows) read through polars: computed apart from
    the snapshot's own manifest and hashing."""
    frame = warehouse.query(f"select * from {table}")
    rows = sorted(repr(row) for row in frame.iter_rows())
    digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return {name: str(kind) for name, kind in frame.schema.items()}, frame.height, digest


def tables_in(warehouse: Warehouse) -> set[str]:
    if not Path(warehouse.path).exists():
        return set()
    return set(warehouse.query("select table_name from information_schema.tables")["table_name"])


@pytest.fixture(scope="module")
def lineage(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    label_studio_admin: LabelStudioClient,
) -> Iterator[Lineage]:
    """Labeled and unlabeled drops through the real assets: splits, a first test version; one
    batch of 12 through the real annotation loop (Label Studio, two scripted annotators who
    disagree on a few requests): label version 1 with those pending, a third person's review,
    label version 2; a second test version cut on purpose, then `lineage_snapshot_job`."""
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("lineage") / "data_home"
        env.setenv("MLOPS_DATA_HOME", str(home))
        env.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
        env.setenv("DAGSTER_HOME", str(home / "dagster"))
        env.setenv("MLOPS_LABEL_STUDIO_URL", label_studio.config.url)
        env.setenv("MLOPS_LABEL_STUDIO_TOKEN", label_studio.config.token)
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = Settings.from_env()
        write_request_drop(settings, "jan.csv", rows=300, seed=1)
        unlabeled = Path(settings.request_drops_uri) / "synthetic_unlabeled"
        unlabeled.mkdir(parents=True)
        generate_requests(
            60,
            seed=4,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            end=datetime(2026, 1, 31, tzinfo=UTC),
        ).write_csv(unlabeled / "stream.csv")
        defs = build_definitions(settings, small_demand_source(settings))
        instance = DagsterInstance.ephemeral()
        assert run_platform(defs, instance, DataHome(path=str(home))).success

        def freeze_test_set(config: dict) -> None:
            assert materialize(
                [request_test_set],
                instance=instance,
                resources={"warehouse": defs.resources["warehouse"]},
                run_config={"ops": {"request_test_set": {"config": config}}},
            ).success

        freeze_test_set({})
        loop = Loop(settings, defs, instance, label_studio_admin)
        batch = loop.new_batch(size=12)
        annotate(loop, batch, error_rates=(0.0, 0.5))
        lenient = {"kappa_threshold": MIN_KAPPA_THRESHOLD}
        collect = {"ops": {"annotated_batch": {"config": lenient}}}
        assert loop.run("annotated_batch_job", batch, config=collect).success
        assert loop.run("labeled_requests_job").success
        review, answers = loop.review(batch)
        reviewer = simulated_annotator(loop.admin, "cid-0", 0.0, seed=4)
        assert reviewer.annotate(review, answers, synthetic_taxonomy().intents) > 0
        assert loop.run("labeled_requests_job").success
        assert execute_quietly(defs, instance, "warehouse_job").success
        freeze_test_set({"cut_new_version": True, "reason": "annotated test rows arrived"})
        warehouse = Warehouse(path=str(settings.warehouse_path))
        fingerprints = {table: fingerprint(warehouse, table) for table in LINEAGE_TABLES}
        platform = Lineage(settings, defs, instance, Path(), fingerprints)
        platform.snapshot = platform.take_snapshot()
        yield platform


def restore_into(data_home: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m orchestration.restore …` as a person runs it, against `data_home`."""
    env = {
        **os.environ,
        "MLOPS_DATA_HOME": str(data_home),
        "MLOPS_WAREHOUSE_PATH": str(data_home / "warehouse.duckdb"),
        "DAGSTER_HOME": str(data_home / "dagster"),
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestration.restore", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_fresh_data_home_gets_back_every_test_version_and_label_version(
    lineage: Lineage, tmp_path: Path
) -> None:
    empty = [table for table, (_, rows, _) in lineage.fingerprints.items() if not rows]
    assert not empty, f"the platform left {empty} empty: nothing to prove on them"
    fresh = tmp_path / "fresh_home"
    done = restore_into(fresh, str(lineage.snapshot))
    assert done.returncode == 0, done.stderr
    restored = Warehouse(path=str(fresh / "warehouse.duckdb"))
    assert tables_in(restored) == set(LINEAGE_TABLES)
    for table in LINEAGE_TABLES:
        assert fingerprint(restored, table) == lineage.fingerprints[table], table
    assert restored.query("select distinct test_version from request_test_sets order by 1")[
        "test_version"
    ].to_list() == [1, 2]
    assert restored.query("select version from labeled_request_versions order by 1")[
        "version"
    ].to_list() == [1, 2]
    manifest = json.loads((lineage.snapshot / MANIFEST).read_text())
    assert manifest["absent"] == [] and "lineage_snapshot_job" in manifest["reason"]


def test_after_a_restore_the_next_dbt_build_keeps_every_split_assignment(
    lineage: Lineage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "rebuilt_home"
    assert restore.main([str(lineage.snapshot), "--data-home", str(home)]) == 0
    monkeypatch.setenv("MLOPS_DATA_HOME", str(home))
    monkeypatch.setenv("MLOPS_WAREHOUSE_PATH", str(home / "warehouse.duckdb"))
    settings = Settings.from_env()
    for source in ("synthetic", "synthetic_unlabeled"):
        shutil.copytree(
            Path(lineage.settings.request_drops_uri) / source,
            Path(settings.request_drops_uri) / source,
        )
    defs = build_definitions(settings, small_demand_source(settings))
    assert run_platform(defs, DagsterInstance.ephemeral(), DataHome(path=str(home))).success
    splits = "select text_key, stratum, position, split from split_assignments"
    assert (
        Warehouse(path=str(settings.warehouse_path))
        .query(splits)
        .sort("text_key")
        .equals(lineage.warehouse.query(splits).sort("text_key"))
    )


def copy_of_snapshot(lineage: Lineage, tmp_path: Path) -> Path:
    copy = tmp_path / "snapshots" / lineage.snapshot.name
    shutil.copytree(lineage.snapshot, copy)
    return copy


def relabel_one_row(path: Path) -> None:
    """A valid Parquet file with one label changed: only the snapshot's hashes can tell."""
    frame = pl.read_parquet(path)
    frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("card_lost"))
        .otherwise(pl.col("intent"))
        .alias("intent")
    ).write_parquet(path)


def test_a_table_file_changed_after_the_snapshot_is_refused_naming_the_table(
    lineage: Lineage, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    snapshot = copy_of_snapshot(lineage, tmp_path)
    relabel_one_row(snapshot / "labeled_requests.parquet")
    home = tmp_path / "fresh_home"
    assert restore.main([str(snapshot), "--data-home", str(home)]) == 1
    error = capsys.readouterr().err
    assert "table labeled_requests" in error and snapshot.name in error
    assert "changed after the snapshot" in error
    assert tables_in(Warehouse(path=str(home / "warehouse.duckdb"))) == set()


def test_a_manifest_edited_to_match_a_changed_file_is_caught_by_the_row_hash(
    lineage: Lineage, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    snapshot = copy_of_snapshot(lineage, tmp_path)
    relabel_one_row(snapshot / "labeled_requests.parquet")
    manifest = json.loads((snapshot / MANIFEST).read_text())
    manifest["tables"]["labeled_requests"]["file_sha256"] = file_sha256(
        snapshot / "labeled_requests.parquet"
    )
    (snapshot / MANIFEST).write_text(json.dumps(manifest))
    home = tmp_path / "fresh_home"
    assert restore.main([str(snapshot), "--data-home", str(home)]) == 1
    error = capsys.readouterr().err
    assert "table labeled_requests reads back as" in error and "nothing was restored" in error
    assert tables_in(Warehouse(path=str(home / "warehouse.duckdb"))) == set(), "all or nothing"


def test_a_snapshot_missing_a_table_file_is_refused_naming_the_table(
    lineage: Lineage, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    snapshot = copy_of_snapshot(lineage, tmp_path)
    (snapshot / "request_test_sets.parquet").unlink()
    home = tmp_path / "fresh_home"
    assert restore.main([str(snapshot), "--data-home", str(home)]) == 1
    error = capsys.readouterr().err
    assert "table request_test_sets is incomplete" in error and snapshot.name in error
    assert tables_in(Warehouse(path=str(home / "warehouse.duckdb"))) == set()


def test_a_half_written_snapshot_is_never_latest_and_is_refused_by_name(
    lineage: Lineage, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = tmp_path / "fresh_home"
    snapshots = home / "snapshots"
    shutil.copytree(lineage.snapshot, snapshots / lineage.snapshot.name)
    later = snapshots / "29991231T235959000000Z"
    shutil.copytree(lineage.snapshot, later)
    (later / MANIFEST).unlink()  # interrupted before its manifest was written
    shutil.copytree(lineage.snapshot, snapshots / ".incomplete-29991231T235959999999Z-x")
    assert restore.main([str(later), "--data-home", str(home)]) == 1
    assert f"snapshot {later} is incomplete" in capsys.readouterr().err
    assert restore.main(["latest", "--data-home", str(home)]) == 0
    assert f"restored snapshot {lineage.snapshot.name}" in capsys.readouterr().out


def test_restoring_over_a_warehouse_with_rows_needs_force(
    lineage: Lineage, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = tmp_path / "used_home"
    shutil.copytree(lineage.settings.data_home, home, ignore=shutil.ignore_patterns("dagster"))
    used = Warehouse(path=str(home / "warehouse.duckdb"))
    with used.connect() as con:
        con.execute("delete from request_test_sets where test_version = 2")
    assert restore.main([str(lineage.snapshot), "--data-home", str(home)]) == 1
    error = capsys.readouterr().err
    assert "refusing to overwrite" in error and "request_test_sets (" in error
    assert "labeled_requests (" in error
    assert restore.main([str(lineage.snapshot), "--data-home", str(home), "--force"]) == 0
    assert "replaced" in capsys.readouterr().out
    for table in LINEAGE_TABLES:
        assert fingerprint(used, table) == lineage.fingerprints[table], table
    assert "stg_requests" in tables_in(used), "the other tables are left alone"


HOLD_READ_ONLY = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("select count(*) from request_test_sets").fetchall()
print("reading", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_snapshot_never_takes_the_write_lock_it_reads_beside_an_analyst(
    lineage: Lineage,
) -> None:
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD_READ_ONLY, str(lineage.settings.warehouse_path), "40"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "reading"
        started = time.monotonic()
        snapshot = lineage.take_snapshot()
        assert reader.poll() is None, "the snapshot waited for the reader to leave"
        assert time.monotonic() - started < 30
    finally:
        reader.kill()
        reader.wait(timeout=30)
    manifest = json.loads((snapshot / MANIFEST).read_text())
    assert {t: e["rows"] for t, e in manifest["tables"].items()} == {
        t: rows for t, (_, rows, _) in lineage.fingerprints.items()
    }


def test_the_classifiers_train_only_after_a_lineage_snapshot(lineage: Lineage) -> None:
    graph = lineage.defs.resolve_asset_graph()
    snapshot = AssetKey("lineage_snapshot")
    for trained in ("request_baseline", "request_tuned_linear", "request_classifier"):
        assert snapshot in graph.get(AssetKey(trained)).parent_keys, trained
    for job in ("request_models_job", "request_retraining_job", "lineage_snapshot_job"):
        assert snapshot in lineage.defs.resolve_job_def(job).asset_layer.selected_asset_keys, job
    schedule = lineage.defs.resolve_schedule_def("lineage_snapshot_schedule")
    assert schedule.job_name == "lineage_snapshot_job" and schedule.cron_schedule == "30 2 * * *"
