"""The ML engineer in the Dagster UI: the real `dagster-webserver` over the served platform's
instance, in Chromium. The lineage graph shows every domain's group; an asset materialized
from its page runs to success (and the instance agrees); a model's confusion matrix opens from
its asset page; a blocking check that failed on a real drop shows red, with its reason."""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterRunStatus
from playwright.sync_api import Page, expect

from assets.resources import DataHome
from ml.settings import PROJECT_ROOT
from orchestration.pipeline import PipelineRun, ingest_request_drops
from tests.conftest import ServedPlatform, dagster_webserver
from tests.ui.conftest import readme_screenshot

RUN_TIMEOUT_S = 300
"""A run launched from the UI starts a process that loads the whole code location first."""
UI_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def dagster_ui(
    served_platform: ServedPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`dagster-webserver` over the served deployment's definitions and instance; its URL."""
    code = ("-f", str(served_platform.code_location()), "-a", "defs", "-d", str(PROJECT_ROOT))
    log = tmp_path_factory.mktemp("dagster_ui") / "webserver.log"
    with dagster_webserver(
        served_platform.settings, log, code=code, environment=served_platform.environment()
    ) as url:
        yield url


def declared_groups(platform: ServedPlatform) -> set[str]:
    return {node.group_name for node in platform.defs.resolve_asset_graph().asset_nodes}


def test_the_lineage_graph_shows_every_domains_group(
    dagster_ui: str, served_platform: ServedPlatform, page: Page
) -> None:
    groups = declared_groups(served_platform)
    assert {"requests", "demand", "defects", "serving"} <= groups, groups
    page.goto(f"{dagster_ui}/asset-groups", timeout=UI_TIMEOUT_MS)
    for group in sorted(groups):
        expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    readme_screenshot(page, "dagster-lineage")


def test_an_asset_materialized_from_its_page_runs_to_success(
    dagster_ui: str, served_platform: ServedPlatform, page: Page
) -> None:
    instance = served_platform.instance
    key = AssetKey("calendar_days")
    page.goto(f"{dagster_ui}/assets/calendar_days", timeout=UI_TIMEOUT_MS)
    page.locator("button", has_text=re.compile(r"^Materialize$")).click(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).first).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    page.locator('a[href*="/runs/"]', has_text=re.compile(r"^View$")).first.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=UI_TIMEOUT_MS)
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(
        timeout=RUN_TIMEOUT_S * 1000
    )
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.asset_selection == {key}
    assert run.status == DagsterRunStatus.SUCCESS
    after = instance.get_latest_materialization_event(key)
    assert after is not None and after.run_id == run.run_id, "its materialization is the latest"


def test_a_models_confusion_matrix_opens_from_its_asset_page(dagster_ui: str, page: Page) -> None:
    page.goto(f"{dagster_ui}/assets/request_baseline", timeout=UI_TIMEOUT_MS)
    row = page.locator("tr", has_text="confusion_matrix").first
    expect(row).to_be_visible(timeout=UI_TIMEOUT_MS)
    row.get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").locator('img[src^="data:image/png"]').first
    expect(image).to_be_visible(timeout=UI_TIMEOUT_MS)
    width = image.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 0, "the confusion matrix image did not decode"


def write_sparse_drop(platform: ServedPlatform) -> Path:
    """A request drop in which every third text is empty: more than the contract tolerates."""
    folder = Path(platform.settings.request_drops_uri) / "synthetic"
    rows = "".join(
        f"ui-sparse-{i},{'' if i % 3 == 0 else f'my card number {i} has not arrived'}\n"
        for i in range(30)
    )
    path = folder / f"sparse-{int(time.time())}.csv"
    path.write_text("request_id,text\n" + rows, encoding="utf-8")
    return path


def test_a_blocking_check_that_failed_shows_red_with_its_reason(
    dagster_ui: str, served_platform: ServedPlatform, page: Page
) -> None:
    write_sparse_drop(served_platform)
    run = PipelineRun()
    ingest_request_drops(
        served_platform.defs,
        served_platform.instance,
        DataHome(path=str(served_platform.settings.data_home)),
        run,
    )
    (result,) = run.results.values()
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not result.success and not checks["null_rates_within_limits"].passed
    over_limit = checks["null_rates_within_limits"].metadata["over_limit"].value
    assert "text" in over_limit

    page.goto(f"{dagster_ui}/assets/validated_requests?view=checks", timeout=UI_TIMEOUT_MS)
    page.get_by_text("null_rates_within_limits", exact=True).first.click(timeout=UI_TIMEOUT_MS)
    verdict = page.locator(".BaseTag", has_text=re.compile(r"^Failed$"))
    expect(verdict).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert "red" in verdict.get_attribute("style"), "a failed check is shown in red"
    expect(page.locator("tr", has_text="over_limit").first).to_contain_text(over_limit)
    readme_screenshot(page, "dagster-failed-check")
