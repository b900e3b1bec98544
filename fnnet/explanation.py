"""``fnnet.explain``: how one unit's gradient came to be, term by term, with the traced numbers.

The tutorials' chain rule, written out for one unit of a traced step (a :class:`fnnet.Trace`):
the forward sum, the incoming gradient from every consumer of the layer's output, the activation's
derivative, and ``dW``, ``db``. Every number is derived from the forward values, the weights and
``jax.vjp`` of the consumers' ``apply`` (never from their hand-written backward) and printed
beside the traced one; a difference is said out loud (``≠ traced …``).

Example:
  >>> import jax, fnnet
  >>> from fnnet.app import recipes
  >>> with jax.enable_x64(True):
  ...     model, params, loss, x, y = recipes.tutorial_xor()
  ...     trace = fnnet.trace(model, loss, params, x, y)
  >>> last = fnnet.explain(trace, layer=3, unit=0, example=1).splitlines()[-1]   # the sigmoid's δ
  >>> last.split(" = ")[1], last.endswith("= -0.0932858   (traced: -0.0932858)")
  ("σ'(z=0.5188)", True)
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import tracing  # the module, not its names: tracing's page imports this module in turn
from fnnet.gradcheck._numerics import to_float64
from fnnet.gradcheck._one_layer import RTOL
from fnnet.health import ELEMENTWISE
from fnnet.layer import Layer, apply_with_state
from fnnet.layers._sequences import unpack
from fnnet.through_time import core, derived

MIXING = {"BatchNorm", "LayerNorm", "CausalSelfAttention", "Softmax", "Conv", "Conv1D", "MaxPool", "AvgPool",
          "GlobalAvgPool"}
"""The built-in kinds whose outputs each depend on many inputs (across units, positions or examples)."""


_MAX_TERMS = 8


def _rows(array) -> np.ndarray:
    """``array`` as (examples, units): the leading axes flattened into rows."""
    array = np.asarray(array, np.float64)
    return array.reshape(-1, array.shape[-1]) if array.ndim >= 1 else array.reshape(1, 1)


def _sym(lt: tracing.LayerTrace) -> str:
    """The layer's place in a symbol, ``W[3/1/0]``: its path (its index for a one-layer model)."""
    return lt.path or str(lt.index)


def _sum_terms(pairs) -> str:
    """``(a·b + (−c)·d + …)`` for the first terms of a dot product."""
    shown = [f"{_v(a)}·{_v(b)}" for a, b in pairs[:_MAX_TERMS]]
    more = f" + … ({len(pairs) - _MAX_TERMS} more terms)" if len(pairs) > _MAX_TERMS else ""
    return "(" + " + ".join(shown) + more + ")"


def _g(value, digits: int = 6) -> str:
    """``value`` to ``digits`` significant digits, ``-0`` written ``0``."""
    return f"{float(value) + 0.0:.{digits}g}"


def _v(value) -> str:
    """A short number for a sum's terms, in parentheses when negative: ``(-0.1223)``."""
    text = _g(value, 4)
    return f"({text})" if text.startswith("-") else text


def _row_label(lt: tracing.LayerTrace, n: int) -> str:
    """``"example 3"`` for a layer whose rows are examples; ``"example 0, position (2, 5)"`` for
    a row of a feature map or a sequence (leading axes beyond the batch)."""
    shape = np.shape(lt.y)[:-1]
    if len(shape) <= 1:
        return f"example {n}"
    where = np.unravel_index(n, shape)
    position = tuple(int(i) for i in where[1:])
    return f"example {int(where[0])}, position {position[0] if len(position) == 1 else position}"


def _tolerance(*arrays) -> float:
    """How far a number explain derives (float64, from the traced arrays) may be from the traced
    one, relative to the size of what was summed: float32 round-off, or float64's."""
    wide = all(np.asarray(leaf).dtype == np.float64 for leaf in jax.tree.leaves(arrays)
               if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact))
    return 1e-9 if wide else 1e-4


def _agrees(derived: float, traced: float, magnitude: float, tolerance: float) -> bool:
    """Whether ``derived`` equals ``traced`` up to ``tolerance`` of ``magnitude`` (NaN never agrees)."""
    if not (math.isfinite(derived) and math.isfinite(traced)):
        return False
    return abs(derived - traced) <= tolerance * max(magnitude, abs(derived), abs(traced), 1e-30)


def _versus(derived: float, traced: float, magnitude: float, tolerance: float, who: str) -> str:
    """``"   (traced: 0.5)"`` when they agree; otherwise the disagreement, said out loud."""
    if _agrees(derived, traced, magnitude, tolerance):
        return f"   (traced: {_g(traced)})"
    return f"   ≠ traced {_g(traced)}: {who} disagree"


def _derivative(lt: tracing.LayerTrace, z: float) -> float:
    """The activation's derivative at ``z`` (of its ``apply``, float64)."""
    with jax.enable_x64(True):
        return float(jax.grad(lambda v: jnp.sum(lt.layer.apply((), v)))(jnp.asarray(z, jnp.float64)))


def _derivative_text(kind: str, z: float, d: float, a: float) -> str:
    if kind == "Sigmoid":
        return f"σ'(z={_g(z, 4)}) = σ(1−σ) = {_v(a)}·(1−{_v(a)}) = {_g(d, 4)}"
    if kind == "Tanh":
        return f"tanh'(z={_g(z, 4)}) = 1−tanh² = 1−{_v(a)}² = {_g(d, 4)}"
    return f"{ELEMENTWISE[kind]}'(z={_g(z, 4)}) = {_g(d, 4)}"


def _consumer_terms(trace: tracing.Trace, lt: tracing.LayerTrace, n: int, j: int) -> list[tuple[str, float, float]]:
    """``(text, value, magnitude)`` for every path by which ``y[n, j]`` of ``lt`` reaches the loss:
    the loss itself when ``y`` is the model's output, and each consumer's share of its ``dx``
    (a Dense consumer's as ``Σ_k δ[c][n,k]·W[c][j,k]``). A fan-out is walked through to its
    branches, each term labelled by the consumer's index and path."""
    terms = []
    if lt.is_output:
        value = float(_rows(trace.dpred)[n, j])
        target = _rows(trace.y)[n, j] if trace.y.ndim == trace.pred.ndim else trace.y.reshape(-1)[n]
        terms.append((f"the {trace.loss_name} loss's grad at ŷ={_g(_rows(trace.pred)[n, j], 4)} "
                      f"(target {_g(target, 4)}): {_g(value)}", value, abs(value)))
    for index, branch in lt.consumers:
        consumer = trace.layers[index]
        where = consumer.label
        if consumer.kind == "FanOut" and branch is None:
            terms += [(f"via {where}: {text}", value, size) for text, value, size in
                      _consumer_terms(trace, consumer, n, j)]
            continue
        if consumer.kind == "Dense" and isinstance(consumer.params, dict) and branch is None:
            delta, weights = _rows(consumer.dy)[n], np.asarray(consumer.params["w"], np.float64)[j]
            value = float(np.dot(delta, weights))
            terms.append((f"{where}: " * (len(lt.consumers) + lt.is_output > 1)
                          + f"Σ_k δ[{_sym(consumer)}][{n},k]·W[{_sym(consumer)}][{j},k] = "
                          f"{_sum_terms(list(zip(delta, weights)))} = {_g(value)}", value,
                          float(np.sum(np.abs(delta * weights)))))
            continue
        dx = _reference_dx(consumer)
        value = float(_rows(dx[branch] if branch is not None else dx)[n, j])
        terms.append((f"{where}: its dx{f'[{branch}]' if branch is not None else ''} by jax.vjp of its apply = "
                      f"{_g(value)}", value, abs(value)))
    return terms


def _reference_dx(lt: tracing.LayerTrace):
    """``∂L/∂x`` of a traced layer from ``jax.vjp`` of its ``apply`` (at its params, input, state
    and key) along its traced ``dy``, in float64: the chain rule's step through that layer,
    independent of its hand-written backward."""
    with jax.enable_x64(True):
        params, x, dy = to_float64(lt.params), to_float64(lt.x), to_float64(lt.dy)
        state = to_float64(lt.state)

        def apply(inputs):
            return apply_with_state(lt.layer, params, state, inputs, key=lt.key, train=lt.train)[0]

        return jax.device_get(jax.vjp(apply, x)[1](dy)[0])


def _incoming(trace: tracing.Trace, lt: tracing.LayerTrace, n: int, j: int) -> tuple[list[str], float]:
    """How ``∂L/∂y[n, j]`` of layer ``lt`` came to be: lines of explanation, each consumer's term,
    and the value they add up to (said to differ from the traced one when it does)."""
    traced = float(_rows(lt.dy)[n, j])
    name = f"∂L/∂y[{_sym(lt)}][{n},{j}]"
    terms = _consumer_terms(trace, lt, n, j)
    if not terms:
        return [f"{name} = {_g(traced)} (from the combinator around it)"], traced
    derived = float(sum(value for _, value, _ in terms))
    magnitude = float(sum(size for _, _, size in terms))
    check = _versus(derived, traced, magnitude, _tolerance(lt.dy, lt.y),
                    "this layer's backward or its consumers")
    if len(terms) == 1:
        return [f"{name} = {terms[0][0]}" + check], derived
    lines = [f"{name} = the sum over the {len(terms)} places its output goes:"]
    lines += [f"    + {text}" for text, _, _ in terms]
    lines.append(f"  = {_g(derived)}" + check)
    return lines, derived


def explain(trace: tracing.Trace, layer, unit: int, example: int = 0) -> str:
    """How one unit's gradient came to be in ``trace``, term by term, with its numbers.

    ``layer`` is an index or path into ``trace.layers``, ``unit`` an index on the last axis of its
    output, ``example`` a row of the batch (leading axes flattened: for a feature map or a
    sequence, a row is one position of one example). For a ``Dense`` layer (and the activation
    after it) the story is the tutorials' chain rule::

        δ[0][0,2] = relu'(z=0.41) = 1 × Σ_k δ[2][0,k]·W[2][2,k] = 1 × (0.31·0.12 + (−0.05)·0.7 + …) = 0.0372
        dW[0][i,2] = Σ_n x[n,i]·δ[0][n,2] …    db[0][2] = Σ_n δ[0][n,2] = …

    where ``[k]`` is a layer's index in the trace. A layer whose output goes to several places (a
    fan-out, a residual connection) gets one term per consumer, summed. For an RNN, LSTM or GRU
    layer (a row: one step of one sequence, or one sequence for a last-step layer) it is the
    chain through time, from that step back to ``t = 1``::

        ∂L/∂h_t[j] = (from the output at t) + (from step t+1 through W_hh) = Σ_k du_{t+1}[k]·W_hh[j,k] + …

    each step's term derived by ``jax.vjp`` of a plain-JAX copy of the cell along ``jax.grad``'s
    ``∂L/∂h_{t+1}`` (never the hand-written backward), and compared with the traced one. Every number explain
    derives is compared with the traced one; where they differ the text says so (``≠ traced …``).
    For a layer whose units mix (attention, BatchNorm, LayerNorm, Softmax, convolutions) it says
    so and shows the layer's formula from its docstring, with the traced norms.
    """
    lt = trace.layer(layer)
    if lt.time is not None:
        return _explain_recurrent(trace, lt, unit, example)
    out = _rows(lt.y)
    if not 0 <= unit < out.shape[1]:
        raise ValueError(f"explain: unit {unit} is out of range for {lt.label}, whose "
                         f"output has {out.shape[1]} units on its last axis (0..{out.shape[1] - 1})")
    if not 0 <= example < out.shape[0]:
        raise ValueError(f"explain: example {example} is out of range: the trace holds {out.shape[0]} rows "
                         f"(0..{out.shape[0] - 1})")
    n, j = example, unit
    if lt.kind == "Dense" and isinstance(lt.params, dict):
        return _explain_dense(trace, lt, n, j)
    if lt.kind in ELEMENTWISE:
        lines = [f"{lt.label}: a[{_sym(lt)}] = {ELEMENTWISE[lt.kind]}(z), unit by unit; "
                 f"unit {j}, {_row_label(lt, n)}"]
        lines += _explain_activation(trace, lt, n, j, f"dx[{_sym(lt)}]")
        return "\n".join(lines)
    return _explain_mixing(trace, lt, n, j)


def _explain_activation(trace, act: tracing.LayerTrace, n, j, target: str) -> list[str]:
    z, a = float(_rows(act.x)[n, j]), float(_rows(act.y)[n, j])
    d = _derivative(act, z)
    incoming, upstream = _incoming(trace, act, n, j)
    value = float(_rows(act.dx)[n, j])
    derived = d * upstream
    return incoming + [f"{target}[{n},{j}] = {_derivative_text(act.kind, z, d, a)} × {_v(upstream)} = "
                       f"{_g(derived)}" + _versus(derived, value, abs(derived), _tolerance(act.dx, act.y),
                                                  f"{act.label}'s backward and its derivative")]


def _explain_dense(trace: tracing.Trace, lt: tracing.LayerTrace, n: int, j: int) -> str:
    x, w = _rows(lt.x), np.asarray(lt.params["w"], np.float64)
    b = np.asarray(lt.params["b"], np.float64) if "b" in lt.params else None
    z = float(_rows(lt.y)[n, j])
    i_count = x.shape[1]
    tolerance = _tolerance(lt.x, lt.y, lt.dy, lt.params, lt.dparams)
    derived_z = float(np.dot(x[n], w[:, j]) + (b[j] if b is not None else 0.0))
    plus_b = f" + b[{_sym(lt)}]" if b is not None else ""
    lines = [f"{lt.label}: z[{_sym(lt)}] = x·W[{_sym(lt)}]{plus_b}; unit {j}, {_row_label(lt, n)}",
             f"forward:  z[{_sym(lt)}][{n},{j}] = Σ_i x[{n},i]·W[{_sym(lt)}][i,{j}]"
             + (f" + b[{_sym(lt)}][{j}]" if b is not None else "") + " = "
             + _sum_terms(list(zip(x[n], w[:, j]))) + (f" + {_v(b[j])}" if b is not None else "") + f" = {_g(derived_z)}"
             + ("" if _agrees(derived_z, z, float(np.sum(np.abs(x[n] * w[:, j]))), tolerance) else
                f"   ≠ traced {_g(z)}: this layer's forward disagrees"),
             "backward:"]
    delta = _rows(lt.dy)[:, j]
    act = trace.layers[lt.feeds] if lt.feeds is not None and len(lt.consumers) == 1 and not lt.is_output else None
    if act is not None and act.kind in ELEMENTWISE and act.kind != "Identity":
        lines += _explain_activation(trace, act, n, j, f"δ[{_sym(lt)}]")
    else:
        incoming, _ = _incoming(trace, lt, n, j)
        lines += [line.replace(f"∂L/∂y[{_sym(lt)}]", f"δ[{_sym(lt)}]") for line in incoming]
    shown = range(min(i_count, 4))
    dparams_w = np.asarray(lt.dparams["w"], np.float64) if isinstance(lt.dparams, dict) and "w" in lt.dparams \
        else None
    for i in shown:
        pairs = list(zip(x[:, i], delta))
        derived = float(np.dot(x[:, i], delta))
        check = "" if dparams_w is None else _versus(derived, dparams_w[i, j], float(np.sum(np.abs(x[:, i] * delta))),
                                                     tolerance, f"{lt.label}'s backward (dW)")
        lines.append(f"dW[{_sym(lt)}][{i},{j}] = Σ_n x[n,{i}]·δ[{_sym(lt)}][n,{j}] = {_sum_terms(pairs)} = "
                     f"{_g(derived)}{check}")
    if i_count > len(shown):
        lines.append(f"… and so on for the {i_count - len(shown)} other inputs i < {i_count}")
    if b is not None:
        derived = float(np.sum(delta))
        traced_db = np.asarray(lt.dparams["b"], np.float64)[j] if isinstance(lt.dparams, dict) and \
            "b" in lt.dparams else None
        check = "" if traced_db is None else _versus(derived, traced_db, float(np.sum(np.abs(delta))), tolerance,
                                                     f"{lt.label}'s backward (db)")
        lines.append(f"db[{_sym(lt)}][{j}] = Σ_n δ[{_sym(lt)}][n,{j}] = "
                     + "(" + " + ".join(_v(v) for v in delta[:_MAX_TERMS])
                     + (f" + … ({len(delta) - _MAX_TERMS} more)" if len(delta) > _MAX_TERMS else "") + ")"
                     + f" = {_g(derived)}{check}")
    return "\n".join(lines)


def _doc_formula(layer: Layer) -> str:
    doc = type(layer).__doc__ or ""
    if type(layer) is Layer or not doc:
        return "(no docstring)"
    return inspect.cleandoc(doc.split("Example")[0])


def _explain_mixing(trace: tracing.Trace, lt: tracing.LayerTrace, n: int, j: int) -> str:
    norms = lt.norms()
    why = (f"each output of this layer depends on many of its inputs (across units, positions or examples), "
           f"so ∂L/∂x[{n},{j}] is a sum over all of them" if lt.kind in MIXING else
           "it is neither a Dense layer nor a unit-by-unit activation")
    lines = [f"{lt.label}: no per-unit chain rule here: {why}. Its formula:", "",
             "    " + _doc_formula(lt.layer).replace("\n", "\n    "), "",
             f"traced: ‖x‖ = {norms['x']:.4g}, ‖y‖ = {norms['y']:.4g}, ‖dy‖ = {norms['dy']:.4g}, "
             f"‖dx‖ = {norms['dx']:.4g}" + (f", ‖params‖ = {norms['params']:.4g}, ‖dparams‖ = "
                                           f"{norms['dparams']:.4g}" if lt.has_params else ""),
             f"unit {j}, {_row_label(lt, n)}: y = {_g(_rows(lt.y)[n, j])}, ∂L/∂y = {_g(_rows(lt.dy)[n, j])}"]
    if isinstance(lt.dparams, dict) and "b" in lt.dparams and np.ndim(lt.dparams["b"]) == 1:
        delta = _rows(lt.dy)[:, j]
        lines.append(f"db[{_sym(lt)}][{j}] = Σ over every example and position of ∂L/∂y[..., {j}] = "
                     f"{_g(np.sum(delta))}")
    lines.append(f"forward vs apply: {'OK' if not lt.forward_error > RTOL else 'NOT OK'} ({lt.forward_error:.1e}); "
                 f"backward vs jax.vjp: {'OK' if lt.passed else 'NOT OK'} ({lt.vjp_error:.1e})"
                 + (f": {lt.problem or lt.nonfinite}" if not lt.passed else ""))
    return "\n".join(lines)



_CELL_TEXT = {"RNN": "h_t = {act}(x_t·W_ih + b_ih + u_t)",
              "LSTM": "h_t = o ⊙ tanh(c_t), c_t = f ⊙ c_{{t-1}} + i ⊙ g, (i, f, g, o) from x_t·W_ih + b_ih + u_t",
              "GRU": "h_t = (1 − z) ⊙ n + z ⊙ h_{{t-1}}, r, z, n from x_t·W_ih + b_ih and u_t"}
_DU_TEXT = {"RNN": ("δ", "∂L/∂u_{next} = ∂L/∂h_{next} ⊙ {act}'(…)"),
            "LSTM": ("da", "∂L/∂u_{next}, the 4H gate pre-activations (i, f, g, o), along ∂L/∂h_{next} and "
                           "∂L/∂c_{next}"),
            "GRU": ("du", "∂L/∂u_{next}, the 3H of r, z, n")}


def _recurrent_place(lt: tracing.LayerTrace, unit: int, example: int):
    """``(sequence, step t (1-based), its length)`` of row ``example`` of the layer's output (a step
    of a sequence; for a last-step layer, a sequence at its last valid step); a ValueError naming the
    range when ``unit`` or ``example`` is out of it."""
    sequences, steps, units = lt.time.dh.shape
    rows = sequences * steps if core(lt.layer).spec["return_sequences"] else sequences
    if not 0 <= unit < units:
        raise ValueError(f"explain: unit {unit} is out of range for {lt.label}, whose output has {units} units on "
                         f"its last axis (0..{units - 1})")
    if not 0 <= example < rows:
        raise ValueError(f"explain: example {example} is out of range: the trace holds {rows} rows (0..{rows - 1})")
    e = example // steps if rows > sequences else example
    length = steps if lt.time.lengths is None else int(lt.time.lengths[e])
    return e, example % steps + 1 if rows > sequences else length, length


def _outputs(lt: tracing.LayerTrace) -> np.ndarray:
    """The gradient of each step's output, ``(N, T, H)`` (a last-step layer's at each sequence's last step)."""
    dh = lt.time.dh
    dy = np.asarray(unpack(lt.dy)[0], np.float64)
    if core(lt.layer).spec["return_sequences"]:
        return dy.reshape(dh.shape)
    out = np.zeros_like(dh)
    lengths = np.full(dh.shape[0], dh.shape[1]) if lt.time.lengths is None else lt.time.lengths
    for e, length in enumerate(lengths):
        if length > 0:
            out[e, length - 1] = dy.reshape(dh.shape[0], -1)[e]
    return out


def _output_lines(trace: tracing.Trace, lt: tracing.LayerTrace, example: int, t: int, j: int, value: float) -> list[str]:
    """The chosen step's gradient from its own output, derived from the layer's consumers as for a
    Dense layer (where the output is an array and the step is an output)."""
    if value == 0 and not core(lt.layer).spec["return_sequences"]:
        return [f"from the output at t = {t}: 0 (the layer returns each sequence's last step only)"]
    if not isinstance(lt.y, np.ndarray):
        return [f"from the output at t = {t}: ∂L/∂y = {_g(value)} (traced)"]
    lines, _ = _incoming(trace, lt, example, j)
    return [f"from the output at t = {t}: " + lines[0]] + lines[1:]


def _explain_recurrent(trace: tracing.Trace, lt: tracing.LayerTrace, unit: int, example: int) -> str:
    """The chain through time of ``unit`` of ``lt`` (an RNN, LSTM or GRU) at row ``example``: the
    chosen step in detail, then the steps before it, each derived total against the traced one."""
    e, t, length = _recurrent_place(lt, unit, example)
    layer, j, seen, steps = core(lt.layer), unit, lt.time, lt.time.dh.shape[1]
    lines = [f"{lt.label}: {_CELL_TEXT[layer.spec.kind].format(act=layer.spec.get('activation', 'tanh'))}, "
             f"u_t = h_{{t-1}}·W_hh + b_hh, t = 1…{steps} (h_t: the output at position t − 1); unit {j} of "
             f"sequence {e}, step t = {t}",
             "backward through time: ∂L/∂h_t = (from the output at t) + (from step t+1 through W_hh)"]
    if t < 1 or t > length:
        return "\n".join(lines + [f"step {t} is past the end of sequence {e} (length {length}): no gradient"])
    ref, outputs = derived(lt.layer, lt.params, lt.x, lt.dy, state=lt.state, train=lt.train), _outputs(lt)
    lines += _output_lines(trace, lt, example, t, j, float(outputs[e, t - 1, j]))
    lines += _through_lines(lt, ref, outputs, e, t, j, length)
    shown = list(range(t, max(t - 5, 0), -1)) + ([1] if t - 5 > 0 else [])
    for s in shown:
        if s == 1 and t - 5 > 1:
            lines.append(f"  … (steps {t - 5}…2 alike)")
        out, through = float(outputs[e, s - 1, j]), float(ref["through"][e, s - 1, j])
        magnitude = abs(out) + float(np.sum(np.abs(ref["du"][e, s - 1] * ref["w_hh"][j]))) + abs(through)
        lines.append(f"∂L/∂h_{s}[{_sym(lt)}][{e},{j}] = {_v(out)} + {_v(through)} = {_g(out + through)}"
                     + _versus(out + through, float(seen.dh[e, s - 1, j]), magnitude, _tolerance(seen.dh),
                               f"{lt.label}'s backward scan and jax"))
    norms = np.linalg.norm(seen.dh[e], axis=-1)
    listed = ", ".join(_g(v, 3) for v in norms[t - 1::-1][:8]) + (", …" if t > 8 else "")
    ratio = f"{norms[0] / norms[t - 1]:.3g}" if norms[t - 1] > 0 else "n/a (no gradient at t)"
    lines.append(f"‖∂L/∂h_s‖ of sequence {e}, s = {t}…1: {listed}; ‖∂L/∂h_1‖/‖∂L/∂h_{t}‖ = {ratio}")
    return "\n".join(lines)


def _through_lines(lt: tracing.LayerTrace, ref: dict, outputs, e: int, t: int, j: int, length: int) -> list[str]:
    """The chosen step's term from step ``t + 1``: ``Σ_k du[k]·W_hh[j,k]`` with its terms (and a
    GRU's ``z`` path), compared with the traced ``∂L/∂h_t − (from the output at t)``."""
    layer = core(lt.layer)
    if t == length:
        return [f"from step {t + 1}: 0 ({'no step after the last' if t == lt.time.dh.shape[1] else 'past the end'})"]
    name, what = _DU_TEXT[layer.spec.kind]
    du, w = ref["du"][e, t - 1], ref["w_hh"][j]
    through, product = float(ref["through"][e, t - 1, j]), float(np.dot(du, w))
    traced = float(lt.time.dh[e, t - 1, j]) - float(outputs[e, t - 1, j])
    text = f"from step {t + 1} through W_hh: Σ_k {name}_{t + 1}[k]·W_hh[{j},k] = {_sum_terms(list(zip(du, w)))}"
    if layer.spec.kind == "GRU":  # h_t also reaches h_{t+1} = (1 − z)·n + z·h_t directly
        text += f" + ∂L/∂h_{t + 1}[{j}]·z_{t + 1}[{j}] ({_v(through - product)})"
    magnitude = float(np.sum(np.abs(du * w))) + abs(through - product)
    return [text + f" = {_g(through)}" + _versus(through, traced, magnitude, _tolerance(lt.time.dh),
                                                 f"{lt.label}'s backward scan and jax"),
            f"    {name}_{t + 1} = {what.format(next=t + 1, act=layer.spec.get('activation', 'tanh'))}: by jax.vjp "
            f"of the cell's step {t + 1} along jax.grad's ∂L/∂h_{t + 1} (through a zero ε added to h_{t + 1})"]
