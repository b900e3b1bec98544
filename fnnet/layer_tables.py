"""The tables a backprop tutorial prints for one layer of a traced step: ``x``, ``W``, ``b``, ``z``,
``a``, and backward ``δ``, ``dW = xᵀ·δ``, ``db``, ``dx = δ·Wᵀ``, each labelled with its formula
(:meth:`fnnet.Trace.tables` and ``fnnet trace --layer``)."""

from __future__ import annotations

import jax
import numpy as np

from fnnet.health import ELEMENTWISE


def shape_text(shape) -> str:
    """``(4, 3)``, ``(3,)``; branches joined: ``(4,) + (2,)``."""
    if shape and isinstance(shape[0], tuple):
        return " + ".join(shape_text(s) for s in shape)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def tree_shape(tree):
    """An array's shape, or a tuple of shapes for a tuple of branches."""
    if isinstance(tree, (tuple, list)):
        return tuple(tree_shape(t) for t in tree)
    return tuple(np.shape(tree)) if tree is not None else ()


def matrix(label: str, array, max_units: int) -> str:
    """``label (shape):`` then the array as rows of 8-digit numbers, at most ``max_units`` rows and
    columns (the rest elided); more than two axes are shown as (first axis, the rest flattened)."""
    array = np.asarray(array)
    if array.dtype == jax.dtypes.float0:
        return f"{label}: none (integer input)"
    shape = array.shape
    if array.ndim == 0:
        return f"{label} = {_entry(array)}"
    if array.ndim > 2:
        array = array.reshape(shape[0], -1)
    rows = array[None] if array.ndim == 1 else array
    lines = [f"{label} {shape_text(shape)}:" + ("" if array.ndim <= 2 and shape == array.shape else
                                                  "  (flattened after the first axis)")]
    for row in rows[:max_units]:
        cells = [_entry(v) for v in row[:max_units]]
        if len(row) > max_units:
            cells.append(f"… ({len(row) - max_units} more)")
        lines.append("  [" + ", ".join(cells) + "]")
    if len(rows) > max_units:
        lines.append(f"  … ({len(rows) - max_units} more rows)")
    return "\n".join(lines)


def _entry(value) -> str:
    value = float(value)
    return f"{value: .8f}" if value == 0 or 1e-4 <= abs(value) < 1e4 else f"{value: .8e}"


def layer_tables(lt, max_units: int) -> str:
    """One layer's tables (``lt``, a :class:`fnnet.tracing.LayerTrace`), labelled as the tutorials
    label them."""
    parts = [f"== {lt.label} =="]
    kind = lt.kind
    if kind == "Dense" and isinstance(lt.params, dict):
        parts += [matrix("x (its input)", lt.x, max_units), matrix("W", lt.params["w"], max_units)]
        if "b" in lt.params:
            parts.append(matrix("b", lt.params["b"], max_units))
        parts += [matrix("z = x·W + b", lt.y, max_units), "backward:",
                  matrix("δ = ∂L/∂z (the delta that reached it)", lt.dy, max_units),
                  matrix("dW = xᵀ·δ", lt.dparams["w"], max_units)]
        if "b" in lt.dparams:
            parts.append(matrix("db = Σₙ δ", lt.dparams["b"], max_units))
        parts.append(matrix("dx = δ·Wᵀ (passed back)", lt.dx, max_units))
    elif kind in ELEMENTWISE:
        f = ELEMENTWISE[kind]
        parts += [matrix("z (its input)", lt.x, max_units), matrix(f"a = {f}(z)", lt.y, max_units), "backward:",
                  matrix("∂L/∂a (reached it)", lt.dy, max_units),
                  matrix(f"δ = ∂L/∂z = ∂L/∂a ⊙ {f}'(z) (passed back)", lt.dx, max_units)]
    else:
        parts.append(_tree_matrices("x (its input)", lt.x, max_units))
        for path, leaf in jax.tree_util.tree_flatten_with_path(lt.params)[0]:
            parts.append(matrix(f"params{jax.tree_util.keystr(path)}", leaf, max_units))
        parts += [_tree_matrices("y (its output)", lt.y, max_units), "backward:",
                  _tree_matrices("dy = ∂L/∂y (reached it)", lt.dy, max_units)]
        for path, leaf in jax.tree_util.tree_flatten_with_path(lt.dparams)[0]:
            parts.append(matrix(f"dparams{jax.tree_util.keystr(path)}", leaf, max_units))
        parts.append(_tree_matrices("dx = ∂L/∂x (passed back)", lt.dx, max_units))
    return "\n".join(parts)


def _tree_matrices(label, tree, max_units):
    if isinstance(tree, (tuple, list)):
        return "\n".join(matrix(f"{label}[{i}]", leaf, max_units) for i, leaf in enumerate(tree))
    return matrix(label, tree, max_units)
