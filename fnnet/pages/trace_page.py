"""A :class:`fnnet.Trace` as one self-contained HTML page: every layer's forward and backward
numbers, drawn.

The page (``trace.to_html(path)``, ``fnnet trace xor --html t.html``) holds an overview with one
box per layer (its :func:`fnnet.layer.layer_label`, shapes, parameter count, the forward and vjp
checks as ``OK``/``NOT OK`` with their errors, ``‖dy‖`` and activation statistics; a
combinator's children nested inside it, the branches of a ``parallel`` one above the other), the
units of small layers (at most :data:`SMALL_UNITS` on the output's last axis) as nodes showing the
selected example's value and ``δ = ∂L/∂y``, joined by their weights coloured by sign and
magnitude; clicking a unit shows :func:`fnnet.explain`'s chain rule for it as MathML; and,
for each layer, histograms of its output and gradient, heat maps of its weights and their
gradient, a convolution's feature maps and kernels, an attention layer's attention per head and a
recurrent layer's gradient through time. Large arrays are summarised (block-averaged heat maps
stored one byte per cell), so the XOR page is ~150 KB and a trace of 8 test examples of a trained
MNIST MLP ~0.8 MB, of the MNIST CNN ~1.1 MB, of a one-block GPT ~0.4 MB.

Example:
  >>> import jax, fnnet, tempfile, pathlib
  >>> from fnnet.app import recipes
  >>> with jax.enable_x64(True):
  ...     model, params, loss, x, y = recipes.tutorial_xor()
  ...     trace = fnnet.trace(model, loss, params, x, y)
  >>> path = trace.to_html(pathlib.Path(tempfile.mkdtemp()) / "xor.html")
  >>> text = path.read_text(); "Dense(3)" in text and "https://" not in text
  True
"""

from __future__ import annotations

import html
import pathlib

import jax
import numpy as np

from fnnet import explanation  # the module: it imports fnnet.tracing, which imports this one
from fnnet.gradcheck._numerics import largest_finite
from fnnet.gradcheck._one_layer import RTOL
from fnnet.health import ELEMENTWISE
from fnnet.layer_tables import shape_text, tree_shape
from fnnet.pages import _html
from fnnet.pages.mathml import explanation_html

SMALL_UNITS = 32
"""A layer whose output has at most this many units (last axis, one row per example) is drawn unit by unit."""
EXPLAIN_EXAMPLES = 8
"""The chain rule of a small layer's units is embedded for at most this many examples."""
MAP_EXAMPLES = 8
"""Feature maps, sequences and attention are embedded for at most this many examples."""
MAP_CHANNELS = 8
"""At most this many channels of a feature map are drawn."""


def _single(value):
    """The array of a one-array value, ``None`` for a tuple of branches (or no value: no backward ran)."""
    return None if value is None or isinstance(value, (tuple, list)) else np.asarray(value)


def _is_small(lt) -> bool:
    y = _single(lt.y)
    return y is not None and y.ndim == 2 and y.shape[-1] <= SMALL_UNITS


def _param_leaves(tree) -> list[tuple[str, np.ndarray]]:
    """``[("w", array), ("b", array)]``: a layer's parameter leaves by their key path."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in flat:
        name = "".join(str(getattr(k, "key", getattr(k, "idx", k))) if i == 0 else
                       f"/{getattr(k, 'key', getattr(k, 'idx', k))}" for i, k in enumerate(path))
        array = np.asarray(leaf)
        if np.issubdtype(array.dtype, np.floating):
            out.append((name or "params", array))
    return out


def _status(error: float, problem=None) -> str:
    """``"OK"``, ``"NOT OK"`` (a NaN error, one side not finite, is never OK) or ``"not checked"``."""
    if problem is not None or error > RTOL:
        return "NOT OK"
    return "not checked" if np.isnan(error) else "OK"


def _units(lt) -> dict:
    """A small layer's numbers for every example: its output ``y``, ``dy``, its input ``x`` when
    that is small too, and a Dense layer's ``w``, ``dW``, ``b``, ``db``."""
    out = {"y": _html.numbers(lt.y), "dy": None if lt.dy is None else _html.numbers(lt.dy)}
    x = _single(lt.x)
    if x is not None and x.ndim == 2 and x.shape[-1] <= SMALL_UNITS:
        out["x"] = _html.numbers(x)
    params, grads = dict(_param_leaves(lt.params)), dict(_param_leaves(lt.dparams))
    if lt.kind == "Dense" and "w" in params and params["w"].ndim == 2 and "x" in out:
        out["w"] = _html.numbers(params["w"])
        out["dw"] = _html.numbers(grads["w"]) if "w" in grads else None
        if "b" in params:
            out["b"] = _html.numbers(params["b"])
            out["db"] = _html.numbers(grads["b"]) if "b" in grads else None
    return out


def _explanations(trace, lt) -> list[list[dict]]:
    """``[example][unit]``: :func:`fnnet.explain` of each unit, as text and as HTML with MathML."""
    rows = []
    for example in range(min(EXPLAIN_EXAMPLES, len(trace.x))):
        row = []
        for unit in range(np.shape(lt.y)[-1]):
            try:
                text = explanation.explain(trace, lt.index, unit, example)
            except (ValueError, TypeError, IndexError, NotImplementedError) as error:
                text = f"{lt.label}: unit {unit}, example {example}\nno explanation: {error}"
            row.append({"text": text, "html": explanation_html(text)})
        rows.append(row)
    return rows


def _maps(array, examples: int) -> list | None:
    """Per example (at most ``examples``): a feature map's first channels as heat maps (``(H, W, C)``
    per example), or a sequence as one heat map (positions × units); ``None`` for other shapes."""
    array = _single(array)
    if array is None or array.ndim < 3:
        return None
    scale = largest_finite(array)
    if array.ndim == 4:
        return [[_html.heat(array[e, :, :, c], side=32, scale=scale) for c in range(min(MAP_CHANNELS, array.shape[-1]))]
                for e in range(min(examples, len(array)))]
    return [[_html.heat(array[e], side=32, scale=scale)] for e in range(min(examples, len(array)))]


def _attention(lt, examples: int) -> list | None:
    """An attention layer's weights per example and head (rows: queries, columns: keys)."""
    if lt.kind != "CausalSelfAttention":
        return None
    try:
        _, residuals = lt.layer.forward(lt.params, np.asarray(lt.x)[:examples])
        weights = np.asarray(residuals.weights)
    except (AttributeError, TypeError, ValueError):
        return None
    return [[_html.heat(head, side=48, scale=1.0) for head in example] for example in weights]


def _kernels(lt) -> list | None:
    """A 2-D convolution's kernels, input channel 0, for its first output channels."""
    w = dict(_param_leaves(lt.params)).get("w")
    if lt.kind != "Conv" or w is None or w.ndim != 4:
        return None
    scale = largest_finite(w)
    return [_html.heat(w[:, :, 0, c], scale=scale) for c in range(min(16, w.shape[-1]))]


def _checks(lt) -> dict:
    forward = _status(lt.forward_error)
    vjp = _status(lt.vjp_error, lt.problem)
    return {"forward": forward, "forward_error": _html.number(lt.forward_error, 3),
            "vjp": vjp, "vjp_error": _html.number(lt.vjp_error, 3), "problem": lt.problem,
            "nonfinite": lt.nonfinite, "passed": bool(lt.passed)}


def layer_record(trace, lt) -> dict:
    """Everything the page shows of one layer, JSON-able (NaN and inf as strings)."""
    norms = lt.norms()
    small = _is_small(lt)
    params, grads = _param_leaves(lt.params), dict(_param_leaves(lt.dparams))
    record = {"index": lt.index, "path": lt.path, "label": lt.label, "name": lt.name, "kind": lt.kind,
              "in_shape": shape_text(tree_shape(lt.x)), "out_shape": shape_text(tree_shape(lt.y)),
              "params": int(sum(a.size for _, a in params)), **_checks(lt),
              "dy_norm": _html.number(norms["dy"], 4),
              "dparams_norm": _html.number(norms["dparams"], 4) if lt.has_params else None,
              "stats": {k: _html.number(v, 4) for k, v in lt.stats.items()},
              "consumers": [list(c) for c in lt.consumers], "is_output": bool(lt.is_output),
              "elementwise": lt.kind in ELEMENTWISE or lt.kind in ("Identity",), "small": small,
              "hist": {"y": _html.histogram(lt.y) if _single(lt.y) is not None else None,
                       "dy": _html.histogram(lt.dy) if _single(lt.dy) is not None else None},
              "heat": [{"name": name, "value": _html.heat(value),
                        "grad": _html.heat(grads[name]) if name in grads else None}
                       for name, value in sorted(params, key=lambda p: -p[1].ndim) if value.size > 1 and not small],
              "maps": {"y": _maps(lt.y, MAP_EXAMPLES), "dy": _maps(lt.dy, MAP_EXAMPLES)},
              "kernels": _kernels(lt), "attention": _attention(lt, MAP_EXAMPLES),
              "time": None if lt.time is None else _html.numbers(lt.through_time, 4)}
    if small:
        record["units"] = _units(lt)
        record["explain"] = _explanations(trace, lt)
    return record


def _example_labels(trace) -> list[str]:
    """``"example 1: x = [0, 1], y = [1]"`` (inputs shown when they are short), else ``"example 3: y = 7"``."""
    labels = []
    for n in range(len(trace.x)):
        x, y = np.asarray(trace.x[n]), np.asarray(trace.y[n])
        text = f"example {n}"
        if x.size <= 8:
            text += ": x = " + np.array2string(x, precision=3, separator=", ")
        if y.size <= 8:
            text += (", " if x.size <= 8 else ": ") + "y = " + np.array2string(y, precision=3, separator=", ")
        labels.append(text)
    return labels


def trace_data(trace, title: str | None = None) -> dict:
    """The page's data: the loss, the verdict, the examples, and :func:`layer_record` of every layer."""
    x = np.asarray(trace.x)
    return {"title": title or "fnnet trace", "loss": _html.number(trace.loss), "loss_name": trace.loss_name,
            "examples": _example_labels(trace), "train": bool(trace.train), "passed": bool(trace.passed),
            "explain_examples": min(EXPLAIN_EXAMPLES, len(x)), "map_examples": min(MAP_EXAMPLES, len(x)),
            "input": _maps(x if x.ndim >= 3 else None, MAP_EXAMPLES) if np.issubdtype(x.dtype, np.floating) else None,
            "layers": [layer_record(trace, lt) for lt in trace.layers]}


def component(trace, title: str | None = None) -> str:
    """The trace as an HTML fragment (its CSS and script inlined): a page's body, a report's
    section, a notebook cell's output."""
    root = _html.unique_id("fnnet-trace")
    return (f'<div class="fnnet-trace" id="{root}" data-title="{html.escape(title or "fnnet trace")}">'
            f'{_html.data_script(trace_data(trace, title), "fnnet-trace-data")}'
            '<noscript>This page draws with JavaScript; `fnnet trace` prints the same numbers as text.</noscript>'
            f'</div>{_html.style_and_script(("page.css", "trace.css"), ("draw.js", "trace.js"))}')


def write(trace, path, title: str | None = None) -> pathlib.Path:
    """Writes the trace page to ``path`` (one self-contained HTML file) and returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    title = title or f"fnnet trace: {trace.loss_name} loss {trace.loss:.6g} on {len(trace.x)} examples"
    path.write_text(_html.document(title, component(trace, title)), encoding="utf-8")
    return path
