"""What every page shares: the static files, data embedded as JSON, numbers that keep NaN and inf,
heat maps as bytes, histograms, and the document around a component.

A page is one file: its CSS and JavaScript are inlined from this package's ``.css``/``.js``
files, its data sits in a ``<script type="application/json">`` (parsed, never executed), and
nothing is fetched. JSON has no NaN or infinity, so non-finite numbers travel as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and the page's reader turns them back into numbers:
a NaN is shown as NaN, never as a number or as OK.
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import itertools
import json
import math

import numpy as np

from fnnet.gradcheck._numerics import largest_finite

_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_IDS = itertools.count()
HEAT_SIDE = 64
"""A heat map is block-averaged down to at most this many rows and columns."""


def esc(text) -> str:
    """``text`` (anything, as ``str``) escaped for HTML text and attribute values."""
    return html.escape(str(text))


def asset(name: str) -> str:
    """The text of a static file shipped in ``fnnet/pages`` (``"trace.js"``, ``"page.css"``)."""
    return importlib.resources.files("fnnet.pages").joinpath(name).read_text(encoding="utf-8")


def unique_id(prefix: str) -> str:
    """An id for a component's root, unique within this process (several traces on one page or
    notebook each keep their own)."""
    return f"{prefix}-{next(_IDS)}-{np.random.default_rng().integers(1 << 30):x}"


def number(value, digits: int = 8):
    """A float for JSON to ``digits`` significant digits, or ``"NaN"``/``"Infinity"``/``"-Infinity"``;
    ``None`` stays ``None``."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return _NONFINITE[str(value)]
    return float(f"{value:.{digits}g}")


def numbers(array, digits: int = 8) -> list:
    """An array as nested lists of :func:`number` (a scalar as a list of one)."""
    array = np.asarray(array, np.float64)
    if array.ndim == 0:
        array = array.reshape(1)
    flat = [number(v, digits) for v in array.ravel().tolist()]
    return np.array(flat, dtype=object).reshape(array.shape).tolist()


def data_script(data, css_class: str) -> str:
    """``data`` as JSON in a ``<script type="application/json">`` (``</`` escaped so no string can
    end the element)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" class="{css_class}">{text}</script>'


def _blocks(array: np.ndarray, side: int) -> np.ndarray:
    """A 2-D array block-averaged to at most ``side`` × ``side``; a block holding a NaN or inf is NaN."""
    rows, cols = array.shape
    fr, fc = max(1, math.ceil(rows / side)), max(1, math.ceil(cols / side))
    if fr == 1 and fc == 1:
        return array
    padded = np.full((math.ceil(rows / fr) * fr, math.ceil(cols / fc) * fc), np.nan)
    padded[:rows, :cols] = array
    counts = np.zeros_like(padded)
    counts[:rows, :cols] = 1
    bad = ~np.isfinite(padded) & (counts > 0)
    shape = (padded.shape[0] // fr, fr, padded.shape[1] // fc, fc)
    values = np.where(counts > 0, np.nan_to_num(padded, nan=0.0, posinf=0.0, neginf=0.0), 0.0).reshape(shape)
    mean = values.sum(axis=(1, 3)) / counts.reshape(shape).sum(axis=(1, 3))
    return np.where(bad.reshape(shape).any(axis=(1, 3)), np.nan, mean)


def heat(array, side: int = HEAT_SIDE, scale: float | None = None) -> dict:
    """A 2-D array (a vector is one row; more axes are folded into the rows) as a heat map:
    ``{"rows", "cols", "shape", "scale", "bytes", "nonfinite"}``, block-averaged to at most
    ``side`` × ``side``, each value one byte centred on zero (``127 + 127·v/scale``, ``scale`` the
    largest magnitude unless given), ``255`` for NaN or inf; ``bytes`` is base64."""
    array = np.asarray(array, np.float64)
    shape = list(array.shape)
    array = array.reshape(1, -1) if array.ndim <= 1 else array.reshape(-1, array.shape[-1])
    nonfinite = int(np.size(array) - np.isfinite(array).sum())
    small = _blocks(array, side)
    finite = np.isfinite(small)
    if scale is None:
        scale = largest_finite(small)
    q = np.clip(np.round(127 + 127 * np.where(finite, small, 0.0) / (scale or 1.0)), 0, 254)
    q = np.where(finite, q, 255).astype(np.uint8)
    return {"rows": int(small.shape[0]), "cols": int(small.shape[1]), "shape": shape, "scale": number(scale, 4),
            "nonfinite": nonfinite, "bytes": base64.b64encode(q.tobytes()).decode("ascii")}


def histogram(array, bins: int = 40) -> dict:
    """``{"lo", "hi", "counts", "nonfinite", "size"}``: the finite values of ``array`` in ``bins``
    equal bins, and how many were NaN or inf."""
    values = np.asarray(array, np.float64).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"lo": 0.0, "hi": 0.0, "counts": [], "nonfinite": int(values.size), "size": int(values.size)}
    lo, hi = float(finite.min()), float(finite.max())
    counts, _ = np.histogram(finite, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {"lo": number(lo, 5), "hi": number(hi, 5), "counts": counts.tolist(),
            "nonfinite": int(values.size - finite.size), "size": int(values.size)}


def document(title: str, body: str) -> str:
    """A whole HTML file around ``body`` (which carries its own CSS and scripts)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title></head>\n<body class=\"fnnet-body\">\n{body}\n</body></html>\n")


def style_and_script(css: tuple[str, ...], js: tuple[str, ...]) -> str:
    """The ``<style>`` and ``<script>`` elements of the named static files."""
    styles = "".join(f"<style>{asset(name)}</style>" for name in css)
    scripts = "".join(f"<script>{asset(name)}</script>" for name in js)
    return styles + scripts
