"""See inside one step: every layer's input, output, incoming gradient and hand-written backward.

A backprop tutorial prints ``Z1``, ``A1``, ``Z2``, ``Ŷ``, the deltas and the weight gradients
as tables. :func:`trace` keeps the same numbers for any fnnet model, one :class:`LayerTrace` per
layer in the order the forward pass runs (combinators entered: a Residual's branch layers
appear, with paths such as ``"3/1/0"``), and checks each layer's hand-written ``(dparams, dx)``
against ``jax.vjp`` of its ``apply`` at the very point the step reached (in float64), as
llm.c's test prints ``OK`` / ``NOT OK`` per tensor. :func:`explain` tells how one unit's
gradient came to be, term by term; :func:`debug_nans` names the first layer whose forward
output or backward gradient stopped being finite.

Example (the tutorials' 2-3-1 XOR network, ReLU then sigmoid):
  >>> import jax.numpy as jnp, fnnet
  >>> model = fnnet.serial(fnnet.Dense(3), fnnet.Relu, fnnet.Dense(1), fnnet.Sigmoid)
  >>> params = ({"w": jnp.array([[0.1, 0.6, 0.3], [0.1, -0.2, 0.4]]), "b": jnp.zeros(3)}, (),
  ...           {"w": jnp.array([[-0.2], [1.1], [1.3]]), "b": jnp.zeros(1)}, ())
  >>> x = jnp.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]]); y = jnp.array([[0.], [1.], [1.], [0.]])
  >>> trace = fnnet.trace(model, fnnet.losses.mse, params, x, y)
  >>> [layer.name for layer in trace.layers], all(layer.passed for layer in trace.layers)
  (['Dense(3)', 'Relu', 'Dense(1)', 'Sigmoid'], True)
  >>> trace.layers[2].y.shape, trace.layers[0].dparams["w"].shape
  ((4, 1), (2, 3))
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.gradcheck import _one_layer
from fnnet.gradcheck._numerics import describe_counts, nonfinite_counts, to_float64
from fnnet.layer import (Call, Layer, apply_with_state, child_backward, child_forward, init_with_state,
                         is_stateful, layer_name, recording, subtree)
from fnnet.losses import Loss, check_targets, loss_name

VJP_RTOL = _one_layer.RTOL
"""A layer's ``forward`` (against its ``apply``) and hand-written ``(dparams, dx)`` (against
``jax.vjp``) are ``OK`` when their largest relative difference (float64, at the traced point) is
at most this; a NaN or inf on one side where the other is finite is never ``OK``."""

ELEMENTWISE = {"Relu": "relu", "Sigmoid": "σ", "Tanh": "tanh", "LeakyRelu": "leaky_relu", "Gelu": "gelu",
               "Identity": "id"}
"""The activation kinds that act unit by unit (``y[n, j]`` depends on ``x[n, j]`` alone), and the
symbol :func:`explain` writes for each."""

HUGE = 1e15
"""Values past this that fed a layer which then produced a NaN or inf point to a step that grew
too large (lower the learning rate) rather than to the layer's own formula."""

FRACTION_HIGH = 0.5
"""Dead or saturated fractions from this on are reported (the monitor, :func:`fnnet.doctor`)."""

MIXING = {"BatchNorm", "LayerNorm", "CausalSelfAttention", "Softmax", "Conv", "Conv1D", "MaxPool", "AvgPool",
          "GlobalAvgPool"}
"""The built-in kinds whose outputs each depend on many inputs (across units, positions or examples)."""

SATURATION = 0.01
"""A sigmoid output within this of 0 or 1, or a tanh output within this of ±1, is saturated: its
derivative (``σ(1 − σ)``, ``1 − tanh²``) is below about 2 %, so little gradient passes it."""


def layer_kind(layer: Layer) -> str:
    """``"Dense"`` for ``Dense(4)``, ``"Relu"`` for ``Relu``: the layer's name up to its arguments."""
    return layer_name(layer).split("(")[0]


def activation_stats(kind: str, y, *, weights=None) -> dict:
    """The health of a layer's output ``y`` (any leading batch axes, units on the last axis), as
    JAX scalars (so it runs inside a compiled step too): ``mean``, ``std``, ``min``, ``max``,
    ``zeros`` (fraction exactly 0); for ReLU, ``dead`` (fraction of units, last axis, that are 0
    for every example of the batch); for sigmoid and tanh, ``saturated`` (fraction of outputs
    within :data:`SATURATION` of their limits). ``weights``: optional 0/1 per example, on the
    leading axis of ``y`` (a feature map's or a sequence's axes follow it); every statistic is
    then of the examples with weight 1 alone (a short batch's padding rows left out)."""
    leaves = [leaf for leaf in jax.tree.leaves(y) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    if not leaves or sum(jnp.size(leaf) for leaf in leaves) == 0:
        return {}

    def real(leaf):  # True at the entries of the examples with weight 1 (everywhere without weights)
        if weights is None:
            return jnp.ones(jnp.shape(leaf), bool)
        rows = jnp.asarray(weights) > 0
        return jnp.broadcast_to(jnp.reshape(rows, rows.shape + (1,) * (jnp.ndim(leaf) - rows.ndim)), jnp.shape(leaf))

    dtype = jnp.float64 if jnp.result_type(leaves[0]) == jnp.float64 else jnp.float32
    flat = jnp.concatenate([jnp.ravel(leaf) for leaf in leaves]).astype(dtype)
    kept = jnp.concatenate([jnp.ravel(real(leaf)) for leaf in leaves])
    count = jnp.maximum(jnp.sum(kept), 1).astype(dtype)

    def mean(values):  # over the kept entries (``where``: a padding row's inf or NaN stays out)
        return jnp.sum(jnp.where(kept, values, 0)) / count

    centre = mean(flat)
    stats = {"mean": centre, "std": jnp.sqrt(mean(jnp.square(flat - centre))),
             "min": jnp.min(jnp.where(kept, flat, jnp.inf)), "max": jnp.max(jnp.where(kept, flat, -jnp.inf)),
             "zeros": mean(flat == 0)}
    if kind == "Relu" and not isinstance(y, (tuple, list)) and jnp.ndim(y) >= 1:
        silent = (y == 0) | ~real(y)  # dead: 0 for every real example
        stats["dead"] = jnp.mean(jnp.all(jnp.reshape(silent, (-1, jnp.shape(y)[-1])), axis=0))
    if kind == "Sigmoid":
        stats["saturated"] = mean(jnp.minimum(flat, 1 - flat) < SATURATION)
    if kind == "Tanh":
        stats["saturated"] = mean(jnp.abs(flat) > 1 - SATURATION)
    return stats


def norm(tree) -> float:
    """The Euclidean norm of all the floating entries of ``tree`` together (``0.0`` for none)."""
    total = 0.0
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            total += float(np.sum(np.square(np.asarray(leaf, np.float64))))
    return math.sqrt(total)


def _shape(tree):
    """An array's shape, or a tuple of shapes for a tuple of branches."""
    if isinstance(tree, (tuple, list)):
        return tuple(_shape(t) for t in tree)
    return tuple(np.shape(tree)) if tree is not None else ()


@dataclasses.dataclass
class LayerTrace:
    """What one layer saw and did in a traced step (arrays as NumPy, in the step's dtype)."""

    index: int
    """Position in the forward walk (``trace.layers[index]``)."""
    path: str
    """Child indices through the combinators, ``"3/1/0"``; ``""`` for a model that is one layer."""
    name: str
    layer: Layer = dataclasses.field(repr=False)
    params: Any = dataclasses.field(repr=False)
    x: Any = dataclasses.field(repr=False)
    """The layer's input."""
    y: Any = dataclasses.field(repr=False)
    """Its output (what ``forward`` returned)."""
    dy: Any = dataclasses.field(repr=False)
    """The cotangent that reached it in the backward pass, ``∂loss/∂y``."""
    dx: Any = dataclasses.field(repr=False)
    """What its hand-written backward passed on, ``∂loss/∂x``."""
    dparams: Any = dataclasses.field(repr=False)
    """Its hand-written parameter gradient (``()`` for none)."""
    vjp_error: float
    """Largest relative difference of the hand-written ``(dparams, dx)`` from ``jax.vjp`` of its
    ``apply`` at ``(params, x)`` along ``dy``, in float64 (``nan`` when not checked; ``inf`` when
    one side is NaN or inf where the other is finite)."""
    stats: dict
    """:func:`activation_stats` of ``y`` as floats."""
    feeds: int | None = None
    """The index of the first layer that consumes ``y`` (``None``: the model's output, or a value
    only a combinator of your own consumes); every consumer is in :attr:`consumers`."""
    backward_order: int | None = None
    forward_error: float = float("nan")
    """Largest relative difference of ``forward``'s output (and new state) from ``apply``'s at
    the same input, in float64 (``nan`` when not checked)."""
    problem: str | None = None
    """What the check found wrong with this layer, in words (``None``: nothing, or not checked)."""
    consumers: tuple = ()
    """``(index, branch)`` of every layer that takes ``y`` (or, for a layer with several outputs,
    its ``branch``-th output, ``None`` for the only one) as its input, in forward order."""
    is_output: bool = False
    """Whether ``y`` is the model's output ``ŷ``."""
    state: Any = dataclasses.field(default=(), repr=False)
    """The state it ran with (``()`` for a plain layer)."""
    key: Any = dataclasses.field(default=None, repr=False)
    """The PRNG key it ran with (``None`` for none)."""
    train: bool = False
    """The mode it ran in."""

    @property
    def kind(self) -> str:
        return self.name.split("(")[0]

    @property
    def nonfinite(self) -> str:
        """``"dx has 3 nan; dparams has 1 inf"`` for what this layer computed that is not finite
        (its output, its ``dx``, its ``dparams``); ``""`` when all is finite."""
        parts = []
        for what, tree in (("y", self.y), ("dx", self.dx), ("dparams", self.dparams)):
            counts = nonfinite_counts(tree)
            if counts != (0, 0):
                parts.append(f"{what} has {describe_counts(*counts)}")
        return "; ".join(parts)

    @property
    def passed(self) -> bool:
        """Whether this layer's forward agrees with its apply, its hand-written backward with
        ``jax.vjp`` (``True`` when unchecked), and everything it computed is finite."""
        return self.problem is None and not self.vjp_error > VJP_RTOL and not self.forward_error > VJP_RTOL \
            and not self.nonfinite

    @property
    def has_params(self) -> bool:
        return bool(jax.tree.leaves(self.params))

    def norms(self) -> dict:
        """``‖x‖``, ``‖y‖``, ``‖dy‖``, ``‖dx‖``, ``‖params‖`` and ``‖dparams‖`` (Euclidean, all entries)."""
        return {"x": norm(self.x), "y": norm(self.y), "dy": norm(self.dy), "dx": norm(self.dx),
                "params": norm(self.params), "dparams": norm(self.dparams)}


def _checks(calls: list[Call]) -> list[_one_layer.LayerCheck]:
    """For each call, its layer's ``forward`` against its ``apply`` and its hand-written backward
    against ``jax.vjp`` of its ``apply``, at the call's own params, input, state and key, along its
    own ``dy``, in float64 (one compiled program for all of them; no backward check where no
    backward ran)."""
    with jax.enable_x64(True):
        def run(arrays):
            return [_one_layer.outputs(call.layer, params, x, dy, state=state, key=key, train=call.train)
                    for call, (params, x, dy, state, key) in zip(calls, arrays)]

        arrays = [(to_float64(call.params), to_float64(call.x), None if call.dy is None else to_float64(call.dy),
                   to_float64(call.state), call.key) for call in calls]
        values = jax.device_get(jax.jit(run)(arrays))
    return [_one_layer.compare(v, VJP_RTOL) for v in values]


def _branches(value) -> tuple:
    """A layer's input or output as a tuple of its arrays (one array: a tuple of one)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _dataflow(calls: list[Call], pred) -> tuple[list[tuple], list[bool]]:
    """Who consumes whose output, from the identity of the traced arrays (recorded with
    ``recording(distinct=True)``, so each array has one producer): ``consumers[i]`` lists
    ``(j, branch)`` for every call ``j`` whose input (its ``branch``-th input when it takes a
    tuple, ``None`` otherwise) is an array that call ``i`` produced, and ``is_output[i]`` says
    whether call ``i`` produced the model's output."""
    producer = {}
    for index, call in enumerate(calls):
        for array in _branches(call.y):
            producer.setdefault(id(array), index)
    consumers = [[] for _ in calls]
    for index, call in enumerate(calls):
        branched = isinstance(call.x, (tuple, list))
        for branch, array in enumerate(_branches(call.x)):
            made = producer.get(id(array))
            if made is not None and made < index:
                consumers[made].append((index, branch if branched else None))
    outputs = {id(array) for array in _branches(pred)}
    is_output = [any(id(array) in outputs for array in _branches(call.y)) for call in calls]
    return [tuple(c) for c in consumers], is_output


def _host(tree):
    return jax.tree.map(lambda leaf: np.asarray(leaf) if isinstance(leaf, jax.Array) else leaf, tree)


_ARRAY_FIELDS = ("params", "x", "y", "state", "key", "dy", "dparams", "dx", "new_state")


def _state_and_key(model: Layer, x, state, key):
    """The state and key a traced step runs with: ``init_with_state``'s state and ``PRNGKey(0)``
    for a model with state or randomness unless given."""
    if is_stateful(model):
        if state is None or (isinstance(state, (tuple, list)) and len(state) == 0):
            state = init_with_state(model, jax.random.PRNGKey(0), np.shape(x)[1:])[2]
        if key is None:
            key = jax.random.PRNGKey(0)
    return (() if state is None else state), key


def check_labels(model: Layer, loss: Loss, params, x, y, where: str, *, state=None, key=None) -> None:
    """Raises ValueError, as :func:`fnnet.train.fit` does, when ``y`` cannot be ``loss``'s targets
    for ``model``'s outputs on ``x`` (labels outside ``[0, classes)``, targets outside [0, 1]...):
    a loss computed for label 7 of 2 classes is no diagnosis. Only shapes are computed."""
    state, key = _state_and_key(model, x, state, key)
    out = jax.eval_shape(lambda p, s, v, k: apply_with_state(model, p, s, v, key=k)[0], params, state,
                         jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), key)
    if hasattr(out, "shape"):
        check_targets(loss, y, tuple(out.shape[1:]), where)


def _run(model: Layer, loss: Loss, params, x, y, state, key, train):
    """One recorded forward and backward pass, compiled as one program: ``(calls, loss value,
    prediction, ∂loss/∂prediction, consumers, is_output, stats)``, the calls' arrays concrete;
    ``consumers`` and ``is_output`` as :func:`_dataflow` finds them while tracing, ``stats[i]``
    the :func:`activation_stats` of call ``i``'s output."""
    state, key = _state_and_key(model, x, state, key)
    static = {}

    def step(params, x, y, state, key):
        with recording(distinct=True) as tape:
            pred, residuals, _ = child_forward(None, model, params, state, x, key=key, train=train)
            value = loss.value(pred, y)
            dpred = loss.grad(pred, y)
            child_backward(None, model, params, residuals, dpred)
        leaves = tape.leaves()
        static["calls"] = leaves
        static["consumers"], static["is_output"] = _dataflow(leaves, pred)
        stats = [activation_stats(layer_kind(call.layer), call.y) for call in leaves]
        return value, pred, dpred, [tuple(getattr(call, f) for f in _ARRAY_FIELDS) for call in leaves], stats

    value, pred, dpred, arrays, stats = jax.jit(step)(params, x, y, state, key)  # a new function: traced afresh
    calls = [dataclasses.replace(call, **dict(zip(_ARRAY_FIELDS, _host(values))))
             for call, values in zip(static["calls"], arrays)]
    stats = [{k: float(v) for k, v in layer_stats.items()} for layer_stats in jax.device_get(stats)]
    return calls, value, pred, dpred, static["consumers"], static["is_output"], stats


def trace(model: Layer, loss: Loss, params, x, y, *, state=None, key=None, train: bool = False,
          check: bool = True) -> "Trace":
    """Runs one forward and one hand-written backward pass of ``model`` on ``(x, y)`` and keeps,
    for every layer, what it saw and did (a :class:`Trace`).

    Args:
      model, loss, params: as for :func:`fnnet.value_and_grad`.
      x, y: a (small) batch: every layer's input and output is kept. Targets are checked as
        :func:`fnnet.train.fit` checks them (a label outside the model's classes is refused).
      state, key, train: for a model with state or randomness (BatchNorm, Dropout): its state
        (default: ``init_with_state``'s), the PRNG key (default ``PRNGKey(0)``) and the mode;
        ``train=False`` (evaluation) by default.
      check: compare each layer's ``forward`` with its ``apply`` and its backward with
        ``jax.vjp`` (float64); ``False`` skips both.

    A layer is ``OK`` when both checks pass and everything it computed is finite; a NaN or inf
    is never ``OK``. The step is compiled once, with every layer's values as outputs, and so is
    the float64 check of all layers: trace a few examples, not an epoch.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_labels(model, loss, params, x, y, "trace", state=state, key=key)
    calls, value, pred, dpred, consumers, is_output, stats = _run(model, loss, params, x, y, state, key, train)
    checks = _checks(calls) if check else [_one_layer.LayerCheck(float("nan"), float("nan"), None)] * len(calls)
    layers = [LayerTrace(index=i, path="/".join(map(str, call.path)), name=layer_name(call.layer), layer=call.layer,
                         params=call.params, x=call.x, y=call.y, dy=call.dy, dx=call.dx, dparams=call.dparams,
                         vjp_error=checks[i].vjp_error, stats=stats[i],
                         feeds=consumers[i][0][0] if consumers[i] else None, backward_order=call.backward_order,
                         forward_error=checks[i].forward_error, problem=checks[i].problem,
                         consumers=consumers[i], is_output=is_output[i], state=call.state, key=call.key,
                         train=call.train)
              for i, call in enumerate(calls)]
    return Trace(loss=float(value), loss_name=loss_name(loss), layers=layers, x=np.asarray(x), y=np.asarray(y),
                 pred=np.asarray(pred), dpred=np.asarray(dpred), train=train)


@dataclasses.dataclass
class Trace:
    """One step of a model seen from inside: ``print(trace)`` gives one row per layer,
    :meth:`tables` the tutorials' matrices, :meth:`to_dict` a JSON-able record."""

    loss: float
    loss_name: str
    layers: list
    x: Any = dataclasses.field(repr=False)
    y: Any = dataclasses.field(repr=False)
    pred: Any = dataclasses.field(repr=False)
    """The model's output ``ŷ``."""
    dpred: Any = dataclasses.field(repr=False)
    """``∂loss/∂ŷ``: where the backward pass starts (the loss's hand-written ``grad``)."""
    train: bool = False

    @property
    def passed(self) -> bool:
        """Whether every layer passed (:attr:`LayerTrace.passed`: forward = apply, backward =
        ``jax.vjp``, everything finite)."""
        return all(layer.passed for layer in self.layers)

    def layer(self, which) -> LayerTrace:
        """A layer by its index (``3``, negative counts from the end) or path (``"3/1/0"``)."""
        if isinstance(which, str) and not which.lstrip("-").isdigit():
            for layer in self.layers:
                if layer.path == which:
                    return layer
            raise ValueError(f"trace: no layer at path {which!r}; paths: {[lt.path for lt in self.layers]}")
        index = int(which)
        if not -len(self.layers) <= index < len(self.layers):
            raise ValueError(f"trace: layer {index} is out of range: this model has {len(self.layers)} layers "
                             f"(0..{len(self.layers) - 1})")
        return self.layers[index]

    def rows(self) -> list[dict]:
        """One dict per layer: what ``print(trace)`` shows."""
        out = []
        for lt in self.layers:
            norms = lt.norms()
            out.append({"index": lt.index, "path": lt.path, "name": lt.name, "in_shape": _shape(lt.x),
                        "out_shape": _shape(lt.y), **lt.stats, "dy_norm": norms["dy"],
                        "dparams_norm": norms["dparams"] if lt.has_params else None,
                        "forward_error": lt.forward_error, "vjp_error": lt.vjp_error,
                        "forward": "OK" if not lt.forward_error > VJP_RTOL else "NOT OK",
                        "vjp": "OK" if not lt.vjp_error > VJP_RTOL and lt.problem is None else "NOT OK",
                        "nonfinite": lt.nonfinite, "problem": lt.problem, "passed": lt.passed})
        return out

    def __str__(self) -> str:
        header = ("#", "path", "layer", "input", "output", "mean", "std", "zeros", "dead/sat", "‖dy‖",
                  "‖dparams‖", "forward", "vjp check")
        lines = []
        for row in self.rows():
            special = row.get("dead", row.get("saturated"))
            forward = "not checked" if math.isnan(row["forward_error"]) else \
                f"{row['forward']} ({row['forward_error']:.1e})"
            check = "not checked" if math.isnan(row["vjp_error"]) else f"{row['vjp']} ({row['vjp_error']:.1e})"
            if row["nonfinite"]:
                check += f"; NOT OK: {row['nonfinite']}"
            lines.append((str(row["index"]), row["path"] or "-", row["name"], _fmt_shape(row["in_shape"]),
                          _fmt_shape(row["out_shape"]), _num(row.get("mean")), _num(row.get("std")),
                          _pct(row.get("zeros")), _pct(special), _num(row["dy_norm"]),
                          _num(row["dparams_norm"]), forward, check))
        widths = [max(len(c) for c in column) for column in zip(header, *lines)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        table = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines]
        failed = [lt for lt in self.layers if not lt.passed]
        checked = any(not math.isnan(lt.vjp_error) for lt in self.layers)
        verdict = ("every backward agrees with jax.vjp and every forward with its apply" if checked else
                   "not checked") if not failed else \
            "NOT OK: " + "; ".join(f"layer {lt.index} ({lt.name}): {lt.problem or lt.nonfinite}" for lt in failed)
        if failed and not any(lt.problem for lt in failed):
            verdict += " (every layer agrees with jax.vjp on the values it got: fnnet.debug_nans names where " \
                       "the first NaN or inf came from)"
        head = (f"trace: {self.loss_name} loss {self.loss:.6g} on {len(self.x)} examples "
                f"({'train' if self.train else 'eval'} mode); {verdict}")
        return "\n".join([head] + [line.rstrip() for line in table])

    def to_dict(self, arrays: bool = False) -> dict:
        """A JSON-able record: the loss and, per layer, its rows' fields (shapes, statistics,
        norms, the vjp check); with ``arrays=True`` also every array as nested lists."""
        out = {"loss": self.loss, "loss_name": self.loss_name, "examples": int(len(self.x)), "train": self.train,
               "layers": []}
        for row, lt in zip(self.rows(), self.layers):
            row = dict(row, in_shape=_listify(row["in_shape"]), out_shape=_listify(row["out_shape"]),
                       vjp_error=_json_number(row["vjp_error"]), forward_error=_json_number(row["forward_error"]))
            if arrays:
                for field in ("x", "y", "dy", "dx", "params", "dparams"):
                    row[field] = _listify(getattr(lt, field))
            out["layers"].append(row)
        json.dumps(out)  # fails here, not in the caller's json.dump, if something is not JSON-able
        return out

    def tables(self, max_units: int = 16, layer=None) -> str:
        """The tutorials' tables: per layer its input, weights, output (``z`` of a Dense layer,
        the activation of an activation), the delta ``δ = ∂L/∂z`` and ``dW``, ``db``, ``dx``;
        then the loss and ``∂L/∂ŷ``. Rows and columns beyond ``max_units`` are elided (``…``);
        ``layer`` (an index or path) prints one layer only."""
        chosen = self.layers if layer is None else [self.layer(layer)]
        blocks = [_layer_tables(lt, max_units) for lt in chosen]
        if layer is None:
            blocks.append("\n".join([f"loss: {self.loss_name} = {self.loss:.8g}",
                                     _matrix("ŷ (the model's output)", self.pred, max_units),
                                     _matrix("y (the targets)", self.y, max_units),
                                     _matrix("∂L/∂ŷ (the loss's grad: where backward starts)", self.dpred,
                                             max_units)]))
        return "\n\n".join(blocks)


def _json_number(value: float):
    """``None`` for not checked (NaN), ``"inf"`` for a non-finite disagreement, else the float."""
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else "inf"


def _listify(tree):
    if isinstance(tree, dict):
        return {str(k): _listify(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return [_listify(v) for v in tree]
    if isinstance(tree, np.ndarray) or isinstance(tree, jax.Array):
        array = np.asarray(tree)
        if array.dtype == jax.dtypes.float0:
            return None
        return array.tolist()
    if tree is None or isinstance(tree, (int, float, str, bool)):
        return tree
    return str(tree)


def _fmt_shape(shape) -> str:
    if shape and isinstance(shape[0], tuple):
        return " + ".join(_fmt_shape(s) for s in shape)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _num(value) -> str:
    return "" if value is None else f"{value:.3g}"


def _pct(value) -> str:
    return "" if value is None else f"{value:.0%}"


def _matrix(label: str, array, max_units: int) -> str:
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
    lines = [f"{label} {_fmt_shape(shape)}:" + ("" if array.ndim <= 2 and shape == array.shape else
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


def _layer_tables(lt: LayerTrace, max_units: int) -> str:
    """One layer's tables, labelled as the tutorials label them."""
    head = f"== layer {lt.index}" + (f" (path {lt.path})" if lt.path and lt.path != str(lt.index) else "") + \
        f": {lt.name} =="
    parts = [head]
    kind = lt.kind
    if kind == "Dense" and isinstance(lt.params, dict):
        parts += [_matrix("x (its input)", lt.x, max_units), _matrix("W", lt.params["w"], max_units)]
        if "b" in lt.params:
            parts.append(_matrix("b", lt.params["b"], max_units))
        parts += [_matrix("z = x·W + b", lt.y, max_units), "backward:",
                  _matrix("δ = ∂L/∂z (the delta that reached it)", lt.dy, max_units),
                  _matrix("dW = xᵀ·δ", lt.dparams["w"], max_units)]
        if "b" in lt.dparams:
            parts.append(_matrix("db = Σₙ δ", lt.dparams["b"], max_units))
        parts.append(_matrix("dx = δ·Wᵀ (passed back)", lt.dx, max_units))
    elif kind in ELEMENTWISE:
        f = ELEMENTWISE[kind]
        parts += [_matrix("z (its input)", lt.x, max_units), _matrix(f"a = {f}(z)", lt.y, max_units), "backward:",
                  _matrix("∂L/∂a (reached it)", lt.dy, max_units),
                  _matrix(f"δ = ∂L/∂z = ∂L/∂a ⊙ {f}'(z) (passed back)", lt.dx, max_units)]
    else:
        parts.append(_tree_matrices("x (its input)", lt.x, max_units))
        for path, leaf in jax.tree_util.tree_flatten_with_path(lt.params)[0]:
            parts.append(_matrix(f"params{jax.tree_util.keystr(path)}", leaf, max_units))
        parts += [_tree_matrices("y (its output)", lt.y, max_units), "backward:",
                  _tree_matrices("dy = ∂L/∂y (reached it)", lt.dy, max_units)]
        for path, leaf in jax.tree_util.tree_flatten_with_path(lt.dparams)[0]:
            parts.append(_matrix(f"dparams{jax.tree_util.keystr(path)}", leaf, max_units))
        parts.append(_tree_matrices("dx = ∂L/∂x (passed back)", lt.dx, max_units))
    return "\n".join(parts)


def _tree_matrices(label, tree, max_units):
    if isinstance(tree, (tuple, list)):
        return "\n".join(_matrix(f"{label}[{i}]", leaf, max_units) for i, leaf in enumerate(tree))
    return _matrix(label, tree, max_units)


# -- explain: the chain rule for one unit ------------------------------------------------------------

_MAX_TERMS = 8


def _rows(array) -> np.ndarray:
    """``array`` as (examples, units): the leading axes flattened into rows."""
    array = np.asarray(array, np.float64)
    return array.reshape(-1, array.shape[-1]) if array.ndim >= 1 else array.reshape(1, 1)


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


def _row_label(lt: LayerTrace, n: int) -> str:
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


def _derivative(lt: LayerTrace, z: float) -> float:
    """The activation's derivative at ``z`` (of its ``apply``, float64)."""
    with jax.enable_x64(True):
        return float(jax.grad(lambda v: jnp.sum(lt.layer.apply((), v)))(jnp.asarray(z, jnp.float64)))


def _derivative_text(kind: str, z: float, d: float, a: float) -> str:
    if kind == "Sigmoid":
        return f"σ'(z={_g(z, 4)}) = σ(1−σ) = {_v(a)}·(1−{_v(a)}) = {_g(d, 4)}"
    if kind == "Tanh":
        return f"tanh'(z={_g(z, 4)}) = 1−tanh² = 1−{_v(a)}² = {_g(d, 4)}"
    return f"{ELEMENTWISE[kind]}'(z={_g(z, 4)}) = {_g(d, 4)}"


def _consumer_terms(trace: Trace, lt: LayerTrace, n: int, j: int) -> list[tuple[str, float, float]]:
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
        where = f"layer {index} ({consumer.name}" + (f", path {consumer.path}" if "/" in consumer.path else "") + ")"
        if consumer.kind == "FanOut" and branch is None:
            terms += [(f"via {where}: {text}", value, size) for text, value, size in
                      _consumer_terms(trace, consumer, n, j)]
            continue
        if consumer.kind == "Dense" and isinstance(consumer.params, dict) and branch is None:
            delta, weights = _rows(consumer.dy)[n], np.asarray(consumer.params["w"], np.float64)[j]
            value = float(np.dot(delta, weights))
            terms.append((f"{where}: " * (len(lt.consumers) + lt.is_output > 1)
                          + f"Σ_k δ[{index}][{n},k]·W[{index}][{j},k] = "
                          f"{_sum_terms(list(zip(delta, weights)))} = {_g(value)}", value,
                          float(np.sum(np.abs(delta * weights)))))
            continue
        dx = _reference_dx(consumer)
        value = float(_rows(dx[branch] if branch is not None else dx)[n, j])
        terms.append((f"{where}: its dx{f'[{branch}]' if branch is not None else ''} by jax.vjp of its apply = "
                      f"{_g(value)}", value, abs(value)))
    return terms


def _reference_dx(lt: LayerTrace):
    """``∂L/∂x`` of a traced layer from ``jax.vjp`` of its ``apply`` (at its params, input, state
    and key) along its traced ``dy``, in float64: the chain rule's step through that layer,
    independent of its hand-written backward."""
    with jax.enable_x64(True):
        params, x, dy = to_float64(lt.params), to_float64(lt.x), to_float64(lt.dy)
        state = to_float64(lt.state)

        def apply(inputs):
            return apply_with_state(lt.layer, params, state, inputs, key=lt.key, train=lt.train)[0]

        return jax.device_get(jax.vjp(apply, x)[1](dy)[0])


def _incoming(trace: Trace, lt: LayerTrace, n: int, j: int) -> tuple[list[str], float]:
    """How ``∂L/∂y[n, j]`` of layer ``lt`` came to be: lines of explanation, each consumer's term,
    and the value they add up to (said to differ from the traced one when it does)."""
    traced = float(_rows(lt.dy)[n, j])
    name = f"∂L/∂y[{lt.index}][{n},{j}]"
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


def explain(trace: Trace, layer, unit: int, example: int = 0) -> str:
    """How one unit's gradient came to be in ``trace``, term by term, with its numbers.

    ``layer`` is an index or path into ``trace.layers``, ``unit`` an index on the last axis of its
    output, ``example`` a row of the batch (leading axes flattened: for a feature map or a
    sequence, a row is one position of one example). For a ``Dense`` layer (and the activation
    after it) the story is the tutorials' chain rule::

        δ[0][0,2] = relu'(z=0.41) = 1 × Σ_k δ[2][0,k]·W[2][2,k] = 1 × (0.31·0.12 + (−0.05)·0.7 + …) = 0.0372
        dW[0][i,2] = Σ_n x[n,i]·δ[0][n,2] …    db[0][2] = Σ_n δ[0][n,2] = …

    where ``[k]`` is a layer's index in the trace. A layer whose output goes to several places (a
    fan-out, a residual connection) gets one term per consumer, summed. Every number explain
    derives is compared with the traced one; where they differ the text says so (``≠ traced …``).
    For a layer whose units mix (attention, BatchNorm, LayerNorm, Softmax, convolutions) it says
    so and shows the layer's formula from its docstring, with the traced norms.
    """
    lt = trace.layer(layer)
    out = _rows(lt.y)
    if not 0 <= unit < out.shape[1]:
        raise ValueError(f"explain: unit {unit} is out of range for layer {lt.index} ({lt.name}), whose "
                         f"output has {out.shape[1]} units on its last axis (0..{out.shape[1] - 1})")
    if not 0 <= example < out.shape[0]:
        raise ValueError(f"explain: example {example} is out of range: the trace holds {out.shape[0]} rows "
                         f"(0..{out.shape[0] - 1})")
    n, j = example, unit
    if lt.kind == "Dense" and isinstance(lt.params, dict):
        return _explain_dense(trace, lt, n, j)
    if lt.kind in ELEMENTWISE:
        lines = [f"layer {lt.index} ({lt.name}): a[{lt.index}] = {ELEMENTWISE[lt.kind]}(z), unit by unit; "
                 f"unit {j}, {_row_label(lt, n)}"]
        lines += _explain_activation(trace, lt, n, j, f"dx[{lt.index}]")
        return "\n".join(lines)
    return _explain_mixing(trace, lt, n, j)


def _explain_activation(trace, act: LayerTrace, n, j, target: str) -> list[str]:
    z, a = float(_rows(act.x)[n, j]), float(_rows(act.y)[n, j])
    d = _derivative(act, z)
    incoming, upstream = _incoming(trace, act, n, j)
    value = float(_rows(act.dx)[n, j])
    derived = d * upstream
    return incoming + [f"{target}[{n},{j}] = {_derivative_text(act.kind, z, d, a)} × {_v(upstream)} = "
                       f"{_g(derived)}" + _versus(derived, value, abs(derived), _tolerance(act.dx, act.y),
                                                  f"layer {act.index} ({act.name})'s backward and its derivative")]


def _explain_dense(trace: Trace, lt: LayerTrace, n: int, j: int) -> str:
    x, w = _rows(lt.x), np.asarray(lt.params["w"], np.float64)
    b = np.asarray(lt.params["b"], np.float64) if "b" in lt.params else None
    z = float(_rows(lt.y)[n, j])
    i_count = x.shape[1]
    tolerance = _tolerance(lt.x, lt.y, lt.dy, lt.params, lt.dparams)
    derived_z = float(np.dot(x[n], w[:, j]) + (b[j] if b is not None else 0.0))
    plus_b = f" + b[{lt.index}]" if b is not None else ""
    lines = [f"layer {lt.index} ({lt.name}): z[{lt.index}] = x·W[{lt.index}]{plus_b}; unit {j}, {_row_label(lt, n)}",
             f"forward:  z[{lt.index}][{n},{j}] = Σ_i x[{n},i]·W[{lt.index}][i,{j}]"
             + (f" + b[{lt.index}][{j}]" if b is not None else "") + " = "
             + _sum_terms(list(zip(x[n], w[:, j]))) + (f" + {_v(b[j])}" if b is not None else "") + f" = {_g(derived_z)}"
             + ("" if _agrees(derived_z, z, float(np.sum(np.abs(x[n] * w[:, j]))), tolerance) else
                f"   ≠ traced {_g(z)}: this layer's forward disagrees"),
             "backward:"]
    delta = _rows(lt.dy)[:, j]
    act = trace.layers[lt.feeds] if lt.feeds is not None and len(lt.consumers) == 1 and not lt.is_output else None
    if act is not None and act.kind in ELEMENTWISE and act.kind != "Identity":
        lines += _explain_activation(trace, act, n, j, f"δ[{lt.index}]")
    else:
        incoming, _ = _incoming(trace, lt, n, j)
        lines += [line.replace(f"∂L/∂y[{lt.index}]", f"δ[{lt.index}]") for line in incoming]
    shown = range(min(i_count, 4))
    dparams_w = np.asarray(lt.dparams["w"], np.float64) if isinstance(lt.dparams, dict) and "w" in lt.dparams \
        else None
    for i in shown:
        pairs = list(zip(x[:, i], delta))
        derived = float(np.dot(x[:, i], delta))
        check = "" if dparams_w is None else _versus(derived, dparams_w[i, j], float(np.sum(np.abs(x[:, i] * delta))),
                                                     tolerance, f"layer {lt.index} ({lt.name})'s backward (dW)")
        lines.append(f"dW[{lt.index}][{i},{j}] = Σ_n x[n,{i}]·δ[{lt.index}][n,{j}] = {_sum_terms(pairs)} = "
                     f"{_g(derived)}{check}")
    if i_count > len(shown):
        lines.append(f"… and so on for the {i_count - len(shown)} other inputs i < {i_count}")
    if b is not None:
        derived = float(np.sum(delta))
        traced_db = np.asarray(lt.dparams["b"], np.float64)[j] if isinstance(lt.dparams, dict) and \
            "b" in lt.dparams else None
        check = "" if traced_db is None else _versus(derived, traced_db, float(np.sum(np.abs(delta))), tolerance,
                                                     f"layer {lt.index} ({lt.name})'s backward (db)")
        lines.append(f"db[{lt.index}][{j}] = Σ_n δ[{lt.index}][n,{j}] = "
                     + "(" + " + ".join(_v(v) for v in delta[:_MAX_TERMS])
                     + (f" + … ({len(delta) - _MAX_TERMS} more)" if len(delta) > _MAX_TERMS else "") + ")"
                     + f" = {_g(derived)}{check}")
    return "\n".join(lines)


def _doc_formula(layer: Layer) -> str:
    doc = type(layer).__doc__ or ""
    if type(layer) is Layer or not doc:
        return "(no docstring)"
    return inspect.cleandoc(doc.split("Example")[0])


def _explain_mixing(trace: Trace, lt: LayerTrace, n: int, j: int) -> str:
    norms = lt.norms()
    why = (f"each output of this layer depends on many of its inputs (across units, positions or examples), "
           f"so ∂L/∂x[{n},{j}] is a sum over all of them" if lt.kind in MIXING else
           "it is neither a Dense layer nor a unit-by-unit activation")
    lines = [f"layer {lt.index} ({lt.name}): no per-unit chain rule here: {why}. Its formula:", "",
             "    " + _doc_formula(lt.layer).replace("\n", "\n    "), "",
             f"traced: ‖x‖ = {norms['x']:.4g}, ‖y‖ = {norms['y']:.4g}, ‖dy‖ = {norms['dy']:.4g}, "
             f"‖dx‖ = {norms['dx']:.4g}" + (f", ‖params‖ = {norms['params']:.4g}, ‖dparams‖ = "
                                           f"{norms['dparams']:.4g}" if lt.has_params else ""),
             f"unit {j}, {_row_label(lt, n)}: y = {_g(_rows(lt.y)[n, j])}, ∂L/∂y = {_g(_rows(lt.dy)[n, j])}"]
    if isinstance(lt.dparams, dict) and "b" in lt.dparams and np.ndim(lt.dparams["b"]) == 1:
        delta = _rows(lt.dy)[:, j]
        lines.append(f"db[{lt.index}][{j}] = Σ over every example and position of ∂L/∂y[..., {j}] = "
                     f"{_g(np.sum(delta))}")
    lines.append(f"forward vs apply: {'OK' if not lt.forward_error > VJP_RTOL else 'NOT OK'} ({lt.forward_error:.1e}); "
                 f"backward vs jax.vjp: {'OK' if lt.passed else 'NOT OK'} ({lt.vjp_error:.1e})"
                 + (f": {lt.problem or lt.nonfinite}" if not lt.passed else ""))
    return "\n".join(lines)


# -- where a NaN came from ---------------------------------------------------------------------------

@dataclasses.dataclass
class NonFinite:
    """The first place a step stopped being finite: ``where`` is ``"params"`` (they already were),
    ``"forward"``, ``"loss"`` or ``"backward"``; ``layer_index`` / ``layer_name`` / ``path`` name
    the layer (``None`` for the loss)."""

    where: str
    layer_index: int | None
    layer_name: str | None
    path: str | None
    message: str
    advice: str = ""
    """What to try: lower the learning rate when the values that fed the layer had grown huge,
    check the layer's own functions when they were moderate."""

    def __str__(self) -> str:
        return self.message


def _count(tree) -> tuple[int, int, list]:
    """(nan count, inf count, key paths of the non-finite leaves) of the floating leaves of ``tree``."""
    nans = infs = 0
    where = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if leaf is None or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        array = np.asarray(leaf)
        leaf_nans, leaf_infs = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if leaf_nans or leaf_infs:
            where.append((jax.tree_util.keystr(path), leaf_nans, leaf_infs))
        nans, infs = nans + leaf_nans, infs + leaf_infs
    return nans, infs, where


def _bad(counts, prefix: str) -> str:
    return "; ".join(f"{prefix}{key} has {describe_counts(n, i)}" for key, n, i in counts[2])


def _largest(tree) -> float:
    """The largest finite magnitude in ``tree`` (``0.0`` for none)."""
    best = 0.0
    for leaf in jax.tree.leaves(tree):
        if leaf is None or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        array = np.abs(np.asarray(leaf, np.float64))
        array = array[np.isfinite(array)]
        if array.size:
            best = max(best, float(array.max()))
    return best


def debug_nans(model: Layer, loss: Loss, params, x, y, *, state=None, key=None, train: bool = True,
               updated_params=None) -> NonFinite | None:
    """Runs one forward and hand-written backward pass layer by layer (eagerly) and names the first
    layer whose params, forward output, or backward ``dx`` / ``dparams`` are not finite, with what
    fed it; ``None`` when everything is finite.

    The walk follows the computation: the params first, then the forward pass in order, the loss,
    the backward pass from the last layer to the first and, given ``updated_params`` (the params
    after the optimizer's step), the update. E.g.
    ``layer 3 (Dense(10)) backward: dparams['w'] has 12 inf (its dy reached 3.1e+38, its input 2.1)``.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(2), fnnet.Relu, fnnet.Dense(1))
      >>> first, relu, last = model.init(jax.random.PRNGKey(0), (3,))[1]
      >>> last = dict(last, w=last["w"].at[0, 0].set(jnp.inf))   # an update made one weight infinite
      >>> print(fnnet.debug_nans(model, fnnet.losses.mse, (first, relu, last), jnp.ones((4, 3)), jnp.zeros((4, 1))))
      layer 2 (Dense(1)) params: its params are not finite before the step: params['w'] has 1 inf (an earlier update made them so)
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_labels(model, loss, params, x, y, "debug_nans", state=state, key=key)
    leaves, value, pred, dpred, *_ = _run(model, loss, params, x, y, state, key, train)

    def found(where, index, text):
        call = leaves[index] if index is not None else None
        name = layer_name(call.layer) if call is not None else None
        path = "/".join(map(str, call.path)) if call is not None else None
        label = f"layer {index} ({name}) {where}: " if call is not None else f"{where}: "
        fed = [call.x, call.params] + ([call.dy] if where == "backward" else []) if call is not None else [pred]
        if where in ("params", "update") or max(_largest(tree) for tree in fed) > HUGE:
            advice = "lower the learning rate"
        elif call is not None:
            advice = (f"its {where} made them from finite, moderate values: check the layer with "
                      f"fnnet.gradcheck.check_layer (a log of 0, a division by 0?)")
        else:
            advice = "the loss made them from finite, moderate predictions: check its targets"
        return NonFinite(where, index, name, path, label + text, advice)

    for index, call in enumerate(leaves):
        counts = _count(call.params)
        if counts[0] or counts[1]:
            return found("params", index, f"its params are not finite before the step: {_bad(counts, 'params')} "
                                          f"(an earlier update made them so)")
    for index, call in enumerate(leaves):
        counts = _count(call.y)
        if counts[0] or counts[1]:
            return found("forward", index, f"its output has {describe_counts(*counts[:2])} (its input's largest "
                                           f"magnitude {_largest(call.x):.3g}, its params' {_largest(call.params):.3g})")
    if not np.isfinite(float(value)):
        return found("loss", None, f"the {loss_name(loss)} loss is {float(value)} on finite predictions "
                                   f"(largest |ŷ| {_largest(pred):.3g})")
    counts = _count(dpred)
    if counts[0] or counts[1]:
        return found("loss", None, f"the {loss_name(loss)} loss's grad has {describe_counts(*counts[:2])}")
    for index, call in sorted(enumerate(leaves), key=lambda item: (item[1].backward_order is None,
                                                                   item[1].backward_order or 0)):
        if call.backward_order is None:
            continue
        for what, tree in (("dparams", call.dparams), ("dx", call.dx)):
            counts = _count(tree)
            if counts[0] or counts[1]:
                text = _bad(counts, "dparams") if what == "dparams" else f"dx has {describe_counts(*counts[:2])}"
                return found("backward", index, f"{text} (its dy reached {_largest(call.dy):.3g}, its input "
                                                f"{_largest(call.x):.3g})")
    if updated_params is not None:
        for index, call in enumerate(leaves):
            new = subtree(updated_params, call.path)
            counts = _count(new) if new is not None else (0, 0, [])
            if counts[0] or counts[1]:
                return found("update", index, f"the optimizer's update made {_bad(counts, 'params')} (its gradient "
                                              f"was finite, largest |dparams| {_largest(call.dparams):.3g}; its "
                                              f"params' largest |w| {_largest(call.params):.3g})")
    return None
