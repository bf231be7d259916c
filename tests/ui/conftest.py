"""Browser tests of the four UIs: Playwright drives a real, headless Chromium (Debian's, since
browsers cannot be downloaded here) against the real servers the session fixtures start.

A failing test leaves a screenshot under `test-results/` (`--screenshot=only-on-failure`).
`make screenshots` sets MLOPS_SCREENSHOTS_DIR, and each flow then also saves the small
picture the README shows."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page

CHROMIUM_VARIABLE = "MLOPS_CHROMIUM"
SCREENSHOTS_VARIABLE = "MLOPS_SCREENSHOTS_DIR"
VIEWPORT = {"width": 1280, "height": 800}
README_WIDTH = 960
README_COLORS = 64
"""A palette this small keeps a UI's picture near 30-40 kB, still readable."""


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Debian's Chromium (`make browser`), or the one MLOPS_CHROMIUM names."""
    chromium = os.environ.get(CHROMIUM_VARIABLE) or shutil.which("chromium")
    if not chromium:
        pytest.fail(
            f"no Chromium on PATH: `make browser` installs Debian's, or set {CHROMIUM_VARIABLE}"
        )
    return {**browser_type_launch_args, "executable_path": chromium}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": VIEWPORT}


def readme_screenshot(page: Page, name: str) -> Path | None:
    """Where MLOPS_SCREENSHOTS_DIR is set, the page as the README shows it: `<name>.png`,
    960 px wide, palette-quantized; otherwise nothing."""
    folder = os.environ.get(SCREENSHOTS_VARIABLE)
    if not folder:
        return None
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    height = round(shot.height * README_WIDTH / shot.width)
    small = shot.resize((README_WIDTH, height), Image.Resampling.LANCZOS).quantize(
        colors=README_COLORS, method=Image.Quantize.MEDIANCUT
    )
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)
    return path
