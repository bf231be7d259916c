"""The registry in MLflow's own UI (a real `mlflow server` over the served deployment's store),
in Chromium: each registered model's page shows `@ champion` and `@ challenger` exactly on the
versions the registry gives them, and the champion's run page shows its test score, its
`report/` files and the confusion matrix itself."""

import re
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from playwright.sync_api import Page, expect

from assets.defects.models import METRIC as DEFECT_TEST_METRIC
from ml.lifecycle.aliases import CHALLENGER, CHAMPION
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER, REQUEST_CLASSIFIER, SERVED_MODELS
from tests.conftest import ServedPlatform, free_port, running_mlflow_server
from tests.ui.conftest import readme_screenshot

UI_TIMEOUT_MS = 60_000
TEST_METRIC = {REQUEST_CLASSIFIER: "test_f1_macro", DEFECT_CLASSIFIER: DEFECT_TEST_METRIC}
"""What each classifier's gate scores it by on the frozen test version."""


@pytest.fixture(scope="module")
def mlflow_ui(
    served_platform: ServedPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    folder = tmp_path_factory.mktemp("mlflow_ui")
    with running_mlflow_server(served_platform.settings.tracking_uri, folder, port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(served_platform: ServedPlatform) -> MlflowClient:
    return MlflowClient(served_platform.settings.tracking_uri)


def shown_aliases(cell_text: str) -> set[str]:
    return set(re.findall(r"@\s*(\w+)", cell_text.replace("\xa0", " ")))


def aliases_column(page: Page) -> int:
    """Where the versions table shows aliases: reading the whole row would also read tags and
    descriptions (a release pin tags a version with its actor's e-mail address). Counted in
    that table alone: the model's tags table above it has column headers too."""
    versions = page.get_by_role("table").filter(
        has=page.get_by_role("link", name=re.compile(r"^Version \d+$"))
    )
    expect(versions).to_have_count(1, timeout=UI_TIMEOUT_MS)
    headers = versions.get_by_role("columnheader")
    names = [text.strip().lower() for text in headers.all_inner_texts()]
    assert "aliases" in names, names
    return names.index("aliases")


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_the_model_page_shows_each_alias_on_the_version_that_holds_it(
    mlflow_ui: str, client: MlflowClient, model: str, page: Page
) -> None:
    aliases = client.get_registered_model(model).aliases
    assert CHAMPION in aliases, f"{model} has no champion"
    versions = [str(v.version) for v in client.search_model_versions(f"name = '{model}'")]
    page.goto(f"{mlflow_ui}/#/models/{model}", timeout=UI_TIMEOUT_MS)
    column = None
    for version in versions:
        link = page.get_by_role("link", name=f"Version {version}", exact=True)
        row = page.get_by_role("row").filter(has=link)
        expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
        column = aliases_column(page) if column is None else column
        cell = row.get_by_role("cell").nth(column)
        expected = {alias for alias, holder in aliases.items() if str(holder) == version}
        assert shown_aliases(cell.inner_text()) == expected, (model, version, row.inner_text())
    assert set(aliases) <= {CHAMPION, CHALLENGER}


@pytest.mark.parametrize("model", sorted(TEST_METRIC))
def test_the_champions_run_page_shows_its_test_score_report_and_confusion_matrix(
    mlflow_ui: str, client: MlflowClient, model: str, page: Page
) -> None:
    champion = client.get_model_version_by_alias(model, CHAMPION)
    run = client.get_run(champion.run_id)
    metric = TEST_METRIC[model]
    assert metric in run.data.metrics, sorted(run.data.metrics)
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/confusion_matrix.png" in reports, reports
    base = f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    page.goto(base, timeout=UI_TIMEOUT_MS)
    metric_row = page.get_by_role("row").filter(has_text=metric).first
    expect(metric_row).to_be_visible(timeout=UI_TIMEOUT_MS)
    shown = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", metric_row.inner_text())]
    assert any(abs(n - run.data.metrics[metric]) < 1e-6 for n in shown), (metric, shown)

    page.goto(f"{base}/artifacts", timeout=UI_TIMEOUT_MS)
    page.get_by_text("report", exact=True).first.click(timeout=UI_TIMEOUT_MS)
    for path in sorted(reports):
        expect(page.get_by_text(path.split("/")[-1], exact=True).first).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
    page.get_by_text("confusion_matrix.png", exact=True).first.click()
    preview = page.locator('img[alt="report/confusion_matrix.png"]')
    expect(preview).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.wait_for_function(
        "image => image.complete && image.naturalWidth > 0",
        arg=preview.element_handle(),
        timeout=UI_TIMEOUT_MS,
    )
    if model == REQUEST_CLASSIFIER:
        close_assistant_panel(page)
        readme_screenshot(page, "mlflow-champion-run")


def close_assistant_panel(page: Page) -> None:
    """MLflow 3.17 opens its chat assistant beside a run, over a third of the page."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
        expect(close).to_have_count(0)
