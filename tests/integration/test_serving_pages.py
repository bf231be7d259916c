"""The monitoring pages on the session's served platform: real traffic through `bentoml serve`,
read back from the service's request log by the real dashboards job."""

import time
from datetime import UTC, datetime, timedelta

import polars as pl
import requests
from dagster import AssetKey

from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, REQUEST_CLASSIFIER
from ml.lifecycle.registry import Registry
from ml.lifecycle.release import OUTCOME_SCHEMA
from ml.monitoring.prediction_log import read_log
from orchestration.pipeline import execute_quietly
from orchestration.serving import BentoServer
from tests.conftest import ServedPlatform


def classified(platform: ServedPlatform) -> pl.DataFrame:
    """The request log's records of request_classifier calls in the last day (what the page
    reads)."""
    now = datetime.now(UTC)
    log = read_log(
        platform.settings.request_log_dir, now - timedelta(hours=24), now, OUTCOME_SCHEMA
    )
    return log.filter(pl.col("model_name") == REQUEST_CLASSIFIER)


def page(platform: ServedPlatform, name: str) -> dict[str, object]:
    event = platform.instance.get_latest_materialization_event(AssetKey(name))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_each_domain_has_a_page_of_its_last_day_with_traffic_latency_and_return(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    before = classified(served_platform).height
    for text in ("where is my card?", "I was charged twice", "how do I top up?"):
        answer = requests.post(
            f"{bento_server.url}/classify",
            json={"texts": [text]},
            headers=bento_server.headers(),
            timeout=60,
        )
        assert answer.status_code == 200
    deadline = time.monotonic() + 15
    while classified(served_platform).height < before + 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    logged = classified(served_platform)
    assert logged.height >= before + 3

    assert execute_quietly(served_platform.defs, served_platform.instance, "dashboards_job").success
    registry = Registry(
        served_platform.settings.tracking_uri, served_platform.settings.artifact_root
    )
    requests_page = page(served_platform, "request_dashboard")
    # What the page counts is what the service logged (this session's traffic is all within
    # the day): requests, refusals, failures.
    assert requests_page["requests_24h"] == logged.height
    refused = logged.filter((pl.col("status") >= 400) & (pl.col("status") < 500)).height
    assert f"| refused (4xx) | {refused:,} " in requests_page["page"]
    assert requests_page["server_error_rate"] == logged.filter(pl.col("status") >= 500).height / (
        logged.height
    )
    assert 0 < requests_page["p95_ms"] <= requests_page["p99_ms"]
    assert "data:image/png;base64," in requests_page["traffic"]
    assert requests_page["champion"] == f"v{registry.champion(REQUEST_CLASSIFIER).version}"
    text = requests_page["page"]
    assert "| refused (4xx) | " in text and "| drift | " in text and "| live quality | " in text
    # The defect models were trained by their full job, which prices the champion.
    defects_page = page(served_platform, "defect_dashboard")
    assert defects_page["champion"] == f"v{registry.champion(DEFECT_CLASSIFIER).version}"
    assert " a month, ROI " in defects_page["page"]
    assert "realized WAPE" in page(served_platform, "demand_dashboard")["live_quality"] or (
        "no actuals yet" in page(served_platform, "demand_dashboard")["live_quality"]
    )
