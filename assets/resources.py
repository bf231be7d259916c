"""Thin resources over the data home and the DuckDB warehouse. Configured from the environment
(see `.env.example`); the embedded default needs no server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableResource, EnvVar
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG
from dagster_dbt import DbtCliResource
from pydantic import Field

from ml.annotation.label_studio_client import LabelStudioClient
from ml.annotation.trust import AnnotatorAllowList
from ml.data import objects
from ml.data.ingestion import DEFAULT_MAX_DROP_BYTES
from ml.data.warehouse import (
    DuckDBWarehouse,
    PostgresWarehouse,
    WarehouseSession,
    open_warehouse,
)
from ml.lifecycle.economics import BusinessCase, load_business_case
from ml.lifecycle.registry import Registry
from ml.lifecycle.release import ReleasePolicy
from ml.monitoring.drift import DriftThresholds
from ml.requests.taxonomy import Taxonomy, load_taxonomy
from ml.security.secret_files import read_private_file
from ml.settings import (
    DBT_PROJECT_DIR,
    PROJECT_ROOT,
    Settings,
    environment_set,
    executable,
    secret_from_environment,
)
from serving.package import bentoml_environment

DUCKDB_POOL = "duckdb_writer"
"""Assets that write the DuckDB warehouse run one at a time (DuckDB has one writer)."""
LAUNCHED_BY_TAG = "mlops/launched_by"
"""Run tag: the Dagster UI account that launched the run (set by the login proxy's launch
recorder, orchestration/launch_recorder.py); absent on runs of schedules and sensors."""


def launched_by(run_tags: Mapping[str, str]) -> str:
    """Who launched a run, for an audit record: the UI account, else what started it."""
    if LAUNCHED_BY_TAG in run_tags:
        return run_tags[LAUNCHED_BY_TAG]
    for tag in ("dagster/schedule_name", "dagster/sensor_name"):
        if tag in run_tags:
            return f"{tag.removeprefix('dagster/').removesuffix('_name')} {run_tags[tag]}"
    return "not launched from the UI"


GPU_QUEUE = "gpu"
GPU_STEP = {DAGSTER_CELERY_QUEUE_TAG: GPU_QUEUE}
"""Tags of a step that wants an accelerator: under the Celery executor it goes to the `gpu`
queue, which workers on GPU machines listen to; other executors ignore the tag."""

REGISTRY_POOL = "model_registry_aliases"
"""Dagster pool of everything that moves a registry alias (the promotion gates, the rollback):
one at a time per deployment (the instance's default pool limit is 1). The registry's own lock
and compare-and-set still guard moves made outside Dagster."""


class DataHome(ConfigurableResource):
    """Every file the platform writes lives under this folder (production: a mounted volume)."""

    path: str
    raw_uri: str = ""
    """Where the raw copies go (MLOPS_RAW_URI: a folder or an object-store URI such as
    s3://bucket/raw); '' = `raw/` under the data home."""

    @property
    def root(self) -> Path:
        return Path(self.path)

    @property
    def raw_location(self) -> str:
        return self.raw_uri.rstrip("/") or str(self.root / "raw")

    @property
    def drop_registry_dir(self) -> Path:
        return self.root / "drop_registry"

    @property
    def refused_drops_dir(self) -> Path:
        """One quarantine manifest per file of the drops folder refused as a drop, with why."""
        return self.root / "quarantine" / "drops"

    def raw_partition_uri(self, domain: str, partition_key: str) -> str:
        """The immutable raw copy of one partition, exactly as read (all text)."""
        return f"{self.raw_location}/{domain}/{partition_key}.parquet"


class Warehouse(ConfigurableResource):
    """The warehouse: the DuckDB file at `path` (the embedded default), or the PostgreSQL
    database `url` names (the production profile: MLOPS_WAREHOUSE_DATABASE_URL). Callers write
    one SQL for both (see ml/data/warehouse.py)."""

    path: str
    url: str = ""

    @property
    def backend(self) -> DuckDBWarehouse | PostgresWarehouse:
        return open_warehouse(self.path, self.url)

    @property
    def is_duckdb(self) -> bool:
        return not self.url

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection, for what works on the file itself (snapshots, erasure's
        compaction)."""
        backend = self.backend
        if not isinstance(backend, DuckDBWarehouse):
            raise NotImplementedError(
                "this works on the embedded DuckDB warehouse only; the PostgreSQL warehouse "
                "(MLOPS_WAREHOUSE_DATABASE_URL) is backed up and restored with pg_dump/pg_restore"
            )
        with backend.connect(read_only=read_only) as connection:
            yield connection

    def table_exists(self, table: str) -> bool:
        return self.backend.table_exists(table)

    def query_if_exists(
        self, table: str, sql: str, params: list | None, empty: Mapping[str, pl.DataType]
    ) -> pl.DataFrame:
        """`sql`'s rows, or an empty frame of schema `empty` while `table` does not exist yet
        (the first drop, the first batch): one connection for both questions."""
        return self.backend.query_if_exists(table, sql, params, empty)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        return self.backend.query(sql, params)

    def execute(self, sql: str, params: list | None = None) -> None:
        """One statement that changes rows in place (an update), in a transaction of its own."""
        self.backend.execute(sql, params)

    def replace_rows(self, table: str, frame: pl.DataFrame, where: str, params: list) -> None:
        """Delete the rows `where` selects and insert `frame`, in one transaction: re-running a
        partition replaces it, never duplicates it."""
        self.replace_rows_together([(table, frame, where, params)])

    def replace_rows_together(self, changes: list[tuple[str, pl.DataFrame, str, list]]) -> None:
        """`replace_rows` for several tables (table, frame, where, params) in one transaction:
        a reader sees all of a partition's tables before or after, never half of them."""
        self.backend.replace_rows_together(changes)

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        """`table` becomes `frame`, columns and all, in one transaction (for a table whose
        columns follow its source, such as the store attributes)."""
        self.backend.replace_table(table, frame)

    def add_column_if_missing(self, table: str, column: str, definition: str) -> None:
        """Give an existing table a column it predates (`definition`: type and default)."""
        self.backend.add_column_if_missing(table, column, definition)

    def exists(self) -> bool:
        """Whether there is a warehouse yet (the DuckDB file is made by the first write)."""
        return self.backend.exists()

    def transaction(self) -> AbstractContextManager[WarehouseSession]:
        """Statements in one transaction, committed together or not at all."""
        return self.backend.transaction()

    def compact(self) -> None:
        """Rewrite the stored tables so no freed page keeps deleted rows' bytes (erasure)."""
        self.backend.compact()

    @contextmanager
    def dbt_environment(self) -> Iterator[None]:
        """dbt reads its target and the warehouse's location from the environment (see
        dbt_project/profiles.yml)."""
        with environment_set(**self.backend.dbt_variables()):
            yield


def warehouse_of(settings: Settings) -> Warehouse:
    """The deployment's warehouse, outside a run (the demo, the CLI, tests)."""
    return Warehouse(path=str(settings.warehouse_path), url=settings.warehouse_url)


class RequestIntake(ConfigurableResource):
    """Where request drops land, and what they are checked against."""

    drops_uri: str
    """The folder watched for drops, one sub-folder per source (a path or any fsspec URI)."""
    taxonomy_path: str
    max_age_days: float | None = None
    """A live feed promises its newest request is at most this old; None for static files."""
    hidden_label_sources: list[str] = Field(default_factory=list)
    """Sources whose labels are kept aside at ingestion: their requests arrive unlabeled."""
    max_drop_bytes: int = DEFAULT_MAX_DROP_BYTES
    """A dropped file larger than this is refused (recorded with the reason), never read."""

    def taxonomy(self) -> Taxonomy:
        return load_taxonomy(Path(self.taxonomy_path))


class DefectIntake(ConfigurableResource):
    """Where image drops land and valid cell images are kept, and what a drop may hold."""

    drops_uri: str
    """The folder watched for image drops, one sub-folder per source (a path or fsspec URI)."""
    image_uri: str
    """Valid images by content id: `<image_uri>/<image id><suffix>`."""
    max_drop_bytes: int = DEFAULT_MAX_DROP_BYTES
    max_quarantine_share: float = 0.5
    """A drop with more of its files quarantined than this is blocked as a whole (a wrong
    camera setting, a wrong folder): its valid images are not published either."""
    hidden_label_sources: list[str] = Field(default_factory=list)
    """Sources whose labels are kept aside at ingestion: their images arrive unlabeled."""

    def image_location(self, image_id: str, file_name: str) -> str:
        suffix = Path(file_name).suffix.lower() or ".png"
        return objects.join(self.image_uri, f"{image_id}{suffix}")


class LabelStudioResource(ConfigurableResource):
    """The Label Studio server annotators work in. Its admin token is read when needed from the
    environment variable, else from the file the local server keeps; never held in config."""

    url: str
    token_env_var: str = "MLOPS_LABEL_STUDIO_TOKEN"
    token_file: str = ""
    annotators: str = ""
    """The allow-list (MLOPS_ANNOTATORS): e-mail addresses or @domain, comma-separated; only
    their annotations count."""

    def allow_list(self) -> AnnotatorAllowList:
        return AnnotatorAllowList.parse(self.annotators)

    def client(self) -> LabelStudioClient:
        token = secret_from_environment(self.token_env_var)
        if not token and self.token_file and Path(self.token_file).exists():
            token = read_private_file(Path(self.token_file)).strip()
        if not token:
            raise PermissionError(
                f"no Label Studio token: set {self.token_env_var} (or start the local server "
                "with `make labelstudio`, which keeps one in the data home)"
            )
        return LabelStudioClient(self.url, token)


class ModelRegistry(ConfigurableResource):
    """MLflow tracking and model registry: a SQLite file under the data home by default, an
    `mlflow server` (PostgreSQL backend) in production (MLFLOW_TRACKING_URI)."""

    tracking_uri: str
    artifact_root: str = ""

    def registry(self) -> Registry:
        return Registry(self.tracking_uri, self.artifact_root)


class BentoStore(ConfigurableResource):
    """BentoML's model and Bento store (BENTOML_HOME under the data home by default). Packaging
    runs in a process of its own: BentoML reads BENTOML_HOME once, when it is imported."""

    home: str
    publish_uri: str = ""
    """MLOPS_BENTO_URI: where each Bento is also exported as an archive, with the pointer to
    the current one, for serving machines that do not share this store ('' = none)."""

    def package(
        self,
        tracking_uri: str,
        versions: Mapping[str, str],
        challengers: Mapping[str, str] | None = None,
    ) -> dict[str, object]:
        """Import the MLflow `versions` ({model: version}) and their `challengers` and build
        (or find) their Bento; published when a `publish_uri` is set."""
        command = [sys.executable, "-m", "serving.package", "--tracking-uri", tracking_uri]
        if self.publish_uri:
            command += ["--publish-uri", self.publish_uri]
        for model, version in versions.items():
            command += [f"--{model.replace('_', '-')}-version", version]
        for model, version in (challengers or {}).items():
            command += [f"--{model.replace('_', '-')}-challenger", version]
        done = subprocess.run(
            command,
            env=bentoml_environment(Path(self.home)),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"packaging {dict(versions)} as a Bento failed (exit {done.returncode}):\n"
                f"{done.stderr[-3000:]}"
            )
        return json.loads(done.stdout.strip().splitlines()[-1])


class Monitoring(ConfigurableResource):
    """Where the service's prediction logs and the whylogs profiles live (folders or
    object-store URIs), and the thresholds that say drift: shared by the monitoring assets and
    the drift sensor."""

    log_dir: str
    profile_uri: str
    """The whylogs profiles, drift references and drift reports (MLOPS_PROFILE_URI)."""
    drift_alpha: float = DriftThresholds.alpha
    """The false-alarm rate per window: calm traffic drifts in at most this share of windows,
    across all the columns tested at once (their p-values corrected, see `drift_correction`)."""
    drift_correction: str = DriftThresholds.correction
    """holm (default), bonferroni or none: how the columns' p-values are corrected."""
    hellinger_distance: float = DriftThresholds.hellinger_distance
    """A column scored by Hellinger drifts at this distance or more."""
    column_algorithms: dict[str, str] = Field(default_factory=dict)
    """Per-column algorithm over the defaults (KS for numbers, chi-square for categories), e.g.
    {"confidence": "hellinger"}."""
    min_effect: dict[str, float] = Field(default_factory=dict)
    """Per column, the smallest move that counts as drift (median, or a category's share), e.g.
    {"confidence": 0.05}; demand's residual columns default to
    ml.monitoring.forecast_error.RESIDUAL_MIN_EFFECT."""
    min_rows: int = 50
    """Fewer answers than this in a window: "too little traffic", no verdict, nothing requested."""
    min_reference_ratio: float = 2.0
    """The reference holds at least this many answers per answer judged: a larger window is
    judged on a seeded sample of reference rows / ratio of its answers (the report says so)."""
    drift_persistence: int = 1
    """Consecutive drifted hours before the drift sensor requests retraining (2: one drifted hour
    alone is noted, not acted on)."""
    forecast_wape_threshold: float | None = None
    """Also drift when the demand champion's realized WAPE exceeds this (off by default: its
    own backtest errors are the yardstick, and a fixed WAPE ceiling alarms on series that are
    hard to forecast however calm they are)."""
    retrain_min_interval_hours: float = 6.0
    """At most one drift-triggered retraining per model in this many hours."""

    def profile(self, *parts: str) -> str:
        """Where `parts` (e.g. "drift", "<window>.json") live under the profile store."""
        return objects.join(self.profile_uri, *parts)

    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(
            alpha=self.drift_alpha,
            correction=self.drift_correction,
            hellinger_distance=self.hellinger_distance,
            column_algorithms=dict(self.column_algorithms),
            min_effect=dict(self.min_effect),
        )


class ReleaseControl(ConfigurableResource):
    """Where the staged-release state and the service's request log live, and when a release
    step may advance (`ml.lifecycle.release.ReleasePolicy`; these are its defaults)."""

    state_path: str
    request_log_dir: str
    prediction_log_dir: str
    canary_steps: list[float] = Field(default_factory=lambda: list(ReleasePolicy.canary_steps))
    shadow_share: float = ReleasePolicy.shadow_share
    min_requests: int = ReleasePolicy.min_requests
    max_error_rate_increase: float = ReleasePolicy.max_error_rate_increase
    max_p99_ratio: float = ReleasePolicy.max_p99_ratio
    p99_slack_ms: float = ReleasePolicy.p99_slack_ms
    min_shadow_agreement: float = ReleasePolicy.min_shadow_agreement
    max_accuracy_drop: float = ReleasePolicy.max_accuracy_drop
    min_labeled: int = ReleasePolicy.min_labeled
    promotion_margin: float = 0.005
    """At the end of the canary the challenger may trail the champion's offline score by at
    most this (the request gate's margin)."""

    def policy(self) -> ReleasePolicy:
        return ReleasePolicy(
            canary_steps=tuple(self.canary_steps),
            shadow_share=self.shadow_share,
            min_requests=self.min_requests,
            max_error_rate_increase=self.max_error_rate_increase,
            max_p99_ratio=self.max_p99_ratio,
            p99_slack_ms=self.p99_slack_ms,
            min_shadow_agreement=self.min_shadow_agreement,
            max_accuracy_drop=self.max_accuracy_drop,
            min_labeled=self.min_labeled,
        )


def _configured(settings: Settings, setting: str) -> str:
    """The setting's value, or the Dagster `EnvVar` that set it (the UI then names the
    variable, and the run reads the same variable)."""
    value = str(getattr(settings, setting))
    variable = settings.variables.get(setting)
    if variable is not None and variable[1] == value:
        return EnvVar(variable[0])
    return value


class BusinessCaseFile(ConfigurableResource):
    """The prices and business figures models are priced with (ml/lifecycle/economics.py)."""

    path: str

    def load(self) -> BusinessCase:
        return load_business_case(Path(self.path))


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources of one deployment, from `Settings`; what the environment set stays an
    `EnvVar`."""

    return {
        "data_home": DataHome(
            path=_configured(settings, "data_home"), raw_uri=_configured(settings, "raw_uri")
        ),
        "warehouse": Warehouse(
            path=_configured(settings, "warehouse_path"), url=_configured(settings, "warehouse_url")
        ),
        "request_intake": RequestIntake(
            drops_uri=_configured(settings, "request_drops_uri"),
            taxonomy_path=_configured(settings, "intent_taxonomy"),
            max_age_days=settings.request_max_age_days,
            hidden_label_sources=list(settings.hidden_label_sources),
            max_drop_bytes=settings.max_drop_bytes,
        ),
        "defect_intake": DefectIntake(
            drops_uri=_configured(settings, "defect_drops_uri"),
            image_uri=_configured(settings, "image_uri"),
            max_drop_bytes=settings.max_drop_bytes,
            hidden_label_sources=list(settings.hidden_label_sources),
        ),
        "label_studio": LabelStudioResource(
            url=_configured(settings, "label_studio_url"),
            token_file=str(settings.data_home / "labelstudio" / ".admin_token"),
            annotators=settings.annotators,
        ),
        "model_registry": ModelRegistry(
            tracking_uri=_configured(settings, "tracking_uri"),
            artifact_root=_configured(settings, "artifact_root"),
        ),
        "bento_store": BentoStore(
            home=_configured(settings, "bentoml_home"),
            publish_uri=_configured(settings, "bento_uri"),
        ),
        "monitoring": Monitoring(
            log_dir=_configured(settings, "prediction_log_uri"),
            profile_uri=_configured(settings, "profile_uri"),
        ),
        "release_control": ReleaseControl(
            state_path=str(settings.release_state_path),
            request_log_dir=str(settings.request_log_dir),
            prediction_log_dir=_configured(settings, "prediction_log_uri"),
        ),
        "business_case": BusinessCaseFile(path=_configured(settings, "business_case")),
        "dbt": DbtCliResource(
            project_dir=str(DBT_PROJECT_DIR),
            profiles_dir=str(DBT_PROJECT_DIR),
            dbt_executable=executable("dbt"),
        ),
    }
