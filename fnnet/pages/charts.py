"""A run's charts as HTML that needs no script: learning curves and per-layer health as inline SVG,
a model summary and a confusion matrix as tables, images as PNG data. What ``fnnet report`` puts
together and what a notebook shows for a :class:`fnnet.train.History` or a
:class:`fnnet.Summary` (``_repr_html_``).

Example:
  >>> from fnnet.pages import charts
  >>> svg = charts.line_chart([("train", [1, 2, 3], [0.9, 0.5, float("nan")])], "loss", "epoch")
  >>> svg.count("<polyline"), "1 NaN/inf not drawn" in svg
  (1, True)
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from fnnet.pages import _html
from fnnet.plots import pyplot

PALETTE = ("#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214", "#555555", "#35978f", "#c51b7d")
_W, _H, _LEFT, _BOTTOM = 440, 230, 58, 34



def _ticks(lo: float, hi: float, log: bool, whole: bool = False) -> list[float]:
    """About five round ticks between ``lo`` and ``hi``: steps of 1, 2 or 5 times a power of ten
    (``whole``: whole numbers only, as epochs and steps are); on a log axis, where ``lo`` and ``hi``
    are log10s, the powers of ten between them when there are at least three."""
    if log:
        powers = [10.0 ** k for k in range(math.ceil(lo), math.floor(hi) + 1)]
        return powers if len(powers) >= 3 else list(10.0 ** np.linspace(lo, hi, 5))
    rough = (hi - lo) / 4 or 1.0
    power = 10.0 ** math.floor(math.log10(rough))
    step = max(m * power for m in (1, 2, 5) if m * power <= rough)
    step = max(step, 1.0) if whole else step
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(series, title: str, xlabel: str, *, log: bool = False, reference: float | None = None,
               ylabel: str = "") -> str:
    """An inline SVG of ``series`` (``[(name, xs, ys)]``), each a polyline (class ``fn-curve``,
    ``data-name``), with axes, ticks, a legend and ``reference`` as a dashed line; ``log``: a log10 y
    axis. NaN, inf (and on a log axis values ≤ 0) are not drawn, and said so under the title."""
    points, dropped = [], 0
    for name, xs, ys in series:
        keep = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y))
                and (not log or float(y) > 0)]
        dropped += len(list(ys)) - len(keep)
        points.append((name, [(x, math.log10(y) if log else y) for x, y in keep]))
    every = [p for _, pts in points for p in pts] + ([(0, math.log10(reference) if log else reference)]
                                                     if reference else [])
    xs = [p[0] for _, pts in points for p in pts] or [0.0, 1.0]
    ys = [p[1] for p in every] or [0.0, 1.0]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 <= x0:  # one measurement (a single epoch or evaluation): its dot in the middle
        x0, x1 = x0 - 0.5, x0 + 0.5
    y1 = y1 if y1 > y0 else y0 + (1 if log else abs(y0) * 0.1 or 1)

    def sx(x):
        return _LEFT + (_W - _LEFT - 10) * (x - x0) / (x1 - x0)

    def sy(y):
        return 10 + (_H - _BOTTOM - 10) * (1 - (y - y0) / (y1 - y0))

    out = [f'<svg class="fn-chart" width="{_W}" height="{_H + 8 + 16 * len(series)}" role="img" '
           f'aria-label="{_html.esc(title)}" xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="sans-serif">',
           f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - 10}" y2="{_H - _BOTTOM}" stroke="#333"/>',
           f'<line x1="{_LEFT}" y1="10" x2="{_LEFT}" y2="{_H - _BOTTOM}" stroke="#333"/>']
    for tick in _ticks(y0, y1, log):
        y = math.log10(tick) if log else tick
        if y0 - 1e-12 <= y <= y1 + 1e-12:
            out.append(f'<text x="{_LEFT - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{_html.esc(f"{tick:.3g}")}</text>'
                       f'<line x1="{_LEFT}" x2="{_W - 10}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>')
    for tick in _ticks(x0, x1, False, whole=all(float(x).is_integer() for x in xs)):
        out.append(f'<text x="{sx(tick):.1f}" y="{_H - _BOTTOM + 14}" text-anchor="middle">{_html.esc(f"{tick:.4g}")}</text>')
    out.append(f'<text x="{(_W + _LEFT) / 2}" y="{_H - 6}" text-anchor="middle">{_html.esc(xlabel)}</text>')
    if ylabel:
        out.append(f'<text x="12" y="{(_H - _BOTTOM) / 2}" transform="rotate(-90 12 {(_H - _BOTTOM) / 2})" '
                   f'text-anchor="middle">{_html.esc(ylabel)}</text>')
    if reference:
        ref = sy(math.log10(reference) if log else reference)
        out.append(f'<line x1="{_LEFT}" x2="{_W - 10}" y1="{ref:.1f}" y2="{ref:.1f}" stroke="#777" '
                   f'stroke-dasharray="5 4"><title>{_html.esc(f"{reference:g}")}</title></line>')
    for k, (name, pts) in enumerate(points):
        colour = PALETTE[k % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline class="fn-curve" data-name="{_html.esc(name)}" points="{coords}" fill="none" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in pts[:60]]
        out.append(f'<text x="{_LEFT}" y="{_H + 12 + 16 * k}" fill="{colour}">— {_html.esc(name)}</text>')
    out.append("</svg>")
    note = f'<figcaption class="fn-nonfinite">{dropped} NaN/inf not drawn</figcaption>' if dropped else ""
    return f'<figure class="fn-figure"><figcaption>{_html.esc(title)}</figcaption>{"".join(out)}{note}</figure>'


def history_html(history: dict) -> str:
    """Loss and accuracy curves of a history (:meth:`fnnet.train.History.to_dict`, or a language
    model's ``{"step", "train_loss", "val_loss"}``) as SVG figures side by side."""
    x_name = "epoch" if history.get("epoch") else "step"
    xs = history.get(x_name) or []
    losses = [(name.replace("_loss", ""), xs, history[name]) for name in ("train_loss", "eval_loss", "val_loss")
              if any(v is not None for v in history.get(name) or [])]
    accuracies = [(name.replace("_accuracy", ""), xs, history[name]) for name in ("train_accuracy", "eval_accuracy")
                  if any(v is not None for v in history.get(name) or [])]
    figures = [line_chart(losses, "loss", x_name)] if losses else []
    if accuracies:
        figures.append(line_chart(accuracies, "accuracy", x_name))
    if not figures:
        return '<p class="fn-muted">no learning curves recorded</p>'
    return f'<div class="fn-figures fn-curves">{"".join(figures)}</div>'


_HEALTH = (("update_ratio", "update/weight ratio ‖Δθ‖/‖θ‖ (about 1e-3 is typical)", True, 1e-3),
           ("grad_norm", "gradient norm ‖dθ‖", True, None),
           ("dead", "dead units (ReLU: zero for the whole batch)", False, None),
           ("saturated", "saturated units (sigmoid, tanh)", False, None))


def health_html(history: dict) -> str:
    """The monitor's per-layer series over training (``fit(..., monitor=N)``) as SVG figures and
    its warnings; ``""`` when the run was not monitored."""
    layers, steps = history.get("layers") or {}, history.get("health_steps") or []
    if not layers or not steps:
        return ""
    figures = []
    for key, title, log, reference in _HEALTH:
        series = [(label, steps, stats[key]) for label, stats in layers.items() if key in stats]
        if series:
            figures.append(line_chart(series, title, "step", log=log, reference=reference))
    warnings = "".join(f"<li>step {_html.esc(w.get('step'))}: {_html.esc(w.get('message'))}</li>"
                       for w in history.get("warnings") or [])
    listed = f'<ul class="fn-warnings fn-bad">{warnings}</ul>' if warnings else '<p class="fn-ok">no warnings</p>'
    return f'<div class="fn-figures fn-health">{"".join(figures)}</div>{listed}'


def summary_html(summary) -> str:
    """A :class:`fnnet.Summary` as an HTML table (the rows ``print(summary)`` shows)."""
    with_state = summary.total_state > 0
    head = "<tr><th>#</th><th>layer</th><th>output shape</th><th>params</th>" + ("<th>state</th>" if with_state else "")
    rows = [f"<tr><td></td><td>input</td><td>{_html.esc(summary.in_shape)}</td><td></td>" + ("<td></td>" if with_state else "")
            + "</tr>"]
    for index, name, shape, count, state in summary.rows:
        rows.append(f"<tr><td>{_html.esc(index)}</td><td>{_html.esc(name)}</td><td>{_html.esc(shape)}</td>"
                    f'<td class="fn-num">{count:,}</td>' + (f'<td class="fn-num">{state:,}</td>' if with_state else "")
                    + "</tr>")
    foot = f"<p>total parameters: {summary.total_params:,}" + (
        f"; state: {summary.total_state:,}" if with_state else "") + "</p>"
    return f'<table class="fn-table fn-summary">{head}</tr>{"".join(rows)}</table>{foot}'


def png_data_uri(image) -> str:
    """A grey (H, W) or colour (H, W, 3) image with values in [0, 1] as a ``data:image/png`` URI
    (matplotlib's PNG writer)."""
    array = np.clip(np.nan_to_num(np.asarray(image, np.float64)), 0, 1)
    array = (array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    pyplot().imsave(buffer, array, vmin=0.0, vmax=1.0, cmap="gray", format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_html(true, predicted, names) -> str:
    """The confusion matrix (rows: true class, columns: predicted), each cell shaded by its share
    of its row; the diagonal is what the model got right."""
    true, predicted = np.asarray(true).astype(int).ravel(), np.asarray(predicted).astype(int).ravel()
    count = len(names)
    matrix = np.zeros((count, count), int)
    np.add.at(matrix, (true, predicted), 1)
    head = "<tr><th>true ↓ predicted →</th>" + "".join(f"<th>{_html.esc(n)}</th>" for n in names) + "</tr>"
    rows = []
    for i, name in enumerate(names):
        total = max(1, matrix[i].sum())
        cells = "".join(
            f'<td class="fn-num" style="background:rgba({"27,120,55" if i == j else "178,24,43"},'
            f'{0.85 * matrix[i, j] / total:.2f})">{matrix[i, j]}</td>' for j in range(count))
        rows.append(f"<tr><th>{_html.esc(name)}</th>{cells}</tr>")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    return (f'<table class="fn-table fn-confusion">{head}{"".join(rows)}</table>'
            f"<p>{matrix.sum():,} test examples, {accuracy:.2%} on the diagonal</p>")


def styled(body: str) -> str:
    """``body`` with the pages' shared CSS, for a notebook cell."""
    return f'<div class="fnnet-page"><style>{_html.asset("page.css")}</style>{body}</div>'
