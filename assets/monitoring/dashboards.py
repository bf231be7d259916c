"""One monitoring page per domain, the page a person opens first: the last day's traffic,
errors and latency p95/p99 (with a chart), the drift verdict, live quality where labels exist,
and the champion with its ROI. Hourly (`dashboards_schedule`); each page sits in its domain's
group. The same figures come as Prometheus metrics from the service (README)."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType

import polars as pl
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets import defects, demand, requests
from assets.metadata import markdown_table, picture
from assets.resources import ModelRegistry, Monitoring, ReleaseControl, Warehouse
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, DEMAND_FORECASTER, REQUEST_CLASSIFIER
from ml.lifecycle.release import OUTCOME_SCHEMA
from ml.monitoring.prediction_log import now, read_log, read_predictions
from ml.monitoring.traffic import hourly_traffic, live_accuracy, traffic_summary
from ml.plots import traffic_figure

DAY = timedelta(hours=24)


@dataclass(frozen=True)
class Page:
    model_name: str
    endpoint: str
    roi_asset: str
    drift_asset: str
    live_quality: Callable[[Monitoring, Warehouse, str], str]
    """What the served answers scored against labels given since (the champion's version)."""


def _latest_metadata(context: AssetExecutionContext, asset_name: str) -> dict[str, object]:
    event = context.instance.get_latest_materialization_event(AssetKey(asset_name))
    if event is None or event.asset_materialization is None:
        return {}
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def render_page(
    context: AssetExecutionContext,
    page: Page,
    release_control: ReleaseControl,
    monitoring: Monitoring,
    warehouse: Warehouse,
    model_registry: ModelRegistry,
) -> MaterializeResult:
    end = now()
    outcomes = read_log(release_control.request_log_dir, end - DAY, end, OUTCOME_SCHEMA).filter(
        pl.col("model_name") == page.model_name
    )
    summary = traffic_summary(outcomes)
    hourly = hourly_traffic(outcomes)
    champion = model_registry.registry().champion(page.model_name)
    roi = _latest_metadata(context, page.roi_asset)
    drift = _latest_metadata(context, page.drift_asset)
    quality = page.live_quality(monitoring, warehouse, champion.version if champion else "")
    ms = "–" if summary.p95_ms is None else f"{summary.p95_ms:,.0f} / {summary.p99_ms:,.0f} ms"
    roi_line = (
        f"{float(roi['benefit_per_month']):,.2f} a month, ROI "
        + (f"{roi['roi']:,.1f}×" if isinstance(roi.get("roi"), float) else str(roi.get("roi")))
        + f", payback {roi['payback']}"
        if "benefit_per_month" in roi
        else f"not priced yet (materialize {page.roi_asset})"
    )
    lines = [
        f"**{page.model_name}** on `/{page.endpoint}`, last 24 h",
        "",
        "| | |",
        "|---|---|",
        f"| requests | {summary.requests:,} |",
        f"| server errors (5xx) | {summary.server_errors:,} ({summary.server_error_rate:.2%}) |",
        f"| refused (4xx) | {summary.client_errors:,} ({summary.client_error_rate:.2%}) |",
        f"| latency p95 / p99 | {ms} |",
        f"| drift | {drift.get('verdict', f'no verdict yet ({page.drift_asset})')} |",
        f"| live quality | {quality} |",
        f"| champion | {f'v{champion.version}' if champion else 'none yet'} |",
        f"| return | {roi_line} |",
    ]
    metadata: dict[str, object] = {
        "page": MetadataValue.md("\n".join(lines)),
        "requests_24h": summary.requests,
        "server_error_rate": summary.server_error_rate,
        "p95_ms": summary.p95_ms if summary.p95_ms is not None else "no traffic",
        "p99_ms": summary.p99_ms if summary.p99_ms is not None else "no traffic",
        "live_quality": quality,
        "champion": f"v{champion.version}" if champion else "none",
    }
    if hourly.height:
        metadata["traffic"] = picture(
            traffic_figure(hourly, f"/{page.endpoint}: requests and p95 per hour"),
            "traffic, 5xx and p95 latency, last 24 h",
        )
        metadata["hourly"] = markdown_table(
            hourly.with_columns(pl.col("hour").dt.strftime("%H:00"))
        )
    if isinstance(roi.get("cost_effect_curve"), str):
        metadata["cost_effect_curve"] = MetadataValue.md(roi["cost_effect_curve"])
    return MaterializeResult(metadata=metadata)


def _served(monitoring: Monitoring, endpoint: str, version: str) -> pl.DataFrame:
    end = now()
    served = read_predictions(monitoring.log_dir, end - DAY, end, endpoint)
    return served.filter(pl.col("model_version") == version) if version else served.clear()


def _labeled_since(
    served: pl.DataFrame, warehouse: Warehouse, key: str, table: str, label: str, what: str
) -> str:
    """Served answers (`key`, `predicted`) against the labels `table` holds for them now
    (`label`: the SQL expression of a label, null where there is none)."""
    labels = warehouse.query_if_exists(
        table,
        f"select {key}, {label} as label from {table} where {label} is not null",
        None,
        {key: pl.Utf8, "label": pl.Utf8},
    )
    quality = live_accuracy(served, labels, key)
    if quality.accuracy is None:
        return f"none of the {what} served in the last 24 h has a label yet"
    return (
        f"accuracy {quality.accuracy:.3f} on the {quality.labeled:,} served {what} that have "
        "a label"
    )


def _request_quality(monitoring: Monitoring, warehouse: Warehouse, version: str) -> str:
    served = _served(monitoring, "classify", version).select(
        pl.col("text"), pl.col("intent").alias("predicted")
    )
    return _labeled_since(served, warehouse, "text", "request_splits", "intent", "requests")


def _defect_quality(monitoring: Monitoring, warehouse: Warehouse, version: str) -> str:
    served = _served(monitoring, "inspect", version).select(
        pl.col("input")
        .map_elements(lambda raw: json.loads(raw).get("image_id"), pl.Utf8)
        .alias("image_id"),
        pl.col("intent").alias("predicted"),
    )
    label = "case when defective then 'defective' when not defective then 'functional' end"
    return _labeled_since(served, warehouse, "image_id", "defect_image_splits", label, "images")


def _demand_quality(monitoring: Monitoring, warehouse: Warehouse, version: str) -> str:
    """Demand's labels are the actuals: the champion's realized WAPE on its latest origin."""
    errors = warehouse.query_if_exists(
        "demand_forecast_errors",
        "select forecast_origin, wape, points from demand_forecast_errors "
        "where model_version = ? order by forecast_origin desc limit 1",
        [version],
        {"forecast_origin": pl.Date, "wape": pl.Float64, "points": pl.Int64},
    )
    if errors.is_empty():
        return "no actuals yet for the champion's forecasts"
    row = errors.row(0, named=True)
    return (
        f"realized WAPE {row['wape']:.3f} on {row['points']:,} points "
        f"(forecast from {row['forecast_origin']})"
    )


PAGES = {
    "request_dashboard": (
        requests,
        Page(
            REQUEST_CLASSIFIER,
            "classify",
            "request_classifier_roi",
            "drift_report",
            _request_quality,
        ),
    ),
    "defect_dashboard": (
        defects,
        Page(
            DEFECT_CLASSIFIER,
            "inspect",
            "defect_classifier_roi",
            "defect_image_drift",
            _defect_quality,
        ),
    ),
    "demand_dashboard": (
        demand,
        Page(
            DEMAND_FORECASTER,
            "forecast",
            "demand_forecaster_roi",
            "demand_forecast_drift",
            _demand_quality,
        ),
    ),
}


def _dashboard(name: str, domain: ModuleType, page: Page):
    @asset(
        name=name,
        group_name=domain.GROUP,
        owners=domain.OWNERS,
        code_version="1",
        kinds={"python"},
        description=(
            f"The page to open first for {page.model_name}: last 24 h of /{page.endpoint} "
            "traffic, 5xx and 4xx, latency p95/p99 with a chart, the drift verdict, live quality, "
            "the champion and its ROI. Refreshed hourly."
        ),
    )
    def _page(
        context: AssetExecutionContext,
        release_control: ReleaseControl,
        monitoring: Monitoring,
        warehouse: Warehouse,
        model_registry: ModelRegistry,
    ) -> MaterializeResult:
        return render_page(context, page, release_control, monitoring, warehouse, model_registry)

    return _page


request_dashboard, defect_dashboard, demand_dashboard = (
    _dashboard(name, domain, page) for name, (domain, page) in PAGES.items()
)
