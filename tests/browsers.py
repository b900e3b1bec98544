"""Headless Chromium for the page tests (test_pages.py, test_report_page.py), driven by Playwright.

The browser is the system's Chromium (Debian's ``chromium``; ``FNNET_CHROMIUM`` names another),
launched with ``executable_path``: Playwright's own browser download is not used. A test module
skips, saying why, only where no Chromium (or no playwright) can be found. :class:`Opened` opens a
page from ``file://`` with every other request refused and keeps what went wrong on it."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """``$FNNET_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH (``None``: none)."""
    given = os.environ.get("FNNET_CHROMIUM")
    if given:
        return given if os.path.exists(given) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def chromium():
    """A launched headless Chromium; skips the calling test (module) where there is none."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set FNNET_CHROMIUM): the pages are not tested")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Opened:
    """A page opened from ``file://``, with what went wrong on it: console errors, uncaught
    exceptions and every request it tried to make beyond its own file (each refused)."""

    def __init__(self, browser, path, width=1300):
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        url = path.resolve().as_uri()

        def route(request):
            if request.request.url != url and not request.request.url.startswith("data:"):
                self.requests.append(request.request.url)
                return request.abort()
            return request.continue_()

        self.page.route("**/*", route)
        self.page.goto(url)

    def value(self, selector) -> float:
        """The ``data-value`` of the element ``selector`` finds, as a float (``NaN``, ``Infinity`` too)."""
        return float(self.page.get_attribute(selector, "data-value"))

    def close(self):
        assert not self.errors and not self.requests, (self.errors, self.requests)
        self.page.close()
