"""One settings module, and the only reader of the environment: every path the platform reads
or writes and every setting it takes from a variable, resolved here.

The embedded default needs no configuration: everything lives under one data home (a git-ignored
folder in the checkout); production changes only environment variables.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ml.data.ingestion import DEFAULT_MAX_DROP_BYTES
from ml.requests.taxonomy import SYNTHETIC_TAXONOMY_PATH

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def executable(name: str) -> str:
    """The `name` console script installed beside this Python, so a venv works without being
    on PATH; else whatever PATH finds."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


SECRET_VARIABLE = re.compile(
    r"PASSWORD|SECRET|TOKEN|API_KEYS?$|ADMIN_KEY$|PRIVATE_KEY|CREDENTIALS?$|FERNET|ENCRYPTION_KEY"
    r"|DATABASE_URL$",
    re.IGNORECASE,
)
"""Names of variables that hold secrets: a child process gets one only when it is handed it."""
REGISTRY_CLIENT_SECRETS = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
"""What a process that reads the MLflow registry (and its artifact store) needs."""


@dataclass(frozen=True)
class PostgresURL:
    """A PostgreSQL database's URL in parts, as the clients that take them separately (dbt,
    Label Studio) want them."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    @classmethod
    def parse(cls, url: str, variable: str) -> PostgresURL:
        """postgresql://user[:password]@host[:port]/database, or an error naming `variable`."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
            raise ValueError(
                f"{variable}: expected postgresql://user@host:port/database, "
                f"got a {parts.scheme or 'schemeless'} URL"
            )
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.strip("/")),
        )

    def without_password(self) -> str:
        """To print: where the database is, never its password."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def environment_with(
    defaults: Mapping[str, str] | None = None, passing: Iterable[str] = (), **overrides: str
) -> dict[str, str]:
    """What a child process (dbt, bentoml, torchrun, Label Studio) is started with: `defaults`
    unless this process's environment sets them, then the environment without its secrets
    (but those named in `passing`), then `overrides`."""
    return {**(defaults or {}), **child_environment(passing), **overrides}


def child_environment(passing: Iterable[str] = (), **values: str) -> dict[str, str]:
    """This environment without any variable that holds a secret (`SECRET_VARIABLE`) except
    those named in `passing`, plus `values`."""
    kept = set(passing)
    return {
        **{k: v for k, v in os.environ.items() if k in kept or not SECRET_VARIABLE.search(k)},
        **values,
    }


def set_environment_defaults(**values: str) -> None:
    """Set variables a library reads at import (telemetry off, tokenizer threads), unless the
    environment already sets them."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def environment_set(**values: str) -> Iterator[None]:
    """Variables set for the duration of a call that reads them from the process (dbt's
    `env_var()` in profiles.yml), restored afterwards."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def secret_from_environment(name: str) -> str:
    """A secret passed by its variable's name (never by value, so config and the UI never hold
    it); '' when unset."""
    return os.environ.get(name, "")


@dataclass(frozen=True)
class DistributedProcess:
    """Where this process sits in a torchrun launch (RANK, LOCAL_RANK, WORLD_SIZE); one
    process on its own is rank 0 of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> DistributedProcess:
        return cls(
            rank=_int_from_env("RANK", 0),
            local_rank=_int_from_env("LOCAL_RANK", 0),
            world_size=_int_from_env("WORLD_SIZE", 1),
        )


REGISTRY_PAUSE_VARIABLE = "MLOPS_REGISTRY_PAUSE_AFTER_ALIAS_MOVE"
"""Fault injection (tests only): a registry writing an alias pauses after the move until the
file this names is removed, so a test can kill it between the move and its audit record."""


def registry_pause_marker() -> Path | None:
    value = os.environ.get(REGISTRY_PAUSE_VARIABLE)
    return Path(value) if value else None


VARIABLES = {
    "data_home": "MLOPS_DATA_HOME",
    "warehouse_path": "MLOPS_WAREHOUSE_PATH",
    "warehouse_url": "MLOPS_WAREHOUSE_DATABASE_URL",
    "raw_uri": "MLOPS_RAW_URI",
    "request_drops_uri": "MLOPS_REQUEST_DROPS_URI",
    "intent_taxonomy": "MLOPS_INTENT_TAXONOMY",
    "label_studio_url": "MLOPS_LABEL_STUDIO_URL",
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "artifact_root": "MLOPS_MLFLOW_ARTIFACT_ROOT",
    "bentoml_home": "BENTOML_HOME",
    "prediction_log_uri": "MLOPS_PREDICTION_LOG_DIR",
    "profile_uri": "MLOPS_PROFILE_URI",
    "defect_drops_uri": "MLOPS_DEFECT_DROPS_URI",
    "image_uri": "MLOPS_IMAGE_URI",
    "bento_uri": "MLOPS_BENTO_URI",
    "business_case": "MLOPS_BUSINESS_CASE",
}
"""The settings a resource takes verbatim, and the variable that sets each."""


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default.resolve()


def _uri_from_env(name: str, default: Path) -> str:
    """An object-store URI (s3://bucket/prefix) as set, else a local folder (`default` unless
    the variable names another)."""
    value = os.environ.get(name, "")
    if "://" in value:
        return value.rstrip("/")
    return str(_path_from_env(name, default))


def _names_from_env(name: str, default: str) -> tuple[str, ...]:
    """Comma-separated account names; each must be usable as a login name."""
    names = tuple(n.strip() for n in os.environ.get(name, default).split(",") if n.strip())
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", n)]
    if bad or not names:
        raise ValueError(
            f"{name}: {bad or 'no name'}: expected account names of 1-64 letters, digits, '_.@-'"
        )
    return names


def _float_from_env(name: str) -> float | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError as error:
        raise ValueError(f"{name}={value!r}: expected a number of days") from error


@dataclass(frozen=True)
class Settings:
    """Where things live. Build it with `Settings.from_env()`; tests pass their own."""

    data_home: Path
    shared_data: Path
    warehouse_path: Path
    dagster_home: Path
    request_drops_uri: str
    """Where request files are dropped, one sub-folder per source (a path or fsspec URI)."""
    warehouse_url: str = field(default="", repr=False)
    """MLOPS_WAREHOUSE_DATABASE_URL: the production profile's PostgreSQL warehouse
    (postgresql://user@host:port/database); '' = the DuckDB file at `warehouse_path`."""
    raw_uri: str = ""
    """MLOPS_RAW_URI: where the raw copies of drops and partitions go (a folder or an object-store
    URI such as s3://bucket/raw); '' = `raw/` under the data home."""
    intent_taxonomy: Path = SYNTHETIC_TAXONOMY_PATH
    """The one intent taxonomy of this deployment (generator, labeling and models share it)."""
    request_max_age_days: float | None = None
    """Cadence promise of a live request feed; None: drops are not checked for freshness."""
    label_studio_url: str = "http://127.0.0.1:8080"
    hidden_label_sources: tuple[str, ...] = ("synthetic_unlabeled", "line1_unlabeled")
    """Sources ingested with their labels hidden: the labels are kept aside (for simulated
    annotators and for measuring annotation quality), the requests or images arrive
    unlabeled."""
    max_drop_bytes: int = DEFAULT_MAX_DROP_BYTES
    """A dropped file larger than this (MLOPS_MAX_DROP_BYTES, default 2 GiB) is refused."""
    mlflow_tracking_uri: str = ""
    """MLflow tracking server and registry; '' = a SQLite file under the data home."""
    mlflow_artifact_root: str = ""
    """Where a file-backed MLflow keeps artifacts; '' = a folder under the data home."""
    demand_source: str = "synthetic"
    """The demand source preset (synthetic, orange_juice)."""
    demand_uri: str = ""
    """Where the preset's files are instead ('' = its default)."""
    demand_max_age_days: float | None = None
    """Cadence promise of a live demand feed; None: the preset's."""
    dagster_profile: str = "local"
    """Which instance config (orchestration/instance/dagster.<profile>.yaml) the UI runs on."""
    executor: str = "default"
    """Where jobs' steps run: `default` (Dagster's, processes on this machine), `celery` (Celery
    workers taking steps off RabbitMQ: orchestration/celery_workers.py) or `k8s` (a pod per step,
    orchestration/kubernetes/executor.yaml)."""
    celery_broker: str = field(default="pyamqp://guest@127.0.0.1:5672//", repr=False)
    """MLOPS_CELERY_BROKER: the RabbitMQ the Celery executor and its workers share (it may
    carry a password: never printed)."""
    celery_workers: int = 2
    """MLOPS_CELERY_WORKERS: how many workers `make dev` starts on this machine."""
    celery_queue: str = "dagster"
    """MLOPS_CELERY_QUEUE: the queue steps go to unless tagged for another (training steps go to
    `gpu`); deployments sharing one broker each name their own."""
    serving_port: int = 3001
    label_studio_venv: Path = PROJECT_ROOT / ".venv-labelstudio"
    label_studio_port: int = 8080
    label_studio_username: str = "admin@localhost.local"
    label_studio_password: str = field(default="", repr=False)
    """'' = a random one kept (0600) in the data home."""
    label_studio_token: str = field(default="", repr=False)
    """'' = a random one kept (0600) in the data home."""
    label_studio_task_lock_ttl: int = 600
    label_studio_database_url: str = field(default="", repr=False)
    """MLOPS_LABEL_STUDIO_DATABASE_URL: Label Studio's PostgreSQL in the production profile
    (postgresql://user@host:port/name); '' = SQLite in its data folder."""
    annotators: str = ""
    """MLOPS_ANNOTATORS: who may annotate (e-mail addresses or @domain, comma-separated)."""
    dagster_engineers: tuple[str, ...] = ("engineer",)
    """MLOPS_DAGSTER_ENGINEERS: one Dagster UI account per ML engineer (comma-separated), so a
    run records who launched it."""
    dagster_viewers: tuple[str, ...] = ("viewer",)
    """MLOPS_DAGSTER_VIEWERS: the accounts of the read-only Dagster UI."""
    business_case: Path = PROJECT_ROOT / "ml" / "lifecycle" / "business_case.toml"
    """MLOPS_BUSINESS_CASE: the prices and business figures the model ROI assets use."""
    variables: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    """Setting → (the variable that set it, its text), for what came from the environment:
    resources take those as Dagster `EnvVar`s, so the UI shows where a value came from."""

    @classmethod
    def from_env(cls) -> Settings:
        data_home = _path_from_env(VARIABLES["data_home"], PROJECT_ROOT / ".data")
        return cls(
            data_home=data_home,
            shared_data=_path_from_env(
                "MLOPS_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"
            ),
            warehouse_path=_path_from_env(
                VARIABLES["warehouse_path"], data_home / "warehouse.duckdb"
            ),
            warehouse_url=os.environ.get(VARIABLES["warehouse_url"], ""),
            raw_uri=os.environ.get(VARIABLES["raw_uri"], ""),
            dagster_home=_path_from_env("DAGSTER_HOME", data_home / "dagster"),
            intent_taxonomy=_path_from_env(VARIABLES["intent_taxonomy"], SYNTHETIC_TAXONOMY_PATH),
            request_drops_uri=os.environ.get(
                VARIABLES["request_drops_uri"], str(data_home / "drops" / "requests")
            ),
            request_max_age_days=_float_from_env("MLOPS_REQUESTS_MAX_AGE_DAYS"),
            label_studio_url=os.environ.get(VARIABLES["label_studio_url"], "http://127.0.0.1:8080"),
            hidden_label_sources=tuple(
                name.strip()
                for name in os.environ.get(
                    "MLOPS_HIDDEN_LABEL_SOURCES", ",".join(cls.hidden_label_sources)
                ).split(",")
                if name.strip()
            ),
            max_drop_bytes=_int_from_env("MLOPS_MAX_DROP_BYTES", DEFAULT_MAX_DROP_BYTES),
            mlflow_tracking_uri=os.environ.get(VARIABLES["tracking_uri"], ""),
            mlflow_artifact_root=os.environ.get(VARIABLES["artifact_root"], ""),
            demand_source=os.environ.get("MLOPS_DEMAND_SOURCE", "synthetic"),
            demand_uri=os.environ.get("MLOPS_DEMAND_URI", ""),
            demand_max_age_days=_float_from_env("MLOPS_DEMAND_MAX_AGE_DAYS"),
            dagster_profile=os.environ.get("MLOPS_DAGSTER_PROFILE", "local"),
            executor=os.environ.get("MLOPS_EXECUTOR", "default"),
            celery_broker=os.environ.get("MLOPS_CELERY_BROKER", "pyamqp://guest@127.0.0.1:5672//"),
            celery_workers=_int_from_env("MLOPS_CELERY_WORKERS", 2),
            celery_queue=os.environ.get("MLOPS_CELERY_QUEUE", "dagster"),
            serving_port=_int_from_env("MLOPS_SERVING_PORT", 3001),
            label_studio_venv=_path_from_env(
                "MLOPS_LABEL_STUDIO_VENV", PROJECT_ROOT / ".venv-labelstudio"
            ),
            label_studio_port=_int_from_env("MLOPS_LABEL_STUDIO_PORT", 8080),
            label_studio_username=os.environ.get(
                "MLOPS_LABEL_STUDIO_USERNAME", "admin@localhost.local"
            ),
            label_studio_password=os.environ.get("MLOPS_LABEL_STUDIO_PASSWORD", ""),
            label_studio_token=os.environ.get("MLOPS_LABEL_STUDIO_TOKEN", ""),
            label_studio_task_lock_ttl=_int_from_env("MLOPS_LABEL_STUDIO_TASK_LOCK_TTL", 600),
            label_studio_database_url=os.environ.get("MLOPS_LABEL_STUDIO_DATABASE_URL", ""),
            annotators=os.environ.get("MLOPS_ANNOTATORS", ""),
            dagster_engineers=_names_from_env("MLOPS_DAGSTER_ENGINEERS", "engineer"),
            dagster_viewers=_names_from_env("MLOPS_DAGSTER_VIEWERS", "viewer"),
            business_case=_path_from_env(VARIABLES["business_case"], cls.business_case),
            variables={
                setting: (name, os.environ[name])
                for setting, name in VARIABLES.items()
                if os.environ.get(name)
            },
        )

    @property
    def tracking_uri(self) -> str:
        default = f"sqlite:///{self.data_home / 'mlflow' / 'mlflow.db'}"
        return self.mlflow_tracking_uri or default

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or str(self.data_home / "mlflow" / "artifacts")

    @property
    def bentoml_home(self) -> Path:
        """BentoML's model and Bento store (BENTOML_HOME), under the data home by default."""
        return _path_from_env(VARIABLES["bentoml_home"], self.data_home / "bentoml")

    @property
    def prediction_log_uri(self) -> str:
        """Where every answer is logged: a folder (default `prediction_logs/` under the data
        home) or an object-store URI (s3://bucket/prediction_logs)."""
        return _uri_from_env(VARIABLES["prediction_log_uri"], self.data_home / "prediction_logs")

    @property
    def profile_uri(self) -> str:
        """Where the whylogs profiles, the drift references and the drift reports live: a
        folder (default `profiles/` under the data home) or an object-store URI
        (MLOPS_PROFILE_URI=s3://bucket/profiles)."""
        return _uri_from_env(VARIABLES["profile_uri"], self.data_home / "profiles")

    @property
    def defect_drops_uri(self) -> str:
        """Where image drops land (a ZIP of images with labels.csv, or a Parquet of encoded
        images), one sub-folder per source: a folder or an object-store URI."""
        return _uri_from_env(VARIABLES["defect_drops_uri"], self.data_home / "drops" / "defects")

    @property
    def image_uri(self) -> str:
        """Where valid cell images are kept by content id (what training, Label Studio and
        the reports read): a folder or an object-store URI."""
        return _uri_from_env(VARIABLES["image_uri"], self.data_home / "images")

    @property
    def bento_uri(self) -> str:
        """MLOPS_BENTO_URI: where `champion_bento` also publishes each Bento as an archive, with
        the pointer to the current one, for serving machines that do not share BENTOML_HOME
        (s3://bucket/bentos); '' = BENTOML_HOME is the only store."""
        return os.environ.get(VARIABLES["bento_uri"], "").rstrip("/")

    @property
    def prediction_log_dir(self) -> Path:
        """The prediction log's folder, where it is kept on a disk."""
        uri = self.prediction_log_uri
        if "://" in uri:
            raise ValueError(
                f"{VARIABLES['prediction_log_uri']}={uri} is an object store, not a folder: "
                "read it through its URI"
            )
        return Path(uri)

    @property
    def request_log_dir(self) -> Path:
        """Where the service's router logs every request's variant, status and latency."""
        return self.data_home / "request_log"

    @property
    def release_state_path(self) -> Path:
        """The staged-release state the release job writes and every serving worker reads."""
        return self.data_home / "serving" / "release_state.json"

    @property
    def secrets_dir(self) -> Path:
        """Generated credentials (mode 0700; every file in it 0600): overridden by the
        variables each component reads."""
        return _path_from_env("MLOPS_SECRETS_DIR", self.data_home / "secrets")

    def moved_to(self, data_home: Path) -> Settings:
        """The same deployment with every written path under another data home (its warehouse
        the DuckDB file there)."""
        moved = (
            "data_home",
            "warehouse_path",
            "warehouse_url",
            "raw_uri",
            "dagster_home",
            "request_drops_uri",
        )
        return replace(
            self,
            data_home=data_home,
            warehouse_path=data_home / "warehouse.duckdb",
            warehouse_url="",
            raw_uri="",
            dagster_home=data_home / "dagster",
            request_drops_uri=str(data_home / "drops" / "requests"),
            variables={k: v for k, v in self.variables.items() if k not in moved},
        )


def _int_from_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"{name}={value!r}: expected a whole number") from error


@dataclass(frozen=True)
class ServingSettings:
    """How the BentoML service behaves; read when the service starts (each `bentoml serve`)."""

    prediction_log_uri: str
    """Where every worker appends its prediction log (a folder under the data home by default,
    or an object-store URI)."""
    image_uri: str
    """The image home (MLOPS_IMAGE_URI): every image /inspect answers is kept there by its
    content id, beside the intake's."""
    request_log_dir: Path
    release_state_path: Path
    workers: int = 1
    batching: bool = True
    """Adaptive batching on /classify; off only to measure what it buys (benchmarks)."""
    max_batch_size: int = 64
    """Texts per model call: past about 64 a CPU gains no throughput, only latency."""
    max_latency_ms: int = 10_000
    """Adaptive batching answers 503 when it expects to miss this; a CPU batch takes ~1 s."""
    torch_threads: int = 0
    """Threads per worker for the model; 0 = the machine's cores shared among the workers
    (more threads than cores collapse one-text-at-a-time throughput)."""
    max_text_chars: int = 1000
    max_items: int = 64
    """Texts or series per request (each request fits one adaptive batch)."""
    top_k: int = 3
    log_max_records: int = 256
    log_flush_seconds: float = 2.0
    log_max_buffered: int = 10_000
    """Records a worker keeps while its log writes fail; past it, records are refused, counted,
    and `/readyz` fails (see ml.monitoring.prediction_log)."""
    max_body_bytes: int = 2 * 1024 * 1024
    """Largest request body; a larger one is refused with 413 before it is read whole."""
    max_in_flight_classify: int = 16
    """Requests a worker holds on /classify at once; one more is answered 429 at once, so the
    latency of the admitted stays bounded under overload (benchmarks/serve_open_loop.py)."""
    max_in_flight_forecast: int = 4
    """The same for /forecast, whose calls are whole model runs, not batched."""
    max_images: int = 16
    """Images per /inspect request (base64 in JSON: 16 cells of 300×300 are ~1 MB)."""
    max_in_flight_inspect: int = 8
    """Requests a worker holds on /inspect at once (429 past it)."""
    request_timeout_s: int = 30
    """BentoML's per-request time limit (504 past it)."""
    shadow_queue: int = 16
    """Batches waiting for shadow scoring; past it a sample is skipped and counted, never queued
    without bound on the champion's worker."""

    @property
    def threads_per_worker(self) -> int:
        return self.torch_threads or max(1, (os.cpu_count() or 1) // max(1, self.workers))

    @classmethod
    def from_env(cls) -> ServingSettings:
        settings = Settings.from_env()
        return cls(
            prediction_log_uri=settings.prediction_log_uri,
            image_uri=settings.image_uri,
            request_log_dir=settings.request_log_dir,
            release_state_path=settings.release_state_path,
            workers=_int_from_env("MLOPS_SERVING_WORKERS", 1),
            batching=os.environ.get("MLOPS_SERVING_BATCHING", "on").lower() not in ("off", "0"),
            max_batch_size=_int_from_env("MLOPS_SERVING_MAX_BATCH_SIZE", 64),
            max_latency_ms=_int_from_env("MLOPS_SERVING_MAX_LATENCY_MS", 10_000),
            torch_threads=_int_from_env("MLOPS_SERVING_TORCH_THREADS", 0),
            max_text_chars=_int_from_env("MLOPS_SERVING_MAX_TEXT_CHARS", 1000),
            max_items=_int_from_env("MLOPS_SERVING_MAX_ITEMS", 64),
            top_k=_int_from_env("MLOPS_SERVING_TOP_K", 3),
            log_max_records=_int_from_env("MLOPS_PREDICTION_LOG_MAX_RECORDS", 256),
            log_flush_seconds=float(os.environ.get("MLOPS_PREDICTION_LOG_FLUSH_SECONDS", "2")),
            log_max_buffered=_int_from_env("MLOPS_PREDICTION_LOG_MAX_BUFFERED", 10_000),
            max_body_bytes=_int_from_env("MLOPS_SERVING_MAX_BODY_BYTES", 2 * 1024 * 1024),
            max_in_flight_classify=_int_from_env("MLOPS_SERVING_MAX_IN_FLIGHT_CLASSIFY", 16),
            max_in_flight_forecast=_int_from_env("MLOPS_SERVING_MAX_IN_FLIGHT_FORECAST", 4),
            max_images=_int_from_env("MLOPS_SERVING_MAX_IMAGES", 16),
            max_in_flight_inspect=_int_from_env("MLOPS_SERVING_MAX_IN_FLIGHT_INSPECT", 8),
            request_timeout_s=_int_from_env("MLOPS_SERVING_REQUEST_TIMEOUT_S", 30),
            shadow_queue=_int_from_env("MLOPS_SERVING_SHADOW_QUEUE", 16),
        )
