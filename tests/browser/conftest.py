"""A real browser (Playwright driving Debian's /usr/bin/chromium, never a downloaded one) against
the demo SPA served by the BFF under gunicorn, the dev IdP and a throwaway Redis.

Each test saves a screenshot of each step under test-output/browser/<test>/; when a test fails,
the last screenshot and the browser console are saved there too and named in the report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# As the machine's probe starts it: no sandbox as root, and no background calls to the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_report = report
    return report


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Steps:
    """Screenshots of each step, and every URL the page visited or requested."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.urls: list[str] = []
        self.console: list[str] = []
        self.pages: list = []

    def watch(self, page) -> None:
        self.pages.append(page)
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("framenavigated", lambda frame: self.urls.append(frame.url))
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))

    def open(self, url: str):
        """A new tab in this test's browser context, watched, at `url`."""
        page = self.context.new_page()
        self.watch(page)
        page.goto(url)
        return page

    def shot(self, page, name: str) -> None:
        self.count += 1
        page.screenshot(path=self.folder / f"{self.count:02d}-{name}.png", full_page=True)


@pytest.fixture
def steps(request, browser):
    folder = ROOT / "test-output" / "browser" / re.sub(r"[^\w.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    context = browser.new_context()
    recorder = Steps(folder)
    recorder.context = context
    yield recorder
    report = getattr(request.node, "call_report", None)
    if report is not None and report.failed:
        for index, page in enumerate(recorder.pages):
            if not page.is_closed():
                page.screenshot(path=folder / f"failure-page{index}.png", full_page=True)
        (folder / "console.log").write_text("\n".join(recorder.console))
        report.sections.append(("browser", f"screenshots and console log in {folder}"))
    context.close()
