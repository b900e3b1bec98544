"""The pages, driven in a real browser: headless Chromium (the Debian package ``chromium``) through
Playwright. Each page is opened from ``file://`` with every request other than the file itself
refused, so a page that needs the network fails here; the numbers are read back from the DOM and
compared with the trace they came from.

Skipped, with the reason, only where no Chromium can be found (``make test`` and ``.ci/run``
install it with apt-get where they can; ``FNNET_CHROMIUM`` names another binary): tests/browsers.py."""

from __future__ import annotations

import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import draws
from fnnet.app import cli, recipes
from fnnet.layer import make_layer
from fnnet.pages import trace_page

import browsers
from browsers import Opened

@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (each test opens its own page)."""
    with browsers.chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def xor():
    """The tutorials' XOR trace (float64) and its page."""
    with jax.enable_x64(True):
        model, params, loss, x, y = recipes.tutorial_xor()
        trace = fnnet.trace(model, loss, params, x, y)
    return trace


@pytest.fixture(scope="module")
def xor_page(xor, tmp_path_factory):
    return xor.to_html(tmp_path_factory.mktemp("pages") / "xor.html")


def test_the_xor_page_is_small_self_contained_and_lists_every_layer(browser, xor, xor_page):
    text = xor_page.read_text()
    assert xor_page.stat().st_size < 200_000, xor_page.stat().st_size
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), "the page links to the network"
    opened = Opened(browser, xor_page)
    boxes = opened.page.locator(".ft-overview .ft-box")
    assert boxes.count() == len(xor.layers)
    for box, lt in zip(boxes.all(), xor.layers):
        assert box.get_attribute("data-path") == lt.path and lt.label in box.inner_text()
        assert "vjp check OK" in box.inner_text() and "NOT OK" not in box.inner_text()
    assert "every layer OK" in opened.page.inner_text(".ft-verdict")
    assert opened.page.locator(".ft-node[data-layer]").count() == 3 + 3 + 1 + 1  # the units of the four layers
    assert opened.page.locator(".ft-node").count() == 2 + 8  # and the inputs
    assert not opened.errors and not opened.requests, (opened.errors, opened.requests)
    opened.close()


def test_clicking_a_hidden_unit_shows_its_delta_and_dW_and_the_example_changes_them(browser, xor, xor_page):
    opened = Opened(browser, xor_page)
    page = opened.page
    hidden, w = xor.layers[0], xor.layers[0].dparams["w"]
    page.click('.ft-node[data-layer="0"][data-unit="2"]')
    for example in (0, 1, 3):
        page.select_option(".ft-example", str(example))
        assert opened.value('.ft-explain [data-field="delta"]') == pytest.approx(hidden.dy[example, 2], abs=1e-6)
        assert opened.value('.ft-explain [data-field="y"]') == pytest.approx(hidden.y[example, 2], abs=1e-6)
        for i in range(2):
            assert opened.value(f'.ft-explain [data-field="dW"][data-row="{i}"]') == pytest.approx(w[i, 2], abs=1e-6)
        node = '.ft-node[data-layer="0"][data-unit="2"] .ft-delta'
        assert opened.value(node) == pytest.approx(hidden.dy[example, 2], abs=1e-6)
    assert hidden.dy[0, 2] != hidden.dy[1, 2]
    # the chain rule as mathematics, with the tutorial's numbers (example 3 of the XOR set)
    assert page.locator(".ft-explain math").count() >= 5
    assert "(traced: " in page.inner_text(".ft-explain") and "0.172058" in page.inner_text(".ft-explain")
    # the edges carry w and dW
    edge = page.locator(".ft-edge").first
    assert float(edge.get_attribute("data-w")) == pytest.approx(xor.layers[0].params["w"][0, 0], abs=1e-6)
    assert float(edge.get_attribute("data-dw")) == pytest.approx(w[0, 0], abs=1e-6)
    # by keyboard: focus a unit, press Enter
    page.focus('.ft-node[data-layer="2"][data-unit="0"]')
    page.keyboard.press("Enter")
    assert opened.value('.ft-explain [data-field="delta"]') == pytest.approx(xor.layers[2].dy[3, 0], abs=1e-6)
    assert not opened.errors, opened.errors
    opened.close()


def _silu_layer(name, grad):
    """A SiLU whose backward is ``grad(z, dy)`` (right: ``dy·silu'(z)``)."""
    return make_layer(name, lambda key, shape: (tuple(shape), ()), lambda p, z: z * jax.nn.sigmoid(z),
                      lambda p, z: (z * jax.nn.sigmoid(z), z), lambda p, z, dy: ((), grad(z, dy)))


def _silu_grad(z):
    s = jax.nn.sigmoid(z)
    return s * (1 + z * (1 - s))


@pytest.mark.parametrize("bug, says", [
    (_silu_layer("ScaledSilu", lambda z, dy: 1.01 * dy * _silu_grad(z)), "vjp check NOT OK"),
    (_silu_layer("NanSilu", lambda z, dy: dy * jnp.nan), "dx has 20 nan"),
])
def test_a_wrong_backward_is_shown_not_ok_and_nan_as_nan(browser, tmp_path, bug, says):
    model = fnnet.serial(fnnet.Dense(4), bug, fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    x, y = draws.normal(jax.random.PRNGKey(1), (5, 3)), jnp.array([0, 1, 1, 0, 1])
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    assert not trace.layers[1].passed
    opened = Opened(browser, trace.to_html(tmp_path / "bug.html"))
    page = opened.page
    box = page.locator('.ft-box[data-path="1"]')
    assert "ft-not-ok" in box.get_attribute("class") and "NOT OK" in box.inner_text() and says in box.inner_text()
    assert "NOT OK" in page.inner_text(".ft-verdict") and "every layer OK" not in page.inner_text(".ft-verdict")
    # the layer after it is checked along the gradient it got: OK; the one before it is too, unless the
    # gradient it got was NaN (a layer that computed a NaN is never OK)
    assert "NOT OK" not in page.locator('.ft-box[data-path="2"]').inner_text()
    assert ("NOT OK" in page.locator('.ft-box[data-path="0"]').inner_text()) == (bug.name == "NanSilu")
    if bug.name == "NanSilu":   # the δ it passed back is NaN on screen, not a number
        assert page.text_content('.ft-node[data-layer="0"][data-unit="0"] .ft-delta') == "δ = NaN"
        assert "‖dy‖ NaN" in page.locator('.ft-box[data-path="0"]').inner_text()
    assert not opened.errors, opened.errors
    opened.close()


def test_a_screenshot_is_not_blank(browser, xor_page):
    image = pytest.importorskip("matplotlib.image")
    opened = Opened(browser, xor_page)
    opened.page.click('.ft-node[data-layer="0"][data-unit="2"]')
    pixels = image.imread(io.BytesIO(opened.page.screenshot(full_page=True)), format="png")[..., :3]
    assert pixels.std() > 0.05 and (pixels.mean(axis=-1) < 0.5).mean() > 0.005   # colour and dark text
    opened.close()


def test_the_notebook_view_and_two_traces_on_one_page(browser, xor, tmp_path):
    fragment = xor._repr_html_()
    assert fragment.startswith('<div class="fnnet-trace"') and "<script>" in fragment
    path = tmp_path / "two.html"
    path.write_text("<!DOCTYPE html><html><body>" + fragment + xor._repr_html_() + "</body></html>")
    opened = Opened(browser, path)
    assert opened.page.locator(".fnnet-trace[data-mounted]").count() == 2
    assert opened.page.locator(".ft-overview").count() == 2 and not opened.errors, opened.errors
    opened.close()


def test_fnnet_trace_xor_html_writes_the_page(tmp_path, capsys):
    out = tmp_path / "sub" / "t.html"
    assert cli.main(["trace", "xor", "--html", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert "fnnet-trace-data" in text and text.count("<script") >= 3 and out.stat().st_size < 200_000


def test_large_layers_are_summarised(tmp_path):
    model = fnnet.serial(fnnet.Conv(6, 3), fnnet.Relu, fnnet.Flatten, fnnet.Dense(40), fnnet.Relu, fnnet.Dense(3))
    _, params = model.init(jax.random.PRNGKey(0), (12, 12, 1))
    x, y = draws.normal(jax.random.PRNGKey(1), (4, 12, 12, 1)), jnp.array([0, 1, 2, 1])
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    data = trace_page.trace_data(trace)
    conv, dense = data["layers"][0], data["layers"][3]
    assert not conv["small"] and len(conv["kernels"]) == 6 and len(conv["maps"]["y"]) == 4
    heat = {h["name"]: h for h in conv["heat"]}
    assert len(conv["maps"]["y"][0]) == 6 and heat["w"]["value"]["shape"] == [3, 3, 1, 6] and heat["w"]["grad"]
    assert not dense["small"] and dense["heat"][0]["value"]["rows"] <= 64 < 6 * 10 * 10 and "units" not in dense
    assert data["layers"][5]["small"] and len(data["layers"][5]["explain"]) == 4
    np.testing.assert_allclose(data["layers"][5]["units"]["dy"], trace.layers[5].dy, rtol=1e-6)


def test_combinators_are_drawn_as_branches_and_a_recurrent_layer_through_time(browser, tmp_path):
    model = fnnet.serial(fnnet.Dense(6), fnnet.Tanh, fnnet.Residual(fnnet.serial(fnnet.Dense(6), fnnet.Relu)),
                         fnnet.RNN(5, return_sequences=False), fnnet.Dense(3))
    _, params = model.init(jax.random.PRNGKey(0), (7, 4))
    x, y = draws.normal(jax.random.PRNGKey(1), (3, 7, 4)), jnp.array([0, 2, 1])
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    opened = Opened(browser, trace.to_html(tmp_path / "residual.html"))
    page = opened.page
    assert [b.get_attribute("data-path") for b in page.locator(".ft-box").all()] == [lt.path for lt in trace.layers]
    branches = page.locator('.ft-group.ft-parallel[aria-label="layer 2/1"]')
    assert branches.count() == 1 and branches.locator(".ft-box").count() == 3   # the block's two layers, the skip
    page.click(f'.ft-box[data-path="{trace.layers[-2].path}"]')   # the RNN: ‖∂L/∂h_t‖ for t = 1…7
    assert "gradient through time" in page.inner_text(".ft-detail")
    assert page.locator(".ft-detail .fn-curve").count() == 1
    opened.close()
