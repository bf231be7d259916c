"""The application developer in the service's Swagger UI, through the real front door (Caddy
before `bentoml serve` of the champion Bento), in Chromium: the page loads without a key,
Authorize takes the application key, and "Try it out" on /classify answers 200 with an intent
of the taxonomy."""

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from orchestration.front_door import start_front_door
from orchestration.serving import BentoServer
from tests.conftest import ServedPlatform, free_port
from tests.ui.conftest import readme_screenshot

UI_TIMEOUT_MS = 60_000
TEXT = "I lost my card yesterday, please block it"


@pytest.fixture
def front_door(served_platform: ServedPlatform, bento_server: BentoServer) -> Iterator[str]:
    """The front door of the served deployment, sending requests to the session's server."""
    door = start_front_door(served_platform.settings, free_port(), free_port())
    try:
        door.switch_to(bento_server.port)
        yield door.url
    finally:
        door.stop()


def test_a_developer_authorizes_and_tries_classify_from_the_swagger_page(
    front_door: str, served_platform: ServedPlatform, bento_server: BentoServer, page: Page
) -> None:
    key = bento_server.credentials.application
    intake = served_platform.defs.resources["request_intake"].process_config_and_initialize()
    intents = set(intake.taxonomy().intents)

    page.goto(f"{front_door}/", timeout=UI_TIMEOUT_MS)
    operation = page.locator(".opblock").filter(
        has=page.locator('.opblock-summary-path[data-path="/classify"]')
    )
    expect(operation).to_have_count(1, timeout=UI_TIMEOUT_MS)

    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".dialog-ux")
    dialog.locator("input").first.fill(key)
    dialog.locator("button.modal-btn.authorize").click()
    expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.locator("button.modal-btn.btn-done").click()

    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("textarea.body-param__text").fill(json.dumps({"texts": TEXT}))
    with page.expect_response(lambda r: r.url.endswith("/classify")) as called:
        operation.get_by_role("button", name="Execute").click()
    assert called.value.request.headers.get("authorization") == f"Bearer {key}"
    assert called.value.status == 200, called.value.text()

    live = operation.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_have_text("200")
    shown = json.loads(live.locator(".response-col_description pre").first.inner_text())
    assert shown == called.value.json()
    assert shown[0]["intent"] in intents, shown

    # The picture starts at the request's URL: the curl line with the key stays above it.
    operation.locator(".request-url").evaluate("element => element.scrollIntoView()")
    curl = operation.locator(".curl-command")
    box = curl.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 0, "the key would be in the picture"
    readme_screenshot(page, "service-swagger")
