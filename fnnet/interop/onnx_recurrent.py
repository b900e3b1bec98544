"""ONNX out for the recurrent layers: :func:`fnnet.RNN`, :func:`fnnet.LSTM`, :func:`fnnet.GRU` and
:func:`fnnet.Bidirectional` as ONNX's ``RNN``, ``LSTM`` and ``GRU`` ops (called by
:func:`fnnet.interop.to_onnx`).

=====================  =====================================================================
fnnet                  ONNX
=====================  =====================================================================
``RNN(activation)``    ``RNN(activations=["Tanh"])`` (or ``"Relu"``)
``LSTM``               ``LSTM``, gates reordered from PyTorch's ``i, f, g, o`` to ONNX's ``i, o, f, c``
``GRU``                ``GRU(linear_before_reset=1)`` (PyTorch's cell: ``r ⊙ (h·W_hn + b_hn)``),
                       gates reordered from ``r, z, n`` to ONNX's ``z, r, h``
``Bidirectional(·)``   the same op with ``direction="bidirectional"``, the two copies' weights stacked
=====================  =====================================================================

ONNX's weights are PyTorch's tensors (``W = w_ihᵀ``, ``R = w_hhᵀ``, ``B = [b_ih, b_hh]``, one per
direction, stacked), with the gate blocks reordered. The ops read time-major ``(T, N, F)``
(``layout=1``, batch first, exists since opset 14, but onnxruntime refuses it), so the graph
transposes fnnet's ``(N, T, F)`` before and after: ``Y`` ``(T, D, N, H)`` becomes
``(N, T, D·H)``, each step's forward features next to the reverse ones, as fnnet concatenates
them; with ``return_sequences=False`` the output is ``Y_h`` ``(D, N, H)`` as ``(N, D·H)``. Leading
axes of an example before ``(T, F)`` are folded into the batch and unfolded after.

The graph takes one array: padded :class:`fnnet.Sequences` (lengths, an initial carry) are not
exported. onnxruntime's CPU kernels for these ops are float32 only: a float64 model writes a
valid graph that onnxruntime cannot run.
"""

from __future__ import annotations

import numpy as np

GATE_ORDER = {"RNN": (0,), "LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2)}
"""For each kind, PyTorch's gate block (fnnet's column block) at each place of ONNX's order:
LSTM ``i, f, g, o`` → ``i, o, f, c``; GRU ``r, z, n`` → ``z, r, h``."""


def _gates(matrix, kind: str, hidden: int):
    """``matrix`` ``(G·H, ...)`` in PyTorch's gate order, its blocks of ``H`` rows in ONNX's."""
    matrix = np.asarray(matrix)
    return np.concatenate([matrix[g * hidden:(g + 1) * hidden] for g in GATE_ORDER[kind]], axis=0)


def _weights(graph, kind: str, hidden: int, directions, use_bias: bool) -> list:
    """The op's ``W`` ``(D, G·H, F)``, ``R`` ``(D, G·H, H)`` and ``B`` ``(D, 2·G·H)`` initializer
    names (no ``B`` without biases: ONNX's default is zeros), one slice per direction's params."""
    w = np.stack([_gates(np.asarray(p["w_ih"]).T, kind, hidden) for p in directions])
    r = np.stack([_gates(np.asarray(p["w_hh"]).T, kind, hidden) for p in directions])
    names = [graph.constant("W", w), graph.constant("R", r)]
    if use_bias:
        b = np.stack([np.concatenate([_gates(p["b_ih"], kind, hidden), _gates(p["b_hh"], kind, hidden)])
                      for p in directions])
        names.append(graph.constant("B", b))
    return names


def emit_recurrent(graph, spec, params, x: str, shape: tuple) -> str:
    """The output name of a recurrent layer (``spec``: RNN, LSTM, GRU or Bidirectional of one)
    applied to ``x`` of example shape ``shape`` (``(..., T, F)``) in the graph being written."""
    bidirectional = spec.kind == "Bidirectional"
    inner = spec["layer"] if bidirectional else spec
    kind, hidden = inner.kind, inner["hidden"]
    directions = [params["forward"], params["reverse"]] if bidirectional else [params]
    width = len(directions) * hidden
    steps, features = shape[-2:]
    lead = tuple(shape[:-2])
    if lead:   # (N, ..., T, F) -> (N·..., T, F)
        x = graph.op("Reshape", [x, graph.ints("shape", (-1, steps, features))])
    attributes = {"hidden_size": hidden, "direction": "bidirectional" if bidirectional else "forward"}
    if kind == "RNN":
        attributes["activations"] = [inner["activation"].capitalize()] * len(directions)
    if kind == "GRU":
        attributes["linear_before_reset"] = 1
    inputs = [graph.transpose(x, (1, 0, 2))] + _weights(graph, kind, hidden, directions, inner["use_bias"])
    out = graph.name(kind.lower())
    sequences = inner["return_sequences"]
    graph.nodes.append(graph.helper.make_node(kind, inputs, [out] if sequences else ["", out], **attributes))
    if sequences:   # Y (T, D, N, H) -> (N, T, D, H) -> (N, T, D·H)
        y = graph.op("Reshape", [graph.transpose(out, (2, 0, 1, 3)), graph.ints("shape", (0, 0, width))])
        tail = (steps, width)
    else:           # Y_h (D, N, H) -> (N, D, H) -> (N, D·H)
        y = graph.op("Reshape", [graph.transpose(out, (1, 0, 2)), graph.ints("shape", (0, width))])
        tail = (width,)
    if lead:        # and back: (N, ..., T, D·H) or (N, ..., D·H)
        y = graph.op("Reshape", [y, graph.ints("shape", (-1,) + lead + tail)])
    return y
