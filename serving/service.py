"""The platform's HTTP service (BentoML): the MLflow champions of `request_classifier`,
`demand_forecaster` and `defect_classifier`, imported into the BentoML model store with their
MLflow version in the tag, behind `POST /classify` and `POST /inspect` (adaptive batching) and
`POST /forecast`.

Which versions it serves is fixed when the Bento is built (`serving/package.py`, called by the
`champion_bento` asset): they are Bento arguments, never a hard-coded file. Bad input is a 400
naming the field; every answer is logged (`ml.monitoring.prediction_log`), off the request
path, and every image /inspect answers is kept in the image home (`serving.served_images`).
/inspect also takes image files as `multipart/form-data`. Every error has one shape, declared
in the published OpenAPI document (`serving.http_contract`).
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Annotated, Literal

import bentoml
import numpy as np
import pandas as pd
import polars as pl
from bentoml.exceptions import BadInput, BentoMLException, ServiceUnavailable
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from ml.defects.features import image_statistics
from ml.defects.images import image_id_of, image_pixels, served_image_uri
from ml.demand.panel import ForecastingError
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, DEMAND_FORECASTER, REQUEST_CLASSIFIER
from ml.lifecycle.release import (
    CHALLENGER_VARIANT,
    CHAMPION_VARIANT,
    SHADOW_VARIANT,
    ReleaseState,
    halted,
    in_shadow_sample,
    read_release_states,
    write_release_state,
)
from ml.monitoring.prediction_log import PredictionLogWriter, prediction_record
from ml.security.redaction import redactor
from ml.settings import ServingSettings, set_environment_defaults
from serving.api_keys import ApiKeyAuth, current_caller
from serving.http_contract import (
    ADMIN_PREFIX,
    INTERNAL_PREFIX,
    ClientErrorsAsWarnings,
    HttpContract,
)
from serving.package import load_verified
from serving.release import (
    OffRequestQueue,
    ReleaseRouter,
    ReleaseStates,
    Route,
    close_outcome_logs,
    shadow_share,
)
from serving.served_images import QUEUED_BATCHES, keep_served_images


class ServedModels(BaseModel):
    """Bento arguments: the BentoML model tags of the champions and of their challengers
    ('' = not served)."""

    request_classifier: str = ""
    demand_forecaster: str = ""
    defect_classifier: str = ""
    request_classifier_challenger: str = ""
    demand_forecaster_challenger: str = ""
    defect_classifier_challenger: str = ""


LOGGER = logging.getLogger(__name__)
set_environment_defaults(TOKENIZERS_PARALLELISM="false")  # the workers are processes already
SETTINGS = ServingSettings.from_env()
MODELS = bentoml.use_arguments(ServedModels)
CLASSIFY_CHALLENGER = f"{INTERNAL_PREFIX}classify-challenger"
FORECAST_CHALLENGER = f"{INTERNAL_PREFIX}forecast-challenger"
INSPECT_CHALLENGER = f"{INTERNAL_PREFIX}inspect-challenger"
RELEASE_STATES_ROUTE = f"{ADMIN_PREFIX}release-states"
HALT_RELEASE_ROUTE = f"{ADMIN_PREFIX}halt-release"
ADAPTIVE_BATCHING = {
    "batchable": SETTINGS.batching,
    "max_batch_size": SETTINGS.max_batch_size,
    "max_latency_ms": SETTINGS.max_latency_ms,
}
"""How /classify and /inspect (and their challengers) merge concurrent requests."""
ModelName = Literal["request_classifier", "demand_forecaster", "defect_classifier"]


def _mlflow_version(tag: str) -> str:
    """`request_classifier:v3` → "3" (serving.package names every model so)."""
    return tag.rsplit(":", 1)[-1].removeprefix("v") if tag else ""


ROUTES = {
    "/classify": Route(
        REQUEST_CLASSIFIER,
        _mlflow_version(MODELS.request_classifier),
        _mlflow_version(MODELS.request_classifier_challenger),
        CLASSIFY_CHALLENGER,
    ),
    "/forecast": Route(
        DEMAND_FORECASTER,
        _mlflow_version(MODELS.demand_forecaster),
        _mlflow_version(MODELS.demand_forecaster_challenger),
        FORECAST_CHALLENGER,
    ),
    "/inspect": Route(
        DEFECT_CLASSIFIER,
        _mlflow_version(MODELS.defect_classifier),
        _mlflow_version(MODELS.defect_classifier_challenger),
        INSPECT_CHALLENGER,
    ),
}
"""Each public model endpoint, its model, and where its challenger answers (the router)."""


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty (or only whitespace)")
    return text


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


TEXT_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": SETTINGS.max_text_chars,
    "pattern": r"\S",
}
Text = Annotated[
    str, Field(min_length=1, max_length=SETTINGS.max_text_chars), AfterValidator(_not_blank)
]
Texts = Annotated[
    list[Text],
    BeforeValidator(_one_or_many),
    Field(min_length=1, max_length=SETTINGS.max_items),
    # Published as what is accepted: one text or a list, each with a non-blank character.
    WithJsonSchema(
        {
            "title": "Texts",
            "description": "One text, or a list of texts; each not blank.",
            "anyOf": [
                TEXT_SCHEMA,
                {
                    "type": "array",
                    "items": TEXT_SCHEMA,
                    "minItems": 1,
                    "maxItems": SETTINGS.max_items,
                },
            ],
        }
    ),
]


def _valid_image(encoded: str) -> str:
    """A base64 image the defect classifier can take: decoded whole and checked by the intake
    rules here, per request (a bad image never fails the adaptive batch it would join)."""
    image_pixels(encoded, "image")
    return encoded


IMAGE_SCHEMA = {
    "type": "string",
    "contentEncoding": "base64",
    "minLength": 1,
    "description": (
        "An encoded image file (PNG, JPEG, TIFF or BMP), base64: 8-bit grayscale, 32 to 4096 "
        "pixels a side, neither blank nor saturated."
    ),
}
EncodedImage = Annotated[str, Field(min_length=1), AfterValidator(_valid_image)]
Images = Annotated[
    list[EncodedImage],
    BeforeValidator(_one_or_many),
    Field(min_length=1, max_length=SETTINGS.max_images),
    WithJsonSchema(
        {
            "title": "Images",
            "description": "One base64 image, or a list of them.",
            "anyOf": [
                IMAGE_SCHEMA,
                {
                    "type": "array",
                    "items": IMAGE_SCHEMA,
                    "minItems": 1,
                    "maxItems": SETTINGS.max_images,
                },
            ],
        }
    ),
]


class Inspection(BaseModel):
    request_id: str
    image_id: str
    """The image's content id (the same picture, the same id, as at intake)."""
    label: Literal["functional", "defective"]
    defect_probability: float
    """Calibrated; the label is `defective` at or above `threshold`."""
    threshold: float
    model_version: str
    variant: str = CHAMPION_VARIANT


class ScoredIntent(BaseModel):
    intent: str
    probability: float


class Classification(BaseModel):
    request_id: str
    intent: str
    confidence: float
    top_k: list[ScoredIntent]
    model_version: str
    variant: str = CHAMPION_VARIANT
    """Who answered: the `champion`, or the `challenger` during a canary release."""


class SeriesId(BaseModel):
    """One store's item, or with `store` left out every store that sells the item."""

    model_config = ConfigDict(strict=True)  # no "1" for 1, no 0 for a date: what OpenAPI says

    store: str | None = Field(default=None, min_length=1)
    item: str = Field(min_length=1)


ForecastLevel = Literal["series", "item"]


class PlannedPeriod(BaseModel):
    """Known future covariates of one series and period; what is left out is assumed."""

    model_config = ConfigDict(strict=True)

    store: str = Field(min_length=1)
    item: str = Field(min_length=1)
    period_start: date
    price: float | None = Field(default=None, gt=0)
    deal: float | None = Field(default=None, ge=0, le=1)
    feature: float | None = Field(default=None, ge=0, le=1)


class PeriodForecast(BaseModel):
    store: str
    item: str
    period_start: date
    p10: float
    p50: float
    p90: float
    model: str
    assumed: str


class ItemTotal(BaseModel):
    """An item's forecast summed over the stores asked for (the reconciled total: its P50 is
    the sum of theirs), with the interval calibrated for totals."""

    item: str
    period_start: date
    stores: int
    p10: float
    p50: float
    p90: float
    model: str


class ForecastResponse(BaseModel):
    request_id: str
    model_version: str
    variant: str = CHAMPION_VARIANT
    horizon: int
    level: ForecastLevel = "series"
    assumed: list[str]
    """The default assumptions used where no covariate was given ('none' = all were given)."""
    forecasts: list[PeriodForecast]
    totals: list[ItemTotal] = []
    """At level `item`: per item and period, its stores summed."""


class ReleaseView(BaseModel):
    """A model's staged release as the workers route it."""

    model_name: str
    challenger_version: str
    champion_version: str
    stage: str
    canary_share: float
    shadow_share: float
    reason: str
    updated_by: str
    step_started_at: str

    @classmethod
    def of(cls, state: ReleaseState) -> ReleaseView:
        return cls(**{name: getattr(state, name) for name in cls.model_fields})


PREDICTIONS = bentoml.metrics.Counter(
    name="mlops_predictions",
    documentation="Items answered, by endpoint and model version",
    labelnames=["endpoint", "model_name", "model_version"],
)
PREDICTION_ERRORS = bentoml.metrics.Counter(
    name="mlops_prediction_errors",
    documentation="Requests refused (4xx) after validation, by endpoint and model version",
    labelnames=["endpoint", "model_name", "model_version"],
)
INFERENCE_SECONDS = bentoml.metrics.Histogram(
    name="mlops_inference_seconds",
    documentation="Model time per call (a whole adaptive batch for /classify)",
    labelnames=["endpoint", "model_name", "model_version"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ITEMS = bentoml.metrics.Histogram(
    name="mlops_batch_items",
    documentation="Texts or images per model call (adaptive batching merges requests)",
    labelnames=["model_name", "model_version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

LOG_BUFFERED = bentoml.metrics.Gauge(
    name="mlops_prediction_log_buffered",
    documentation="Records waiting to be written to the prediction log (this worker)",
    multiprocess_mode="livesum",
)
LOG_WRITE_FAILURES = bentoml.metrics.Counter(
    name="mlops_prediction_log_write_failures",
    documentation="Prediction-log flushes that failed (records stay buffered, /readyz fails)",
)
SHADOW_SKIPPED = bentoml.metrics.Counter(
    name="mlops_shadow_skipped",
    documentation="Champion answers not shadow-scored because the shadow queue was full",
    labelnames=["model_name"],
)
SERVED_IMAGES_NOT_KEPT = bentoml.metrics.Counter(
    name="mlops_served_images_not_kept",
    documentation="Images /inspect answered but did not keep in the image home, by reason",
    labelnames=["reason"],
)
LOG_REFUSED = bentoml.metrics.Counter(
    name="mlops_prediction_log_refused",
    documentation="Records refused by a full prediction-log buffer under a persistent failure",
    labelnames=["endpoint", "model_name", "model_version"],
)


def _is_client_error(error: BaseException) -> bool:
    if isinstance(error, ValidationError):
        return True
    return isinstance(error, BentoMLException) and error.error_code.value < 500


logging.getLogger("bentoml._internal.server.http_app").addFilter(
    ClientErrorsAsWarnings(_is_client_error)
)


def _version_of(model: bentoml.Model) -> str:
    return str(model.info.labels.get("mlflow_version", model.tag.version))


@bentoml.service(
    name="mlops_platform",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.request_timeout_s},
    metrics={"enabled": True},
)
class Champions:
    """The champion of each registered model, loaded once per worker."""

    if MODELS.request_classifier:
        classifier_model = bentoml.models.BentoModel(MODELS.request_classifier)
    if MODELS.demand_forecaster:
        forecaster_model = bentoml.models.BentoModel(MODELS.demand_forecaster)
    if MODELS.request_classifier_challenger:
        classifier_challenger_model = bentoml.models.BentoModel(
            MODELS.request_classifier_challenger
        )
    if MODELS.demand_forecaster_challenger:
        forecaster_challenger_model = bentoml.models.BentoModel(MODELS.demand_forecaster_challenger)
    if MODELS.defect_classifier:
        inspector_model = bentoml.models.BentoModel(MODELS.defect_classifier)
    if MODELS.defect_classifier_challenger:
        inspector_challenger_model = bentoml.models.BentoModel(MODELS.defect_classifier_challenger)

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(SETTINGS.threads_per_worker)
        self.classifier = self.forecaster = None
        self.classifier_challenger = self.forecaster_challenger = None
        self.inspector = self.inspector_challenger = None
        if MODELS.request_classifier:
            self.classifier = load_verified(self.classifier_model)
            self.classifier_version = _version_of(self.classifier_model)
            self.classes = list(self.classifier.metadata.metadata["classes"])
        if MODELS.demand_forecaster:
            self.forecaster = load_verified(self.forecaster_model)
            self.forecaster_version = _version_of(self.forecaster_model)
        if MODELS.request_classifier_challenger:
            self.classifier_challenger = load_verified(self.classifier_challenger_model)
            self.classifier_challenger_version = _version_of(self.classifier_challenger_model)
        if MODELS.demand_forecaster_challenger:
            self.forecaster_challenger = load_verified(self.forecaster_challenger_model)
            self.forecaster_challenger_version = _version_of(self.forecaster_challenger_model)
        if MODELS.defect_classifier:
            self.inspector = load_verified(self.inspector_model)
            self.inspector_version = _version_of(self.inspector_model)
        if MODELS.defect_classifier_challenger:
            self.inspector_challenger = load_verified(self.inspector_challenger_model)
            self.inspector_challenger_version = _version_of(self.inspector_challenger_model)
        self.release = ReleaseStates(SETTINGS.release_state_path)
        self.shadow = None
        if self.classifier is not None and self.classifier_challenger is not None:
            self.shadow = OffRequestQueue(
                self._shadow_classify,
                SETTINGS.shadow_queue,
                lambda skipped: SHADOW_SKIPPED.labels(REQUEST_CLASSIFIER).inc(skipped),
                "shadow scoring",
            )
        self.served_images = None
        if self.inspector is not None or self.inspector_challenger is not None:
            self.served_images = OffRequestQueue(
                self._keep_images, QUEUED_BATCHES, self._images_skipped, "keeping served images"
            )
        worker = f"worker{bentoml.server_context.worker_index or 0}"
        self.log = PredictionLogWriter(
            SETTINGS.prediction_log_uri,
            worker,
            SETTINGS.log_max_records,
            SETTINGS.log_flush_seconds,
            max_buffered=SETTINGS.log_max_buffered,
            redact=redactor().redact,  # built here, once per worker: not on a request
        )
        self._log_failures_seen = 0

    def __is_ready__(self) -> bool:
        """Not ready while the prediction log cannot be written (a full or broken disk)."""
        return self._log_health().healthy

    def _log_health(self):
        health = self.log.health()
        LOG_BUFFERED.set(health.buffered)
        if health.failed_writes > self._log_failures_seen:
            LOG_WRITE_FAILURES.inc(health.failed_writes - self._log_failures_seen)
            self._log_failures_seen = health.failed_writes
        return health

    def _keep(self, records: list[dict[str, object]], endpoint: str, model: str, version: str):
        refused = self.log.log(records)
        if refused:
            LOG_REFUSED.labels(endpoint, model, version).inc(refused)
        self._log_health()

    def _keep_images(self, images: list[tuple[str, np.ndarray]]) -> None:
        if failed := keep_served_images(SETTINGS.image_uri, images):
            SERVED_IMAGES_NOT_KEPT.labels("write_failed").inc(len(failed))

    def _images_skipped(self, skipped: int) -> None:
        LOGGER.warning("%d served images not kept: the queue of images to keep is full", skipped)
        SERVED_IMAGES_NOT_KEPT.labels("queue_full").inc(skipped)

    @bentoml.on_shutdown
    def flush_log(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        if self.served_images is not None:
            self.served_images.close()
        self.log.close()
        close_outcome_logs()

    @bentoml.api(**ADAPTIVE_BATCHING)
    def classify(self, texts: Texts) -> list[Classification]:
        """One text or a list of texts → intent, confidence and the top-k intents per text."""
        if self.classifier is None:
            raise ServiceUnavailable("no request_classifier champion is served by this Bento")
        answers = self._classify(self.classifier, self.classifier_version, CHAMPION_VARIANT, texts)
        if self.shadow is not None:
            share = shadow_share(self.release.get(REQUEST_CLASSIFIER), ROUTES["/classify"])
            sample = [
                (text, answer.intent, answer.request_id)
                for text, answer in zip(texts, answers, strict=True)
                if in_shadow_sample(answer.request_id, share)
            ]
            if sample:
                self.shadow.submit(sample)
        return answers

    @bentoml.api(route=CLASSIFY_CHALLENGER, **ADAPTIVE_BATCHING)
    def classify_challenger(self, texts: Texts) -> list[Classification]:
        """/classify answered by the challenger: the router sends the canary share here."""
        if self.classifier_challenger is None:
            raise ServiceUnavailable("no request_classifier challenger is served by this Bento")
        return self._classify(
            self.classifier_challenger,
            self.classifier_challenger_version,
            CHALLENGER_VARIANT,
            texts,
        )

    def _classify(
        self, model, version: str, variant: str, texts: list[str]
    ) -> list[Classification]:
        labels = ("classify", REQUEST_CLASSIFIER, version)
        started = time.perf_counter()
        predicted = model.predict(pd.DataFrame({"text": texts}))
        INFERENCE_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        BATCH_ITEMS.labels(*labels[1:]).observe(len(texts))
        probabilities = np.array(predicted["probabilities"].tolist())
        top = np.argsort(-probabilities, axis=1)[:, : SETTINGS.top_k]
        answers, records = [], []
        for text, intent, confidence, row, best in zip(
            texts, predicted["intent"], predicted["confidence"], probabilities, top, strict=True
        ):
            record = prediction_record(
                "classify",
                REQUEST_CLASSIFIER,
                version,
                {"text": text},
                None,
                text=text,
                intent=str(intent),
                confidence=float(confidence),
                variant=variant,
            )
            answer = Classification(
                request_id=str(record["request_id"]),
                intent=str(intent),
                confidence=float(confidence),
                top_k=[
                    ScoredIntent(intent=self.classes[i], probability=float(row[i])) for i in best
                ],
                model_version=version,
                variant=variant,
            )
            record["output"] = answer.model_dump_json()
            answers.append(answer)
            records.append(record)
        self._keep(records, *labels)
        PREDICTIONS.labels(*labels).inc(len(texts))
        return answers

    def _shadow_classify(self, items: list[tuple[str, str, str]]) -> None:
        """The challenger's answers to champion traffic, logged as `shadow`, never returned."""
        version = self.classifier_challenger_version
        texts = [text for text, _, _ in items]
        predicted = self.classifier_challenger.predict(pd.DataFrame({"text": texts}))
        records = []
        for (text, champion_intent, request_id), intent, confidence in zip(
            items, predicted["intent"], predicted["confidence"], strict=True
        ):
            output = {"intent": str(intent), "confidence": float(confidence)}
            records.append(
                prediction_record(
                    "classify",
                    REQUEST_CLASSIFIER,
                    version,
                    {"text": text},
                    {**output, "champion_intent": champion_intent},
                    text=text,
                    intent=str(intent),
                    confidence=float(confidence),
                    request_id=request_id,
                    variant=SHADOW_VARIANT,
                    agrees=str(intent) == champion_intent,
                )
            )
        self._keep(records, "classify", REQUEST_CLASSIFIER, version)

    @bentoml.api(**ADAPTIVE_BATCHING)
    def inspect(self, images: Images) -> list[Inspection]:
        """One base64 cell image or a list of them (or image files as `multipart/form-data`,
        each a part named `images`) → defect probability and label per image, from the
        defect-inspection champion. An image that does not decode whole, is not 8-bit
        grayscale, is too small or large, blank or saturated is a 400 naming it."""
        if self.inspector is None:
            raise ServiceUnavailable("no defect_classifier champion is served by this Bento")
        return self._inspect(self.inspector, self.inspector_version, CHAMPION_VARIANT, images)

    @bentoml.api(route=INSPECT_CHALLENGER, **ADAPTIVE_BATCHING)
    def inspect_challenger(self, images: Images) -> list[Inspection]:
        """/inspect answered by the challenger: the router sends the canary share here."""
        if self.inspector_challenger is None:
            raise ServiceUnavailable("no defect_classifier challenger is served by this Bento")
        return self._inspect(
            self.inspector_challenger,
            self.inspector_challenger_version,
            CHALLENGER_VARIANT,
            images,
        )

    def _inspect(self, model, version: str, variant: str, images: list[str]) -> list[Inspection]:
        labels = ("inspect", DEFECT_CLASSIFIER, version)
        pixels = [image_pixels(encoded, f"images[{i}]") for i, encoded in enumerate(images)]
        classifier = model.unwrap_python_model().classifier
        started = time.perf_counter()
        probability = classifier.defect_probability(pixels)
        INFERENCE_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        BATCH_ITEMS.labels(*labels[1:]).observe(len(images))
        answers, records, served = [], [], []
        for picture, p in zip(pixels, probability, strict=True):
            label = "defective" if p >= classifier.threshold else "functional"
            image_id = image_id_of(picture)
            served.append((image_id, picture))
            record = prediction_record(
                "inspect",
                DEFECT_CLASSIFIER,
                version,
                {
                    "image_id": image_id,
                    **image_statistics(picture),
                    "image_uri": served_image_uri(SETTINGS.image_uri, image_id),
                },
                None,
                intent=label,
                confidence=float(p),
                variant=variant,
            )
            answer = Inspection(
                request_id=str(record["request_id"]),
                image_id=image_id,
                label=label,
                defect_probability=float(p),
                threshold=float(classifier.threshold),
                model_version=version,
                variant=variant,
            )
            record["output"] = answer.model_dump_json()
            answers.append(answer)
            records.append(record)
        self._keep(records, *labels)
        self.served_images.submit(served)
        PREDICTIONS.labels(*labels).inc(len(images))
        return answers

    @bentoml.api
    def forecast(
        self,
        series: Annotated[list[SeriesId], Field(min_length=1, max_length=SETTINGS.max_items)],
        horizon: Annotated[int | None, Field(ge=1, strict=True)] = None,
        covariates: Annotated[list[PlannedPeriod], Field(max_length=10_000)] = [],  # noqa: B006
        level: ForecastLevel = "series",
    ) -> ForecastResponse:
        """P10/P50/P90 per period for each (store, item), from the forecasting champion. Planned
        price, deal and feature per period are used where given; otherwise the documented
        defaults are assumed (price: last known, no deal, no feature) and named in `assumed`.
        A series without `store` means every store of its item; `level: item` adds each item's
        total over the stores asked for."""
        if self.forecaster is None:
            raise ServiceUnavailable("no demand_forecaster champion is served by this Bento")
        return self._forecast(
            self.forecaster,
            self.forecaster_version,
            CHAMPION_VARIANT,
            series,
            horizon,
            covariates,
            level,
        )

    @bentoml.api(route=FORECAST_CHALLENGER)
    def forecast_challenger(
        self,
        series: Annotated[list[SeriesId], Field(min_length=1, max_length=SETTINGS.max_items)],
        horizon: Annotated[int | None, Field(ge=1, strict=True)] = None,
        covariates: Annotated[list[PlannedPeriod], Field(max_length=10_000)] = [],  # noqa: B006
        level: ForecastLevel = "series",
    ) -> ForecastResponse:
        """/forecast answered by the challenger: the router sends the canary share here."""
        if self.forecaster_challenger is None:
            raise ServiceUnavailable("no demand_forecaster challenger is served by this Bento")
        return self._forecast(
            self.forecaster_challenger,
            self.forecaster_challenger_version,
            CHALLENGER_VARIANT,
            series,
            horizon,
            covariates,
            level,
        )

    @bentoml.api(route=RELEASE_STATES_ROUTE)
    def release_states(self, model_name: ModelName | None = None) -> list[ReleaseView]:
        """Admin key only: each model's staged release (or `model_name`'s alone)."""
        states = read_release_states(SETTINGS.release_state_path)
        return [
            ReleaseView.of(state)
            for name, state in sorted(states.items())
            if model_name in (None, name)
        ]

    @bentoml.api(route=HALT_RELEASE_ROUTE)
    def halt_release(
        self, model_name: ModelName, reason: Annotated[str, Field(min_length=1, max_length=500)]
    ) -> ReleaseView:
        """Admin key only: stop `model_name`'s release now (the on-call's brake). The
        challenger answers no canary share and scores no shadow from the next request on; the
        release job then holds. Recorded with the admin's caller name and `reason`."""
        state = read_release_states(SETTINGS.release_state_path).get(model_name)
        if state is None:
            raise BadInput(f"model_name: {model_name} has no release to halt")
        try:
            stopped = halted(state, reason, f"serving admin {current_caller() or '?'}")
        except ValueError as error:
            raise BadInput(f"model_name: {error}") from None
        write_release_state(SETTINGS.release_state_path, stopped)
        LOGGER.warning("release of %s halted by %s", model_name, stopped.updated_by)
        return ReleaseView.of(stopped)

    def _forecast(
        self,
        model,
        version: str,
        variant: str,
        series: list[SeriesId],
        horizon: int | None,
        covariates: list[PlannedPeriod],
        level: ForecastLevel,
    ) -> ForecastResponse:
        labels = ("forecast", DEMAND_FORECASTER, version)
        fitted = model.unwrap_python_model().forecaster
        try:
            frame = self._forecast_input(fitted, series, horizon, covariates)
            started = time.perf_counter()
            answer = model.predict(frame, params={"horizon": horizon} if horizon else None)
        except (BadInput, ForecastingError) as error:
            PREDICTION_ERRORS.labels(*labels).inc()
            if isinstance(error, BadInput):
                raise
            raise BadInput(f"covariates: {error}") from error
        INFERENCE_SECONDS.labels(*labels).observe(time.perf_counter() - started)
        periods = [PeriodForecast(**row) for row in answer.to_dict(orient="records")]
        totals = []
        if level == "item":
            stores = pl.from_pandas(answer).with_columns(pl.col("period_start").cast(pl.Date))
            summed = fitted.totals(stores)
            totals = [ItemTotal(**row) for row in summed.drop("assumed").to_dicts()]
        used = horizon or fitted.settings.horizon
        response = ForecastResponse(
            request_id="",
            model_version=version,
            variant=variant,
            horizon=used,
            level=level,
            assumed=sorted({p.assumed for p in periods}),
            forecasts=periods,
            totals=totals,
        )
        record = prediction_record(
            "forecast",
            DEMAND_FORECASTER,
            version,
            {
                "series": [s.model_dump() for s in series],
                "horizon": used,
                "level": level,
                "covariates": [c.model_dump() for c in covariates],
            },
            None,
            variant=variant,
        )
        response.request_id = str(record["request_id"])
        record["output"] = response.model_dump_json()
        self._keep([record], *labels)
        PREDICTIONS.labels(*labels).inc(len(series))
        return response

    @staticmethod
    def _forecast_input(
        fitted, series: list[SeriesId], horizon: int | None, covariates: list[PlannedPeriod]
    ) -> pd.DataFrame:
        """The pyfunc's input frame; what the forecaster would refuse is refused here first,
        naming the field."""
        known = set(fitted.keys)
        stores_of: dict[str, list[str]] = {}
        for store, item in fitted.keys:
            stores_of.setdefault(item, []).append(store)
        if unsold := sorted({s.item for s in series if s.store is None} - set(stores_of)):
            raise BadInput(f"series: unknown item {unsold[:10]} (no store sells it)")
        wanted = list(
            dict.fromkeys(
                (store, s.item)
                for s in series
                for store in ([s.store] if s.store is not None else stores_of[s.item])
            )
        )
        unknown = [f"{store}/{item}" for store, item in wanted if (store, item) not in known]
        if unknown:
            raise BadInput(f"series: unknown store/item {unknown[:10]}")
        if horizon is not None and horizon > fitted.max_horizon:
            raise BadInput(f"horizon: {horizon} is out of range 1 … {fitted.max_horizon}")
        outside = sorted(
            {f"{c.store}/{c.item}" for c in covariates} - {f"{s}/{i}" for s, i in wanted}
        )
        if outside:
            raise BadInput(f"covariates: for series not asked for {outside[:10]}")
        if not covariates:
            return pd.DataFrame({"store": [s for s, _ in wanted], "item": [i for _, i in wanted]})
        planned = pd.DataFrame([c.model_dump() for c in covariates]).dropna(axis=1, how="all")
        planned["period_start"] = pd.to_datetime(planned["period_start"])
        planned_series = set(zip(planned["store"], planned["item"], strict=True))
        without = [key for key in wanted if key not in planned_series]
        rows = pd.DataFrame({"store": [s for s, _ in without], "item": [i for _, i in without]})
        return pd.concat([planned, rows], ignore_index=True).astype({"store": str, "item": str})


Champions.add_asgi_middleware(  # outermost: nothing runs for a caller without a key
    ApiKeyAuth, admin_paths=(RELEASE_STATES_ROUTE, HALT_RELEASE_ROUTE)
)
Champions.add_asgi_middleware(
    HttpContract,
    api_paths=tuple(ROUTES),
    max_body_bytes=SETTINGS.max_body_bytes,
    max_in_flight={
        "/classify": SETTINGS.max_in_flight_classify,
        "/forecast": SETTINGS.max_in_flight_forecast,
        "/inspect": SETTINGS.max_in_flight_inspect,
    },
    file_fields={"/inspect": "images"},  # its challenger gets the JSON the router passes on
)
Champions.add_asgi_middleware(  # inside HttpContract: the request id is set, errors are shaped
    ReleaseRouter,
    routes=ROUTES,
    state_path=str(SETTINGS.release_state_path),
    outcome_dir=str(SETTINGS.request_log_dir),
    flush_seconds=SETTINGS.log_flush_seconds,
)
