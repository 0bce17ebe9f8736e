"""A real headless browser for the tests that need one: Debian's chromium, driven through
Playwright. `.ci/run` installs chromium and sets NEUROFLOW_BROWSER=required, so there a missing
browser fails the test instead of skipping it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# where screenshots are kept for people to look at
ARTIFACTS = Path(
    os.environ.get("NEUROFLOW_TEST_ARTIFACTS") or Path(__file__).parent.parent / "test-artifacts"
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no chromium on PATH (apt-get install chromium)"
        if os.environ.get("NEUROFLOW_BROWSER") == "required":
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Visit:
    """What a page did as it loaded: console errors, uncaught exceptions, and every request
    other than the page itself."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    text: str = ""


def visit(page_file: Path, screenshot: Path) -> Visit:
    """Open `page_file` in headless chromium, wait until it has loaded, and save a full-page
    screenshot."""
    from playwright.sync_api import sync_playwright

    url, seen = page_file.resolve().as_uri(), Visit()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors = seen.console_errors
            page.on("console", lambda line: line.type == "error" and errors.append(line.text))
            page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
            page.on(
                "request",
                lambda request: (
                    request.url != url
                    and not request.url.startswith("data:")
                    and seen.requests.append(request.url)
                ),
            )
            page.goto(url, wait_until="networkidle")
            seen.text = page.inner_text("body")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen
