"""Monitoring on the lineage graph: the service's prediction logs (a source, one partition per
hour), whylogs profiles of the champion's reference data and of each hour of traffic, and the
drift report that the drift sensor acts on. For demand, the champion's realized errors against
its own backtest errors are the signal.

Files live under the monitoring resource's profile store (a folder under the data home, or an
object-store prefix: MLOPS_PROFILE_URI): `reference/<version>/`, `serving/<window>.bin`,
`drift/<window>.json`; another domain's traffic (cell images: image_drift.py) has the same
under a prefix of its own.
"""

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    HourlyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.demand.forecasting import BACKTEST_TABLE
from assets.demand.forecasts import FORECASTS_TABLE
from assets.metadata import counts_table, markdown_table, picture, preview
from assets.monitoring import GROUP, OWNERS
from assets.requests.datasets import load_training_data
from assets.resources import ModelRegistry, Monitoring, RequestIntake, Warehouse
from assets.serving.bento import champion_bento
from ml.data import objects
from ml.data.drops import drop_id_for, write_drop
from ml.demand.intervals import served_intervals
from ml.lifecycle.registered_models import DEMAND_FORECASTER, REQUEST_CLASSIFIER
from ml.monitoring.drift import (
    DatasetProfileView,
    DriftReport,
    compare_profiles,
    deserialize_profile,
    judged_sample,
    profile,
    profile_rows,
    serialize_profile,
)
from ml.monitoring.forecast_error import forecast_error_drift, residual_drift
from ml.monitoring.prediction_log import WINDOW_FORMAT, read_predictions, window_start
from ml.monitoring.request_features import (
    REQUEST_FEATURES,
    TextReference,
    build_text_reference,
    request_feature_frame,
    sentence_embedder,
)
from ml.plots import drift_figure
from ml.security.redaction import redact_all

MONITORING_START = "2026-01-01-00:00"
monitoring_windows = HourlyPartitionsDefinition(start_date=MONITORING_START, end_offset=1)
"""One partition per hour of traffic; the hour in progress is included so that it can be looked
at early (the drift sensor only acts on complete hours)."""


def window_partition_key(moment: datetime) -> str:
    """The `monitoring_windows` partition of the hour holding `moment`."""
    return window_start(moment).strftime(monitoring_windows.fmt)


REFERENCE_ROWS = 2000
"""Training texts for the vocabulary and centroid, and held-out requests for the profile."""
REFERENCE_FILL_TO = 500
"""Fewer requests than this arrived unlabeled: labeled held-out ones fill the reference up."""
SERVING_SOURCE = "serving"
"""Drifted traffic re-enters the platform as a request drop of this source, unlabeled."""

prediction_logs = AssetSpec(
    "prediction_logs",
    partitions_def=monitoring_windows,
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"bentoml", "json"},
    description=(
        "Every answer of the BentoML service (request id, time, input, prediction, confidence "
        "or quantiles, model name and version), appended by each worker as complete JSON-lines "
        "files under the data home, one folder per hour: written by the service, not by Dagster."
    ),
)


def _reference_folder(monitoring: Monitoring, version: str) -> str:
    return monitoring.profile("reference", f"{REQUEST_CLASSIFIER}-v{version}")


@dataclass(frozen=True)
class CurrentReference:
    version: str
    """The request_classifier version whose answers the reference profiles."""
    folder: str
    """Its folder (or object-store prefix)."""
    rows: int
    """Answers in the reference profile."""


PROFILE_FILE = "profile.bin"
"""The reference's whylogs profile, in its folder."""


def reference_profile(folder: str) -> DatasetProfileView:
    return deserialize_profile(objects.read_bytes(objects.join(folder, PROFILE_FILE)))


def reference_pointer(monitoring: Monitoring, *domain: str) -> str:
    """Where the latest reference of requests (or of `domain`'s traffic) is named."""
    return monitoring.profile(*domain, "reference", "current.json")


def current_reference(monitoring: Monitoring, *domain: str) -> CurrentReference:
    """The latest reference profile (of requests, written by reference_profiles; of another
    `domain`'s traffic, under `<domain>/reference/`)."""
    pointer = reference_pointer(monitoring, *domain)
    if not objects.exists(pointer):
        raise FileNotFoundError(
            f"no reference profile yet ({pointer} missing): materialize its reference asset "
            "(reference_profiles for requests, defect_image_reference for cell images)"
        )
    current = objects.read_json(pointer)
    folder = str(current["folder"])
    rows = current.get("rows")
    if rows is None:  # written before the pointer counted them
        rows = profile_rows(reference_profile(folder))
    return CurrentReference(str(current["version"]), folder, int(rows))


def make_current(monitoring: Monitoring, reference: CurrentReference, *domain: str) -> None:
    """Point `current_reference` at `reference` (its profile and files already written)."""
    objects.write_json(
        reference_pointer(monitoring, *domain),
        {"version": reference.version, "folder": reference.folder, "rows": reference.rows},
    )


def held_out_requests(warehouse: Warehouse, rows: int, fill_to: int) -> pl.DataFrame:
    """Up to `rows` requests (text, kind) that no model version trained on, newest first:
    those that arrived unlabeled from the upstream feeds (annotated later or not, unless that
    label put them in training). Only when they are fewer than `fill_to`, labeled requests
    outside the train split fill up to it.

    Sampled by request, not by text, so that the questions many customers ask recur as often
    as in live traffic. The held-out *splits* are a sample of texts (every copy of a common
    text in one split), and calm demo traffic drifted against a reference made of them in 10
    hours of 10 (against the unlabeled requests: 0 of 8)."""
    query = """
        select text, ? as kind
        from request_splits
        where source != ? and not (split = 'train' and intent is not null) and {which}
        order by received_at desc, request_id
        limit ?
    """
    unlabeled = warehouse.query(
        query.format(which="coalesce(label_source, '') != 'source'"),
        ["arrived unlabeled", SERVING_SOURCE, rows],
    )
    if unlabeled.height >= fill_to:
        return unlabeled
    labeled = warehouse.query(
        query.format(which="label_source = 'source'"),
        ["held-out labeled", SERVING_SOURCE, fill_to - unlabeled.height],
    )
    return pl.concat([unlabeled, labeled])


@asset(
    deps=[champion_bento],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"whylogs", "python"},
    description=(
        "What serving traffic is compared with: the served request_classifier champion's "
        "vocabulary and centroid embedding (its training texts), and a whylogs profile of its "
        "answers on the newest requests no model trained on (those that arrived unlabeled "
        "first), sampled by request. Rebuilt whenever the champion Bento changes: the answers "
        "are the same model version's."
    ),
)
def reference_profiles(
    context: AssetExecutionContext,
    warehouse: Warehouse,
    request_intake: RequestIntake,
    model_registry: ModelRegistry,
    monitoring: Monitoring,
) -> MaterializeResult:
    registry = model_registry.registry()
    registry.ping()
    champion = registry.champion(REQUEST_CLASSIFIER)
    if champion is None:
        raise ValueError(f"{REQUEST_CLASSIFIER} has no champion: nothing is served to monitor")
    data = load_training_data(warehouse, request_intake, REFERENCE_ROWS, REFERENCE_ROWS)
    sample = held_out_requests(warehouse, REFERENCE_ROWS, REFERENCE_FILL_TO)
    held_out = sample["text"].to_list()
    if len(held_out) < monitoring.min_rows * monitoring.min_reference_ratio:
        raise ValueError(
            f"{len(held_out)} held-out requests: the reference needs at least "
            f"{monitoring.min_rows * monitoring.min_reference_ratio:.0f} (min_rows × "
            "min_reference_ratio) to judge the smallest window"
        )
    embed = sentence_embedder()
    reference = build_text_reference(data.train.texts, embed)
    model = registry.load(REQUEST_CLASSIFIER, champion.version)
    predicted = model.predict(pd.DataFrame({"text": held_out}))
    features = request_feature_frame(  # on what the prediction log keeps: redacted texts
        redact_all(held_out), predicted["intent"], predicted["confidence"], reference, embed
    )
    folder = _reference_folder(monitoring, champion.version)
    reference.save(folder)
    objects.write_bytes(objects.join(folder, PROFILE_FILE), serialize_profile(profile(features)))
    make_current(monitoring, CurrentReference(champion.version, folder, features.height))
    context.log.info(f"reference for {REQUEST_CLASSIFIER} v{champion.version} in {folder}")
    return MaterializeResult(
        metadata={
            "champion_version": champion.version,
            "dataset_version": data.dataset_version,
            "vocabulary": len(reference.vocabulary),
            "profiled_rows": features.height,
            "judges_windows_up_to": int(features.height / monitoring.min_reference_ratio),
            "reference_requests": counts_table(
                dict(sample.group_by("kind").len().sort("kind").iter_rows()), "kind"
            ),
            "folder": MetadataValue.path(folder),
            "summary": markdown_table(features.drop("predicted_intent").describe()),
        }
    )


def _window(context: AssetExecutionContext) -> tuple[datetime, datetime]:
    window = context.partition_time_window
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def _serving_paths(monitoring: Monitoring, start: datetime) -> tuple[str, str]:
    stem = monitoring.profile("serving", start.strftime(WINDOW_FORMAT))
    return f"{stem}.bin", f"{stem}.parquet"


@asset(
    partitions_def=monitoring_windows,
    deps=[prediction_logs, reference_profiles],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"whylogs", "python"},
    description=(
        "A whylogs profile of one hour of /classify traffic: text length, token count, "
        "out-of-vocabulary rate and embedding distance against the reference, the predicted "
        "intent and its confidence."
    ),
)
def serving_profiles(context: AssetExecutionContext, monitoring: Monitoring) -> MaterializeResult:
    start, end = _window(context)
    logged = read_predictions(monitoring.log_dir, start, end, endpoint="classify")
    profile_path, features_path = _serving_paths(monitoring, start)
    if logged.is_empty():
        objects.remove(profile_path, missing_ok=True)
        return MaterializeResult(metadata={"dagster/row_count": 0, "note": "no traffic"})
    reference = current_reference(monitoring)
    versions = logged.group_by("model_version").len().sort("model_version")
    version_counts = counts_table(
        dict(zip(versions["model_version"], versions["len"], strict=True)), "version"
    )
    # Only the reference's model version is compared with it: a canary's answers (another
    # model's confidence and intents) would be drift of the model, not of the traffic.
    judged = logged.filter(pl.col("model_version") == reference.version)
    if judged.is_empty():
        objects.remove(profile_path, missing_ok=True)
        note = f"no answers of v{reference.version}, the reference's version"
        return MaterializeResult(
            metadata={"dagster/row_count": 0, "note": note, "model_versions": version_counts}
        )
    features = request_feature_frame(
        judged["text"].to_list(),
        judged["intent"].to_list(),
        judged["confidence"].to_list(),
        TextReference.load(reference.folder),
        sentence_embedder(),
    )
    objects.write_bytes(profile_path, serialize_profile(profile(features)))
    served = judged.select("request_id", "text", "served_at")
    objects.write_parquet(features_path, pl.concat([served, features], how="horizontal"))
    intents = features.group_by("predicted_intent").len().sort("len", descending=True).head(10)
    return MaterializeResult(
        metadata={
            "dagster/row_count": judged.height,
            "answers_of_other_versions": logged.height - judged.height,
            "reference_version": reference.version,
            "model_versions": version_counts,
            "top_intents": counts_table(
                dict(zip(intents["predicted_intent"], intents["len"], strict=True)), "intent"
            ),
            "summary": markdown_table(features.drop("predicted_intent").describe()),
        }
    )


def drift_report_path(monitoring: Monitoring, window_key: str, *domain: str) -> str:
    return monitoring.profile(*domain, "drift", f"{window_key}.json")


def read_drift_reports(monitoring: Monitoring, *domain: str) -> list[dict[str, object]]:
    """Every persisted drift evaluation (of requests, or of `domain`'s traffic), oldest window
    first (what the drift sensors read)."""
    reports = objects.files_under(monitoring.profile(*domain, "drift"), ".json")
    return [objects.read_json(uri) for uri in reports]


def write_serving_drop(drops_uri: str, window_key: str, suffix: str, data: bytes) -> str:
    """`data` (a window's drifted traffic) as the `serving` drop `window-<window><suffix>`; its
    drop id. The same window gives the same bytes, so re-running this is a recorded no-op,
    never a second drop. Written whole under a hidden name the drop sensors never list, then
    renamed in."""
    write_drop(drops_uri, SERVING_SOURCE, f"window-{window_key}{suffix}", data)
    return drop_id_for(SERVING_SOURCE, hashlib.sha256(data).hexdigest())


def write_drifted_traffic(intake: RequestIntake, window_key: str, texts: pl.DataFrame) -> str:
    """The window's served texts as an unlabeled `serving` request drop; its drop id. Each text
    keeps the request id the service answered with, so erasure by that id finds it."""
    data = (
        texts.select("request_id", "text", "received_at")
        .sort("received_at", "request_id")
        .write_csv()
        .encode()
    )
    return write_serving_drop(intake.drops_uri, window_key, ".csv", data)


def window_outcome(
    context: AssetExecutionContext, reference: CurrentReference, rows: int
) -> dict[str, object]:
    """What a window's drift evaluation file records before it is judged (what the drift
    sensors read: `plan_retraining`)."""
    start, end = _window(context)
    evaluated_at = datetime.now(UTC)
    return {
        "window": start.strftime(WINDOW_FORMAT),
        "partition": context.partition_key,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "complete": end <= evaluated_at,
        "evaluated_at": evaluated_at.isoformat(),
        "reference_version": reference.version,
        "reference_rows": reference.rows,
        "rows": rows,
        "judged_rows": 0,
        "drifted": False,
        "drifted_columns": [],
        "reasons": [],
        "drop_id": None,
    }


def judge_window(
    monitoring: Monitoring,
    reference: CurrentReference,
    served: pl.DataFrame,
    columns: Sequence[str],
    outcome: dict[str, object],
    *domain: str,
    whole: DatasetProfileView | None = None,
) -> DriftReport:
    """The window's served features (`columns` of `served`) against the reference, recorded in
    its `outcome`: all rows (their profile `whole`, when already made) or a sample seeded by
    the window when the reference is too small for all."""
    window_key = str(outcome["window"])
    at_most = int(reference.rows / monitoring.min_reference_ratio)
    judged, sampled = judged_sample(served, at_most, window_key)
    target = whole if whole is not None and not sampled else profile(judged.select(list(columns)))
    report = compare_profiles(reference_profile(reference.folder), target, monitoring.thresholds())
    start = datetime.fromisoformat(str(outcome["window_start"]))
    since = (
        drifted_since(drifted_starts(read_drift_reports(monitoring, *domain)), start)
        if report.drifted
        else None
    )
    outcome.update(
        judged_outcome(report, judged.height, report.reasons()),
        drifted_columns=list(report.drifted_columns),
        drifted_since=since.isoformat() if since else None,
    )
    if sampled:
        outcome["note"] = sampled_note(
            judged.height, served.height, "answers", reference.rows, monitoring.min_reference_ratio
        )
    return report


def record_drift_report(
    context: AssetExecutionContext,
    monitoring: Monitoring,
    outcome: dict[str, object],
    metadata: dict[str, object],
    reference: str,
    *domain: str,
) -> MaterializeResult:
    """Write the window's evaluation file and say its verdict (`reference`: what it was
    compared with, in words)."""
    window_key = str(outcome["window"])
    objects.write_json(drift_report_path(monitoring, window_key, *domain), outcome)
    verdict = drift_verdict(outcome)
    context.log.info(f"{window_key}: {verdict}")
    metadata.update(
        {
            "drifted": bool(outcome["drifted"]),
            "verdict": verdict,
            "why": MetadataValue.md(
                "\n".join(f"- {reason}" for reason in outcome["reasons"]) or "no column drifted"
            ),
            "judged_rows": int(outcome["judged_rows"]),
            "reference": reference,
            "re_annotation_drop": outcome["drop_id"] or "none",
        }
    )
    return MaterializeResult(metadata=metadata)


@asset(
    partitions_def=monitoring_windows,
    deps=[serving_profiles, reference_profiles],
    group_name=GROUP,
    owners=OWNERS,
    code_version="1",
    kinds={"whylogs", "python"},
    description=(
        "Drift of one hour of traffic against the reference, per column, by whylogs' drift "
        "algorithms (KS for numbers, chi-square for the predicted intent; thresholds in the "
        "monitoring resource). A drifted hour's texts are dropped as `serving` requests for "
        "re-annotation; the drift sensor then requests one retraining run."
    ),
)
def drift_report(
    context: AssetExecutionContext, monitoring: Monitoring, request_intake: RequestIntake
) -> MaterializeResult:
    start, _ = _window(context)
    profile_path, features_path = _serving_paths(monitoring, start)
    reference = current_reference(monitoring)
    served = objects.read_parquet(features_path) if objects.exists(profile_path) else pl.DataFrame()
    rows = served.height
    outcome = window_outcome(context, reference, rows)
    window_key = str(outcome["window"])
    metadata: dict[str, object] = {"window": window_key, "rows": rows}
    if rows < monitoring.min_rows:
        outcome["note"] = (
            f"too little traffic: {rows} answers of v{reference.version}, fewer than "
            f"{monitoring.min_rows}; no verdict"
        )
    else:
        whole = deserialize_profile(objects.read_bytes(profile_path))
        report = judge_window(monitoring, reference, served, REQUEST_FEATURES, outcome, whole=whole)
        metadata.update(report_metadata(report, f"Drift {window_key}"))
        if report.drifted:
            outcome["drop_id"] = write_drifted_traffic(
                request_intake, window_key, served.rename({"served_at": "received_at"})
            )
            metadata["drifted_texts"] = preview(served.select("text", "predicted_intent"))
    judged_at_most = int(reference.rows / monitoring.min_reference_ratio)
    return record_drift_report(
        context,
        monitoring,
        outcome,
        metadata,
        f"v{reference.version}: {reference.rows} held-out answers "
        f"(judges up to {judged_at_most} answers a window)",
    )


def judged_outcome(report: DriftReport, judged_rows: int, reasons: list[str]) -> dict:
    """What a judged window's evaluation file records of its report (drifted: any reason)."""
    return {
        "judged_rows": judged_rows,
        "drifted": bool(reasons),
        "reasons": reasons,
        "columns": json.loads(report.to_json())["columns"],
        "alpha": report.alpha,
        "correction": report.correction,
    }


def sampled_note(judged: int, rows: int, what: str, reference_rows: int, ratio: float) -> str:
    return (
        f"judged a seeded sample of {judged} of {rows} {what}: the reference ({reference_rows}) "
        f"holds at least {ratio:g}× the rows judged"
    )


def report_metadata(report: DriftReport, title: str) -> dict[str, object]:
    """The per-column table and the chart the UI shows for a judged window."""
    return {
        "columns": markdown_table(report.as_frame(), digits=4),
        "drift_chart": picture(drift_figure(report, title), "drift per column"),
    }


def drifted_starts(reports: list[dict[str, object]]) -> set[str]:
    """The window starts (ISO) of the drifted hours among `reports`."""
    return {str(r["window_start"]) for r in reports if r.get("drifted")}


def drifted_since(drifted: set[str], start: datetime) -> datetime:
    """The start of the run of consecutive drifted hours (`drifted`: drifted_starts) that ends
    with the window at `start` (`start` itself when the hour before did not drift)."""
    since = start
    while (since - timedelta(hours=1)).isoformat() in drifted:
        since -= timedelta(hours=1)
    return since


def hours_between(earlier: datetime, later: datetime) -> int:
    return int((later - earlier) / timedelta(hours=1))


def drift_verdict(outcome: dict[str, object]) -> str:
    """The drift report's verdict in one line."""
    if outcome["drifted"]:
        since = datetime.fromisoformat(str(outcome["drifted_since"]))
        hours = hours_between(since, datetime.fromisoformat(str(outcome["window_start"]))) + 1
        return (
            f"drift in {', '.join(outcome['drifted_columns'])} since {since:%Y-%m-%d %H:%M} UTC "
            f"({hours} hour{'s' if hours > 1 else ''} in a row): {outcome['reasons'][0]}"
        )
    if outcome.get("columns") is None:
        return str(outcome.get("note", "no verdict"))
    return (
        f"no drift in {len(outcome['columns'])} columns ({outcome['correction']}-corrected "
        f"α {outcome['alpha']:g}, {outcome['judged_rows']} answers)"
    )


DEMAND_DRIFT_FILE = "demand_drift.json"


@asset(
    deps=["demand_forecast_errors", "demand_backtests"],
    group_name=GROUP,
    owners=OWNERS,
    code_version="2",
    kinds={"whylogs", "python", "duckdb"},
    description=(
        "Demand drift: the realized errors of the champion's latest forecast whose actuals "
        "have arrived against the same model's errors in its own backtest (KS on the log "
        "error, chi-square on where actuals fell against P10–P90, Holm across the two), and "
        "its realized WAPE; thresholds in the monitoring resource."
    ),
)
def demand_forecast_drift(
    context: AssetExecutionContext,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
    monitoring: Monitoring,
) -> MaterializeResult:
    champion = model_registry.registry().champion(DEMAND_FORECASTER)
    version = champion.version if champion else ""
    schema = {
        "forecast_origin": pl.Date,
        "period_start": pl.Date,
        "actual": pl.Float64,
        "p10": pl.Float64,
        "p50": pl.Float64,
        "p90": pl.Float64,
    }
    realized = warehouse.query_if_exists(
        FORECASTS_TABLE,
        f"""
        select f.store, f.item, f.forecast_origin, f.period_start, m.units as actual,
               f.p10, f.p50, f.p90
        from {FORECASTS_TABLE} f join mart_demand m
          on m.store = f.store and m.item = f.item and m.period_start = f.period_start
        where m.units is not null and f.model_version = ?
        """,
        [version],
        {"store": pl.Utf8, "item": pl.Utf8, **schema},
    )
    if not realized.is_empty():
        realized = realized.filter(pl.col("forecast_origin") == realized["forecast_origin"].max())
    kind = champion.tags.get("kind", "") if champion else ""
    backtest = warehouse.query_if_exists(
        BACKTEST_TABLE,
        f"""
        select store, item, period_start, actual, p10, p50, p90 from {BACKTEST_TABLE}
        where model = ? and backtest_version = ?
        """,
        [kind, champion.tags.get("test_version", "") if champion else ""],
        {"store": pl.Utf8, "item": pl.Utf8, **schema},
    )
    backtest = served_intervals(backtest.drop("forecast_origin", strict=False))
    # Series the champion's kind does not forecast (its fallback does) have no backtest here.
    realized = realized.join(backtest.select("store", "item").unique(), on=["store", "item"])
    ceiling = monitoring.forecast_wape_threshold
    signal = forecast_error_drift(realized, math.inf if ceiling is None else ceiling)
    origin = str(realized["forecast_origin"].max()) if signal.rows else None
    outcome: dict[str, object] = {
        "model_version": version,
        "model_kind": kind,
        "forecast_origin": origin,
        "last_period": str(signal.window[1]) if signal.window else None,
        "wape": signal.wape,
        "wape_threshold": ceiling,
        "rows": signal.rows,
        "reference_rows": backtest.height,
        "judged_rows": 0,
        "drifted": False,
        "reasons": [],
        "evaluated_at": datetime.now(UTC).isoformat(),
    }
    metadata: dict[str, object] = {
        "model_version": version or "none",
        "realized_wape": signal.wape,
        "scored_points": signal.rows,
        "reference_rows": backtest.height,
    }
    if signal.rows < monitoring.min_rows:
        outcome["note"] = (
            f"too little to judge: {signal.rows} realized forecasts of v{version or '-'}, fewer "
            f"than {monitoring.min_rows}; no verdict"
        )
    elif backtest.is_empty():
        outcome["note"] = f"no backtest of {kind or 'the champion'} to compare with; no verdict"
    else:
        judged, sampled = judged_sample(
            realized,
            int(backtest.height / monitoring.min_reference_ratio),
            f"{version}:{origin}",
        )
        report = residual_drift(backtest, judged, monitoring.thresholds())
        reasons = report.reasons()
        if signal.drifted:
            reasons.append(f"realized WAPE {signal.wape:.3f} > {ceiling:g}")
        outcome.update(judged_outcome(report, judged.height, reasons))
        if sampled:
            outcome["note"] = sampled_note(
                judged.height,
                signal.rows,
                "realized forecasts",
                backtest.height,
                monitoring.min_reference_ratio,
            )
        metadata.update(report_metadata(report, f"Demand drift, origin {origin}"))
    objects.write_json(monitoring.profile(DEMAND_DRIFT_FILE), outcome)
    verdict = demand_drift_verdict(outcome)
    context.log.info(f"demand drift: {verdict}")
    return MaterializeResult(
        metadata={**metadata, "drifted": bool(outcome["drifted"]), "why": verdict}
    )


def demand_drift_verdict(outcome: dict[str, object]) -> str:
    """The demand drift evaluation in one line: its reasons, the note, or no drift."""
    if outcome["drifted"]:
        return "drift: " + "; ".join(outcome["reasons"])
    if "columns" not in outcome:
        return str(outcome.get("note", "no verdict"))
    return (
        f"no drift in the champion's realized errors vs its backtest ({outcome['judged_rows']} "
        f"realized, {outcome['reference_rows']} backtest rows; realized WAPE "
        f"{outcome['wape']:.3f})"
    )
