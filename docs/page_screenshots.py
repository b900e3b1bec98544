"""Takes the screenshots of fnnet's pages that the docs and the README show
(``python docs/page_screenshots.py``; a few seconds, plus a tiny CNN run for the report):

* ``docs/images/trace_xor.png``: ``fnnet trace xor --html``'s page, example 1 selected and unit 2
  of the hidden layer clicked (its δ, its dW and the chain rule written out);
* ``docs/images/report_cnn.png``: ``fnnet report`` of the MNIST CNN trained 4 epochs on 2000
  images, monitored (only where MNIST is found; ``FNNET_DATA``).

The browser is the system's Chromium, driven by Playwright, as in ``tests/test_pages.py``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile

import jax
from playwright.sync_api import sync_playwright

import fnnet
from fnnet.app import cli, recipes

IMAGES = pathlib.Path(__file__).resolve().parent / "images"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def trace_xor(browser, folder: pathlib.Path) -> pathlib.Path:
    with jax.enable_x64(True):
        model, params, loss, x, y = recipes.tutorial_xor()
        trace = fnnet.trace(model, loss, params, x, y)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(trace.to_html(folder / "xor.html").as_uri())
    page.select_option(".ft-example", "1")
    page.click('.ft-node[data-layer="0"][data-unit="2"]')
    out = IMAGES / "trace_xor.png"
    page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1200, "height": 1180}, full_page=True)
    return out


def report_cnn(browser, folder: pathlib.Path) -> pathlib.Path | None:
    os.chdir(folder)   # the report names its run as given: runs/mnist-cnn
    try:
        code = cli.main(["train", "mnist", "--model", "cnn", "--limit", "2000", "--epochs", "4", "--monitor", "4",
                         "--out", "runs/mnist-cnn", "--quiet"])
    except OSError as error:
        print(f"report_cnn: skipped ({error})")
        return None
    if code != 0 or cli.main(["report", "runs/mnist-cnn"]) != 0:
        print("report_cnn: skipped (the run or its report failed)")
        return None
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto((folder / "runs" / "mnist-cnn" / "report.html").as_uri())
    out = IMAGES / "report_cnn.png"
    page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1200, "height": 1640}, full_page=True)
    return out


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no Chromium found: apt-get install chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
        for shot in (trace_xor, report_cnn):
            path = shot(browser, pathlib.Path(tmp))
            if path is not None:
                print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
