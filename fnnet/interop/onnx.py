"""ONNX out: an fnnet model in evaluation mode as an ONNX graph, written layer by layer.

Each layer knows its kind and arguments (:attr:`fnnet.Layer.spec`), so each becomes the ONNX
node(s) of the same formula, its params the graph's initializers, written with ``onnx.helper``
(no tracing of JAX programs: the graph reads as the model does, and a new JAX cannot break it):

=============================  ===============================================================
``Dense``                      ``MatMul`` (+ ``Add``)
``Relu`` ``Sigmoid`` ``Tanh``  the ONNX op of the same name; ``Softmax(axis=-1)``;
``LeakyRelu`` ``Identity``     ``LeakyRelu(alpha)``, ``Identity``
``Gelu``                       the tanh form or the exact ``0.5·x·(1 + erf(x/√2))``, as ops
``Conv`` / ``Conv1D``          ``Transpose`` to channels-first, ``Conv`` (pads, strides,
                               dilations, group), ``Transpose`` back: the graph takes fnnet's
                               channels-last layout
``MaxPool`` / ``AvgPool``      ``MaxPool`` / ``AveragePool(count_include_pad=1)``, transposed
``GlobalAvgPool``              ``ReduceMean`` over the spatial axes
``BatchNorm``                  its running statistics folded into ``Mul`` + ``Add`` per channel
``LayerNorm``                  ``LayerNormalization(axis=-1)``
``RMSNorm``                    ``x / Sqrt(ReduceMean(x·x) + ε) · scale`` (RMSNormalization is opset 23's)
``ReluSquared``, ``SoftCap``   ``Pow(Relu(x), 2)``; ``c · Tanh(x / c)``
``Dropout``                    nothing (evaluation mode)
``Flatten`` / ``Reshape``      ``Reshape`` (the batch axis kept)
``Embedding``                  ``Gather`` (ids are int64)
``RNN`` ``LSTM`` ``GRU``       ONNX's ``RNN``, ``LSTM``, ``GRU`` (gates reordered, GRU's
``Bidirectional``              ``linear_before_reset=1``; ``direction="bidirectional"``),
                               transposed to time-major and back (:mod:`~fnnet.interop.onnx_recurrent`)
``PositionalEmbedding``        ``Add`` of the first ``T`` rows
``CausalSelfAttention``        the projections, heads, masked ``Softmax`` and merge as ops (QK-norm as RMSNorm's
                               ops, rotary positions as ``cos``/``sin`` tables and a ``Split``/``Concat``)
``Unembed`` (a tied head)      ``MatMul`` by the ``Transpose`` of the shared table
combinators                    their children in order; ``FanOut``, ``parallel``,
                               ``FanInSum`` (``Sum``), ``FanInConcat`` (``Concat``),
                               ``Residual``, ``Tied`` (one initializer for the shared table)
=============================  ===============================================================

The input is ``(batch, *in_shape)`` with a dynamic batch axis (float, or int64 token ids for a
model that starts with an ``Embedding``); the output the model's. One array: padded
:class:`fnnet.Sequences` are not exported. Needs the ``onnx`` package
(``pip install 'fnnet[interop]'``); ``onnxruntime`` runs the result.
"""

from __future__ import annotations

import functools
import math
import pathlib

import jax
import numpy as np

from fnnet.interop.onnx_recurrent import emit_recurrent
from fnnet.interop.pytorch import INSTALL, ConversionError
from fnnet.layer import Layer, abstract_init, apply_with_state, describe_path, layer_children, layer_name
from fnnet.layers._checks import window_geometry
from fnnet.layers._sequences import Sequences
from fnnet.layers.attention import QK_NORM_EPSILON, rope_tables

DEFAULT_OPSET = 18
"""The ONNX opset written by default (``LayerNormalization`` needs 17; 18 takes reduction axes as inputs)."""

INPUT, OUTPUT = "input", "output"


def import_onnx():
    try:
        import onnx  # optional dependency: the interop extra
    except ImportError as error:
        raise ImportError(f"fnnet.interop.to_onnx needs the onnx package: {INSTALL}") from error
    return onnx


def to_onnx(model: Layer, params, in_shape, path, *, model_state=None, opset: int | None = None) -> pathlib.Path:
    """Writes ``model`` (evaluation mode: Dropout off, BatchNorm on its running statistics in
    ``model_state``) with ``params`` as an ONNX file at ``path``; returns the path.

    ``in_shape`` is one example's shape (no batch axis), as ``model.init`` takes it; the graph's
    input ``"input"`` has shape ``(batch, *in_shape)`` with ``batch`` dynamic, its output
    ``"output"``. The graph is checked by ``onnx.checker`` (with shape inference) before it is
    written. Every layer kind fnnet has converts (the table in this module's docstring).

    Raises:
      ConversionError: a layer without a spec (a layer of your own), a model with state but
        no ``model_state``, params that do not fit, or an opset below 17, each named.
      ImportError: ``onnx`` is not installed.

    Example::

        fnnet.interop.to_onnx(run.model, run.params, run.in_shape, "model.onnx", model_state=run.model_state)
        session = onnxruntime.InferenceSession("model.onnx")
        logits = session.run(None, {"input": x.astype(np.float32)})[0]      # == run.predict(x)
    """
    onnx = import_onnx()
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not 17 <= opset <= onnx.defs.onnx_opset_version():
        raise ConversionError(f"to_onnx: opset {opset} is not supported: fnnet writes opsets 17 (LayerNormalization) "
                              f"to {onnx.defs.onnx_opset_version()} (this onnx package's newest)")
    in_shape = _example_shape(in_shape)
    out_shape, like_params, like_state = abstract_init(model, in_shape)
    if jax.tree.leaves(like_state) and not jax.tree.leaves(model_state):
        raise ConversionError(f"to_onnx: {layer_name(model)} has state (BatchNorm's running statistics): pass "
                              f"model_state= (TrainState.model_state, run.model_state)")
    if jax.tree.structure(like_params) != jax.tree.structure(params):
        raise ConversionError(f"to_onnx: params do not fit {layer_name(model)} on examples of shape {in_shape}")
    for (path_, like), value in zip(jax.tree_util.tree_leaves_with_path(like_params), jax.tree.leaves(params)):
        if tuple(like.shape) != tuple(np.shape(value)):
            raise ConversionError(f"to_onnx: params do not fit examples of shape {in_shape}: "
                                  f"{describe_path(model, path_)} has shape {tuple(np.shape(value))}, "
                                  f"the model expects {tuple(like.shape)}")
    dtypes = {np.dtype(leaf.dtype) for leaf in jax.tree.leaves(params) if np.issubdtype(leaf.dtype, np.floating)}
    if len(dtypes) > 1 or not dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}:
        raise ConversionError(f"to_onnx: params must all be float32 (or all float64), got {sorted(map(str, dtypes))}")
    dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
    graph = _Graph(onnx, dtype, opset)
    first = _first_leaf(model)
    takes_ids = first.spec is not None and first.spec.kind == "Embedding"
    state = model_state if jax.tree.leaves(like_state) else like_state
    out = graph.emit(model, params, state, INPUT, in_shape, "")
    out_shape = tuple(out_shape)
    graph.nodes.append(onnx.helper.make_node("Identity", [out], [OUTPUT]))
    element = onnx.TensorProto.INT64 if takes_ids else graph.elem
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, layer_name(model),
                               [onnx.helper.make_tensor_value_info(INPUT, element, ("batch",) + in_shape)],
                               [onnx.helper.make_tensor_value_info(OUTPUT, graph.elem, ("batch",) + out_shape)],
                               graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="fnnet")
    onnx.checker.check_model(proto, full_check=True)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def check_onnx(path, model: Layer, params, x, *, model_state=None) -> float:
    """The largest difference between onnxruntime's outputs for the graph at ``path`` and fnnet's
    (:func:`fnnet.apply_with_state` in evaluation mode) on the batch ``x``, relative to the largest
    fnnet output: ``max|onnx - fnnet| / max|fnnet|`` (float32 rounding: about 1e-7).

    Raises:
      ImportError: ``onnxruntime`` is not installed (``pip install 'fnnet[interop]'``).
    """
    try:
        import onnxruntime  # optional dependency: the interop extra
    except ImportError as error:
        raise ImportError(f"fnnet.interop.check_onnx needs onnxruntime: {INSTALL}") from error
    if isinstance(x, Sequences):
        raise ConversionError(_ONE_ARRAY.format(what="check_onnx: x"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        feed = x.astype(np.int64)                     # token ids
    else:
        feed = x.astype(np.float64 if session.get_inputs()[0].type == "tensor(double)" else np.float32)
    ours = np.asarray(_evaluate(model, params, model_state or (), x), np.float64)
    theirs = np.asarray(session.run(None, {INPUT: feed})[0], np.float64)
    if theirs.shape != ours.shape:
        raise ConversionError(f"check_onnx: {path} gives outputs of shape {theirs.shape}, fnnet {ours.shape}")
    return float(np.max(np.abs(theirs - ours)) / max(float(np.max(np.abs(ours))), 1e-30)) if ours.size else 0.0


_ONE_ARRAY = ("{what} is a padded fnnet.Sequences (lengths, an initial carry): an ONNX graph takes one array, "
              "(batch, T, F) for a recurrent model, whose every sequence has all T steps and starts from zeros")


def _example_shape(in_shape) -> tuple:
    """``in_shape`` as a tuple of ints, or a :class:`ConversionError` saying what a graph takes."""
    if isinstance(in_shape, Sequences):
        raise ConversionError(_ONE_ARRAY.format(what="to_onnx: in_shape"))
    try:
        return tuple(int(d) for d in in_shape)
    except TypeError:
        raise ConversionError(f"to_onnx: in_shape must be one example's shape, a tuple of ints (T, F for "
                              f"sequences), got {in_shape!r}") from None


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(model, params, model_state, x):
    """fnnet's outputs in evaluation mode, compiled once per model and shape."""
    return apply_with_state(model, params, model_state, x, train=False)[0]


def _first_leaf(layer: Layer) -> Layer:
    children = layer_children(layer)
    return _first_leaf(children[0]) if children else layer


class _Graph:
    """The nodes and initializers written so far, and fresh names for both."""

    def __init__(self, onnx, dtype, opset):
        self.onnx, self.helper, self.dtype, self.opset = onnx, onnx.helper, dtype, opset
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
        self.nodes, self.initializers, self.count = [], [], 0
        self.tables = {}  # id(array) -> (array, initializer name): a tied table is stored once

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def constant(self, hint: str, value, dtype=None) -> str:
        """An initializer holding ``value`` (in the graph's float dtype unless ``dtype``)."""
        name = self.name(hint)
        array = np.asarray(value, dtype if dtype is not None else self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, hint: str, values) -> str:
        return self.constant(hint, np.asarray(values, np.int64), np.int64)

    def op(self, op_type: str, inputs, hint: str | None = None, **attributes) -> str:
        out = self.name(hint or op_type)
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def transpose(self, x: str, perm) -> str:
        return self.op("Transpose", [x], perm=list(perm))

    # --- the layers ------------------------------------------------------------------------------

    def emit(self, layer: Layer, params, state, x: str, shape: tuple, where: str):
        """The output name of ``layer`` applied to ``x`` (a name, or a tuple of names for
        branches) of example shape ``shape``."""
        spec = layer.spec
        label = f"layer {where or '0'} ({layer_name(layer)})"
        if spec is None:
            raise ConversionError(f"to_onnx: {label} has no spec (a layer of your own): fnnet cannot tell which "
                                  f"ONNX ops compute it; give make_layer(..., spec=fnnet.layer.spec(kind, ...)) a "
                                  f"built-in kind, or export the layers around it")
        method = getattr(self, f"_emit_{spec.kind}", None)
        if method is None:
            raise ConversionError(f"to_onnx: {label}: layer kind {spec.kind!r} has no ONNX translation")
        return method(layer, spec, params, state, x, shape, label, where)

    def _children(self, layer, params, state, x, shape, where, param_index=None):
        children = layer_children(layer)
        states = _child_states(state, children)
        for index, child in enumerate(children):
            child_params = params[index] if param_index is None else params[param_index(index)]
            x = self.emit(child, child_params, states[index], x, shape, f"{where}/{index}" if where else str(index))
            shape = _out_shape(child, shape)
        return x

    def _emit_serial(self, layer, spec, params, state, x, shape, label, where):
        return self._children(layer, params, state, x, shape, where)

    _emit_Residual = _emit_serial  # its children: FanOut(2), parallel(block, Identity), FanInSum

    def _emit_Tied(self, layer, spec, params, state, x, shape, label, where):
        return self._children(layer, params, state, x, shape, where, param_index=lambda i: 0 if i == 2 else i)

    def _emit_FanOut(self, layer, spec, params, state, x, shape, label, where):
        return (x,) * spec["n"]

    def _emit_parallel(self, layer, spec, params, state, xs, shapes, label, where):
        children = layer_children(layer)
        states = _child_states(state, children)
        shapes = shapes if isinstance(shapes[0], tuple) else (shapes,) * len(children)
        return tuple(self.emit(child, params[i], states[i], xs[i], shapes[i], f"{where}/{i}" if where else str(i))
                     for i, child in enumerate(children))

    def _emit_FanInSum(self, layer, spec, params, state, xs, shapes, label, where):
        return self.op("Sum", xs)

    def _emit_FanInConcat(self, layer, spec, params, state, xs, shapes, label, where):
        rank = len(shapes[0])
        return self.op("Concat", xs, axis=1 + spec["axis"] % rank)  # axis 0 of the graph is the batch

    def _emit_Dense(self, layer, spec, params, state, x, shape, label, where):
        y = self.op("MatMul", [x, self.constant("w", params["w"])], "dense")
        return self.op("Add", [y, self.constant("b", params["b"])]) if spec["use_bias"] else y

    def _emit_Unembed(self, layer, spec, params, state, x, shape, label, where):
        table = self._shared(params["w"])
        return self.op("MatMul", [x, self.transpose(table, (1, 0))], "unembed")

    def _shared(self, array):
        """One initializer per array object: a tied table is stored once."""
        if id(array) not in self.tables:
            self.tables[id(array)] = (array, self.constant("table", array))  # the array kept alive: ids stay unique
        return self.tables[id(array)][1]

    def _emit_Relu(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Relu", [x])

    def _emit_Sigmoid(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Sigmoid", [x])

    def _emit_Tanh(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Tanh", [x])

    def _emit_Softmax(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Softmax", [x], axis=-1)

    def _emit_Identity(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Identity", [x])

    _emit_Dropout = _emit_Identity  # evaluation mode

    def _emit_LeakyRelu(self, layer, spec, params, state, x, shape, label, where):
        return self.op("LeakyRelu", [x], alpha=float(spec["alpha"]))

    def _emit_Gelu(self, layer, spec, params, state, x, shape, label, where):
        half = self.op("Mul", [x, self.constant("half", 0.5)])
        if spec["approximate"]:  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            cube = self.op("Mul", [self.op("Mul", [x, x]), x])
            inner = self.op("Add", [x, self.op("Mul", [cube, self.constant("c", 0.044715)])])
            core = self.op("Tanh", [self.op("Mul", [inner, self.constant("k", math.sqrt(2 / math.pi))])])
        else:                    # 0.5·x·(1 + erf(x/√2))
            core = self.op("Erf", [self.op("Mul", [x, self.constant("k", 1 / math.sqrt(2))])])
        return self.op("Mul", [half, self.op("Add", [core, self.constant("one", 1.0)])], "gelu")

    def _emit_ReluSquared(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Pow", [self.op("Relu", [x]), self.constant("two", 2.0)], "relu_squared")

    def _emit_SoftCap(self, layer, spec, params, state, x, shape, label, where):  # c·tanh(x/c)
        cap = float(spec["cap"])
        core = self.op("Tanh", [self.op("Mul", [x, self.constant("inv_cap", 1.0 / cap)])])
        return self.op("Mul", [core, self.constant("cap", cap)], "soft_cap")

    def _rms_normalize(self, x, epsilon: float):
        """``x / sqrt(mean(x²) + ε)`` over the last axis, as ops (ONNX's RMSNormalization needs opset 23)."""
        mean = self._reduce_mean(self.op("Mul", [x, x]), [-1], keepdims=1)
        rms = self.op("Sqrt", [self.op("Add", [mean, self.constant("epsilon", float(epsilon))])])
        return self.op("Div", [x, rms], "rms_normalized")

    def _emit_RMSNorm(self, layer, spec, params, state, x, shape, label, where):
        normalized = self._rms_normalize(x, spec["epsilon"])
        return self.op("Mul", [normalized, self.constant("scale", params["scale"])]) if spec["use_scale"] else normalized

    def _rotate(self, t, cos, sin, size):
        """RoPE on ``t (N, H, T, D)``: ``t·cos + rotate_half(t)·sin``, ``rotate_half([a, b]) = [-b, a]``."""
        first, second = self.name("first_half"), self.name("second_half")
        self.nodes.append(self.helper.make_node("Split", [t, self.ints("halves", (size // 2,) * 2)],
                                                [first, second], axis=-1))
        turned = self.op("Concat", [self.op("Neg", [second]), first], axis=-1)
        return self.op("Add", [self.op("Mul", [t, cos]), self.op("Mul", [turned, sin])], "rotated")

    def _channels_first(self, x, rank):
        """``(N, spatial..., C)`` -> ``(N, C, spatial...)``, and the permutation back."""
        to_first = (0, rank + 1) + tuple(range(1, rank + 1))
        to_last = (0,) + tuple(range(2, rank + 2)) + (1,)
        return self.transpose(x, to_first), to_last

    def _emit_Conv(self, layer, spec, params, state, x, shape, label, where):
        rank = len(shape) - 1
        kernel, strides, dilation = spec["kernel_size"], spec["strides"], spec["dilation"]
        pads, _ = window_geometry(shape[:-1], kernel, strides, dilation, spec["padding"])
        w = np.moveaxis(np.asarray(params["w"]), (-1, -2), (0, 1))   # (k..., C_in/g, C_out) -> (C_out, C_in/g, k...)
        inputs = [None, self.constant("w", w)] + ([self.constant("b", params["b"])] if spec["use_bias"] else [])
        inputs[0], back = self._channels_first(x, rank)
        y = self.op("Conv", inputs, "conv", kernel_shape=list(kernel), strides=list(strides),
                    dilations=list(dilation), group=int(spec["feature_group_count"]),
                    pads=[lo for lo, _ in pads] + [hi for _, hi in pads])
        return self.transpose(y, back)

    _emit_Conv1D = _emit_Conv

    def _emit_RNN(self, layer, spec, params, state, x, shape, label, where):
        return emit_recurrent(self, spec, params, x, shape)

    _emit_LSTM = _emit_GRU = _emit_Bidirectional = _emit_RNN

    def _pool(self, op_type, spec, x, shape, **extra):
        window, strides = spec["window"], spec["strides"]
        pads, _ = window_geometry(shape[:-1], window, strides, (1,) * len(window), spec["padding"])
        first, back = self._channels_first(x, len(window))
        y = self.op(op_type, [first], kernel_shape=list(window), strides=list(strides),
                    pads=[lo for lo, _ in pads] + [hi for _, hi in pads], **extra)
        return self.transpose(y, back)

    def _emit_MaxPool(self, layer, spec, params, state, x, shape, label, where):
        return self._pool("MaxPool", spec, x, shape)              # pads count as -inf, as fnnet's

    def _emit_AvgPool(self, layer, spec, params, state, x, shape, label, where):
        return self._pool("AveragePool", spec, x, shape, count_include_pad=1)  # pads count as zeros, as fnnet's

    def _emit_GlobalAvgPool(self, layer, spec, params, state, x, shape, label, where):
        return self._reduce_mean(x, list(range(1, len(shape))), keepdims=0)  # the spatial axes (0: the batch)

    def _reduce_mean(self, x, axes: list, keepdims: int) -> str:
        if self.opset < 18:  # before opset 18, ReduceMean took its axes as an attribute
            return self.op("ReduceMean", [x], axes=axes, keepdims=keepdims)
        return self.op("ReduceMean", [x, self.ints("axes", axes)], keepdims=keepdims)

    def _emit_BatchNorm(self, layer, spec, params, state, x, shape, label, where):
        if not state or "mean" not in state:
            raise ConversionError(f"to_onnx: {label} needs its running statistics: pass model_state=")
        mean, var = np.asarray(state["mean"], np.float64), np.asarray(state["var"], np.float64)
        scale = np.asarray(params["scale"], np.float64) / np.sqrt(var + spec["epsilon"])
        shift = np.asarray(params["offset"], np.float64) - mean * scale
        return self.op("Add", [self.op("Mul", [x, self.constant("scale", scale)]), self.constant("shift", shift)],
                       "batchnorm")

    def _emit_LayerNorm(self, layer, spec, params, state, x, shape, label, where):
        inputs = [x, self.constant("scale", params["scale"])]
        if spec.get("use_bias", True):
            inputs.append(self.constant("offset", params["offset"]))
        return self.op("LayerNormalization", inputs, "layernorm", axis=-1, epsilon=float(spec["epsilon"]))

    def _emit_Flatten(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Reshape", [x, self.ints("shape", (-1, math.prod(shape)))])

    def _emit_Reshape(self, layer, spec, params, state, x, shape, label, where):
        out_shape = _out_shape(layer, shape)
        return self.op("Reshape", [x, self.ints("shape", (-1,) + tuple(out_shape))])

    def _emit_Embedding(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Gather", [self._shared(params["w"]), x], "embedding", axis=0)

    def _emit_PositionalEmbedding(self, layer, spec, params, state, x, shape, label, where):
        return self.op("Add", [x, self.constant("pos", np.asarray(params["pos"])[: shape[-2]])])

    def _emit_CausalSelfAttention(self, layer, spec, params, state, x, shape, label, where):
        length, features = shape[-2], shape[-1]
        heads = spec["num_heads"]
        size = features // heads
        qkv = self.op("MatMul", [x, self.constant("w_qkv", params["w_qkv"])], "qkv")
        if spec.get("use_bias", True):
            qkv = self.op("Add", [qkv, self.constant("b_qkv", params["b_qkv"])])
        names = [self.name(part) for part in ("q", "k", "v")]
        self.nodes.append(self.helper.make_node("Split", [qkv, self.ints("split", (features,) * 3)], names, axis=-1))
        split_heads = self.ints("heads", (0, 0, heads, size))          # (N, T, C) -> (N, T, H, D)
        q, k, v = (self.transpose(self.op("Reshape", [name, split_heads]), (0, 2, 1, 3)) for name in names)
        if spec.get("qk_norm", False):
            q, k = (self._rms_normalize(t, QK_NORM_EPSILON) for t in (q, k))
        if spec.get("rope", False):
            cos, sin = (np.asarray(table, np.float32) for table in rope_tables(length, size, spec["rope_base"]))
            cos, sin = self.constant("rope_cos", cos), self.constant("rope_sin", sin)
            q, k = (self._rotate(t, cos, sin, size) for t in (q, k))
        scores = self.op("Mul", [self.op("MatMul", [q, self.transpose(k, (0, 1, 3, 2))]),
                                 self.constant("scale", 1.0 / math.sqrt(size))], "scores")
        mask = np.where(np.tril(np.ones((length, length), bool)), 0.0, -np.inf)   # j > i: -inf, weight 0
        weights = self.op("Softmax", [self.op("Add", [scores, self.constant("causal_mask", mask)])], axis=-1)
        merged = self.op("Reshape", [self.transpose(self.op("MatMul", [weights, v]), (0, 2, 1, 3)),
                                     self.ints("merge", (0, 0, features))])
        y = self.op("MatMul", [merged, self.constant("w_out", params["w_out"])], "attention")
        return self.op("Add", [y, self.constant("b_out", params["b_out"])]) if spec.get("use_bias", True) else y


def _child_states(state, children) -> tuple:
    """A combinator's state split per child (``None`` each for a combinator without state)."""
    return tuple(state) if isinstance(state, (tuple, list)) and len(state) == len(children) else (None,) * len(children)


def _out_shape(layer: Layer, shape):
    """The example shape ``layer`` gives for examples of ``shape`` (tuples of shapes for branches)."""
    def plain(value):
        return tuple(plain(v) for v in value) if isinstance(value, (tuple, list)) else int(value)
    return plain(abstract_init(layer, shape)[0])
