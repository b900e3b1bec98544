"""See inside one step: every layer's input, output, incoming gradient and hand-written backward.

A backprop tutorial prints ``Z1``, ``A1``, ``Z2``, ``Ŷ``, the deltas and the weight gradients
as tables. :func:`trace` keeps the same numbers for any fnnet model, one :class:`LayerTrace` per
layer in the order the forward pass runs (combinators entered: a Residual's branch layers
appear, with paths such as ``"3/1/0"``), and checks each layer's ``forward`` against its
``apply`` and its hand-written ``(dparams, dx)`` against ``jax.vjp`` of its ``apply`` at the very
point the step reached (in float64), as llm.c's test prints ``OK`` / ``NOT OK`` per tensor.
:func:`fnnet.explain` (:mod:`fnnet.explanation`) tells how one unit's gradient came to be, term
by term; :func:`fnnet.debug_nans` (:mod:`fnnet.nans`) names the first layer whose forward output
or backward gradient stopped being finite; :mod:`fnnet.health` holds the statistics.

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
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.gradcheck import _one_layer
from fnnet.gradcheck._numerics import describe_counts, nonfinite_counts, to_float64
from fnnet.health import activation_stats, norm
from fnnet.host import on_device
from fnnet.layer import (Layer, apply_with_state, init_with_state, is_stateful, layer_kind, layer_name,
                         path_text)
from fnnet.layer_tables import layer_tables, matrix, shape_text, tree_shape
from fnnet.tape import Call, child_backward, child_forward, recording
from fnnet.losses import Loss, check_targets, loss_name
from fnnet.pages import trace_page
from fnnet.plots import plot_through_time
from fnnet.through_time import ThroughTime, is_recurrent, through_time

VJP_RTOL = _one_layer.RTOL
"""A layer's ``forward`` (against its ``apply``) and hand-written ``(dparams, dx)`` (against
``jax.vjp``) are ``OK`` when their largest relative difference (float64, at the traced point) is
at most this; a NaN or inf on one side where the other is finite is never ``OK``."""


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
    time: ThroughTime | None = dataclasses.field(default=None, repr=False)
    """An RNN, LSTM or GRU layer's ``∂L/∂h_t`` of every step, checked (:mod:`fnnet.through_time`)."""

    @property
    def through_time(self) -> np.ndarray | None:
        """``(T,)``: ``‖∂L/∂h_t‖`` at ``t = 1 … T`` (index ``t − 1``) over the traced sequences and
        units (per sequence: ``np.linalg.norm(lt.time.dh, axis=-1)``); ``None`` if not recurrent."""
        return None if self.time is None else self.time.norms()

    @property
    def label(self) -> str:
        """``"layer 3/1/0 (Dense(4))"``: the layer as every message names it
        (:func:`fnnet.layer.layer_label`)."""
        return f"layer {self.path or '0'} ({self.name})"

    @property
    def kind(self) -> str:
        """:func:`fnnet.layer.layer_kind` of the layer (``"Dense"``, ``"Relu"``...)."""
        return layer_kind(self.layer)

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


def record_step(model: Layer, loss: Loss, params, x, y, state, key, train):
    """One recorded forward and backward pass, compiled as one program (what :func:`trace` and
    :func:`fnnet.debug_nans` read): ``(calls, loss value,
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
    x, y = on_device(x), on_device(y)
    check_labels(model, loss, params, x, y, "trace", state=state, key=key)
    calls, value, pred, dpred, consumers, is_output, stats = record_step(model, loss, params, x, y, state, key, train)
    checks = _checks(calls) if check else [_one_layer.LayerCheck(float("nan"), float("nan"), None)] * len(calls)
    times = [through_time(call.layer, call.params, call.x, call.dy, state=call.state, train=call.train, check=check)
             if is_recurrent(call.layer) and call.dy is not None else None for call in calls]
    layers = [LayerTrace(index=i, path=path_text(call.path), name=layer_name(call.layer), layer=call.layer,
                         params=call.params, x=call.x, y=call.y, dy=call.dy, dx=call.dx, dparams=call.dparams,
                         vjp_error=checks[i].vjp_error, stats=stats[i],
                         feeds=consumers[i][0][0] if consumers[i] else None, backward_order=call.backward_order,
                         forward_error=checks[i].forward_error,
                         problem=checks[i].problem or (times[i].problem if times[i] else None),
                         consumers=consumers[i], is_output=is_output[i], state=call.state, key=call.key,
                         train=call.train, time=times[i])
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
            out.append({"index": lt.index, "path": lt.path, "name": lt.name, "in_shape": tree_shape(lt.x),
                        "out_shape": tree_shape(lt.y), **lt.stats, "dy_norm": norms["dy"],
                        "dparams_norm": norms["dparams"] if lt.has_params else None,
                        "forward_error": lt.forward_error, "vjp_error": lt.vjp_error,
                        "forward": "OK" if not lt.forward_error > VJP_RTOL else "NOT OK",
                        "vjp": "OK" if not lt.vjp_error > VJP_RTOL and lt.problem is None else "NOT OK",
                        "nonfinite": lt.nonfinite, "problem": lt.problem, "passed": lt.passed,
                        "through_time_ratio": None if lt.time is None else lt.time.ratio(),
                        "through_time": None if lt.time is None else lt.time.norms().tolist()})
        return out

    def __str__(self) -> str:
        header = ("#", "path", "layer", "input", "output", "mean", "std", "zeros", "dead/sat", "‖dy‖",
                  "‖dparams‖", "forward", "vjp check")
        recurrent = any(lt.time is not None for lt in self.layers)
        header += ("‖∂L/∂h_1‖/‖∂L/∂h_T‖",) if recurrent else ()
        lines = []
        for row in self.rows():
            special = row.get("dead", row.get("saturated"))
            forward = "not checked" if math.isnan(row["forward_error"]) else \
                f"{row['forward']} ({row['forward_error']:.1e})"
            check = "not checked" if math.isnan(row["vjp_error"]) else f"{row['vjp']} ({row['vjp_error']:.1e})"
            if row["nonfinite"]:
                check += f"; NOT OK: {row['nonfinite']}"
            lines.append((str(row["index"]), row["path"] or "-", row["name"], shape_text(row["in_shape"]),
                          shape_text(row["out_shape"]), _num(row.get("mean")), _num(row.get("std")),
                          _num(row.get("zeros"), ".0%"), _num(special, ".0%"), _num(row["dy_norm"]),
                          _num(row["dparams_norm"]), forward, check)
                         + ((_num(row["through_time_ratio"]),) if recurrent else ()))
        widths = [max(len(c) for c in column) for column in zip(header, *lines)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        table = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines]
        failed = [lt for lt in self.layers if not lt.passed]
        checked = any(not math.isnan(lt.vjp_error) for lt in self.layers)
        verdict = ("every backward agrees with jax.vjp and every forward with its apply" if checked else
                   "not checked") if not failed else \
            "NOT OK: " + "; ".join(f"{lt.label}: {lt.problem or lt.nonfinite}" for lt in failed)
        if failed and not any(lt.problem for lt in failed):
            verdict += " (every layer agrees with jax.vjp on the values it got: fnnet.debug_nans names where " \
                       "the first NaN or inf came from)"
        head = (f"trace: {self.loss_name} loss {self.loss:.6g} on {len(self.x)} examples "
                f"({'train' if self.train else 'eval'} mode); {verdict}")
        return "\n".join([head] + [line.rstrip() for line in table]
                         + [lt.time.summary(lt.label) for lt in self.layers if lt.time is not None])

    def to_dict(self, arrays: bool = False) -> dict:
        """A JSON-able record: the loss and, per layer, its rows' fields (shapes, statistics,
        norms, the vjp check); with ``arrays=True`` also every array as nested lists."""
        out = {"loss": self.loss, "loss_name": self.loss_name, "examples": int(len(self.x)), "train": self.train,
               "layers": []}
        for row, lt in zip(self.rows(), self.layers):
            row = dict(row, in_shape=_listify(row["in_shape"]), out_shape=_listify(row["out_shape"]),
                       vjp_error=_json_number(row["vjp_error"]), forward_error=_json_number(row["forward_error"]),
                       through_time_ratio=_json_number(row["through_time_ratio"]))
            if arrays:
                for field in ("x", "y", "dy", "dx", "params", "dparams"):
                    row[field] = _listify(getattr(lt, field))
                row["dh"] = None if lt.time is None else lt.time.dh.tolist()
            out["layers"].append(row)
        json.dumps(out)  # fails here, not in the caller's json.dump, if something is not JSON-able
        return out

    def tables(self, max_units: int = 16, layer=None) -> str:
        """The tutorials' tables: per layer its input, weights, output (``z`` of a Dense layer,
        the activation of an activation), the delta ``δ = ∂L/∂z`` and ``dW``, ``db``, ``dx``;
        then the loss and ``∂L/∂ŷ``. Rows and columns beyond ``max_units`` are elided (``…``);
        ``layer`` (an index or path) prints one layer only."""
        chosen = self.layers if layer is None else [self.layer(layer)]
        blocks = [layer_tables(lt, max_units) for lt in chosen]
        if layer is None:
            blocks.append("\n".join([f"loss: {self.loss_name} = {self.loss:.8g}",
                                     matrix("ŷ (the model's output)", self.pred, max_units),
                                     matrix("y (the targets)", self.y, max_units),
                                     matrix("∂L/∂ŷ (the loss's grad: where backward starts)", self.dpred,
                                             max_units)]))
        return "\n\n".join(blocks)

    def to_html(self, path, title: str | None = None):
        """Writes this step as one self-contained HTML page (:mod:`fnnet.pages.trace_page`); returns its path."""
        return trace_page.write(self, path, title)

    def _repr_html_(self) -> str:
        return trace_page.component(self)  # a notebook shows the page inline

    def plot_through_time(self, path, from_last: bool = False):
        """Writes a PNG of ``‖∂L/∂h_t‖`` against ``t`` (log scale) for each recurrent layer (``from_last``:
        of the last output's gradient alone); returns the path. ValueError when there is none."""
        curves = {lt.label: lt.time.norms(from_last) for lt in self.layers if lt.time is not None}
        if not curves:
            raise ValueError("plot_through_time: this model has no recurrent layer (RNN, LSTM, GRU)")
        return plot_through_time(curves, path, title=f"{'the last output' if from_last else 'the loss'}'s gradient "
                                                    f"through time ({len(self.x)} sequences)")


def _json_number(value: float):
    """``None`` for not checked (NaN) or none, ``"inf"`` for a non-finite disagreement, else the float."""
    if value is None or math.isnan(value):
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


def _num(value, spec: str = ".3g") -> str:
    return "" if value is None else f"{value:{spec}}"
