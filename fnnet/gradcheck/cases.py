"""The catalogue of built-in layer cases: every layer and combinator fnnet ships, once.

``fnnet gradcheck`` (:func:`builtin_cases`, :func:`run_builtin`) and the test suite both
parametrise on :data:`LAYER_CASES`, so a layer added here is gradient-checked, shape-checked
on every batch shape and under ``jax.vmap``, and dtype-checked without another list to keep.

Each :class:`LayerCase` names a layer, one example's shape (no batch axis), what its inputs
are (standard-normal floats, integer token ids below ``vocab``, or for a recurrent layer a
:class:`fnnet.Sequences` with random lengths and an initial carry) and, for a layer with state
or randomness, the mode it is checked in.

Example:
  >>> from fnnet.gradcheck import cases
  >>> case = cases.by_name("Dense")
  >>> case.in_shape
  (3,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnnet import draws, losses
from fnnet.combinators import FanInConcat, FanInSum, FanOut, Residual, parallel, serial
from fnnet.gpt import GPT, GPTConfig, TransformerBlock
from fnnet.gradcheck._checks import AUTODIFF_RTOL, FD_RTOL, check_layer, check_loss, check_model
from fnnet.gradcheck._report import Report, format_table
from fnnet.layer import Layer, init_with_state
from fnnet.layers import (GRU, LSTM, RNN, AvgPool, BatchNorm, Bidirectional, CausalSelfAttention, Conv, Conv1D, Dense,
                          Dropout, Embedding, Flatten, Gelu, GlobalAvgPool, Identity, LayerNorm, LeakyRelu, MaxPool,
                          PositionalEmbedding, Relu, ReluSquared, Reshape, RMSNorm, Sequences, Sigmoid, Softmax,
                          SoftCap, Tanh, Unembed)
from fnnet.tied import Tied


class LayerCase(NamedTuple):
    """One built-in layer as the checks run it."""

    name: str
    layer: Layer
    in_shape: tuple
    """One example's shape, no batch axis (a tuple of shapes for a layer taking branches)."""
    vocab: int = 0
    """``> 0``: the inputs are integer token ids in ``[0, vocab)`` (Embedding)."""
    train: bool = True
    """The mode a stateful layer is checked in (BatchNorm's batch statistics, Dropout's mask)."""
    lengths: bool = False
    """``True``: padded sequences, a :class:`fnnet.Sequences` whose lengths are random in ``[1, T]``
    (``in_shape`` is ``(T, F)``)."""
    carry: tuple | None = None
    """One example's initial carry, as shapes (``(H,)``; an LSTM's ``((H,), (H,))``): the inputs are a
    :class:`fnnet.Sequences` with a random ``initial`` of these shapes."""

    def inputs(self, key, batch_shape=(5,), dtype=jnp.float32):
        """Random inputs of shape ``batch_shape + in_shape`` (a tuple of them for branches; a
        :class:`fnnet.Sequences` for a case with ``lengths`` or ``carry``)."""
        if self.lengths or self.carry is not None:
            x_key, lengths_key, carry_key = jax.random.split(key, 3)
            lengths = jax.random.randint(lengths_key, tuple(batch_shape), 1, self.in_shape[-2] + 1) \
                if self.lengths else None
            shapes, treedef = jax.tree.flatten(self.carry, is_leaf=_is_shape)
            initial = None if self.carry is None else jax.tree.unflatten(treedef, [
                draws.normal(k, tuple(batch_shape) + s, dtype)
                for k, s in zip(jax.random.split(carry_key, len(shapes)), shapes)])
            return Sequences(draws.normal(x_key, tuple(batch_shape) + self.in_shape, dtype), lengths, initial)
        if self.vocab:
            return jax.random.randint(key, tuple(batch_shape) + self.in_shape, 0, self.vocab)
        if self.in_shape and isinstance(self.in_shape[0], tuple):
            keys = jax.random.split(key, len(self.in_shape))
            return tuple(draws.normal(k, tuple(batch_shape) + s, dtype) for k, s in zip(keys, self.in_shape))
        return draws.normal(key, tuple(batch_shape) + self.in_shape, dtype)

    def init(self, key):
        """``(out_shape, params, state)`` of ``init_with_state`` for one example."""
        return init_with_state(self.layer, key, self.in_shape)


def _is_shape(value) -> bool:
    return isinstance(value, tuple) and all(isinstance(d, int) for d in value)


LAYER_CASES: list[LayerCase] = [
    LayerCase("Dense", Dense(4), (3,)),
    LayerCase("Dense (no bias)", Dense(4, use_bias=False), (3,)),
    LayerCase("Dense (3-D input)", Dense(2), (2, 3)),
    LayerCase("Relu", Relu, (7,)),
    LayerCase("LeakyRelu", LeakyRelu(0.1), (7,)),
    LayerCase("Sigmoid", Sigmoid, (7,)),
    LayerCase("Tanh", Tanh, (7,)),
    LayerCase("Softmax", Softmax, (7,)),
    LayerCase("Gelu", Gelu, (7,)),
    LayerCase("Gelu (exact)", Gelu(approximate=False), (7,)),
    LayerCase("Identity", Identity, (7,)),
    LayerCase("ReluSquared", ReluSquared, (7,)),
    LayerCase("SoftCap", SoftCap(2.0), (7,)),
    LayerCase("Flatten", Flatten, (2, 3)),
    LayerCase("Reshape", Reshape((3, -1)), (2, 3)),
    LayerCase("Conv 3x3 SAME", Conv(4, 3), (6, 5, 3)),
    LayerCase("Conv 3x2 stride 2 VALID", Conv(3, (3, 2), strides=2, padding="VALID"), (7, 6, 2)),
    LayerCase("Conv dilation 2, explicit padding", Conv(2, 3, padding=((2, 1), (0, 2)), dilation=2), (7, 7, 2)),
    LayerCase("Conv grouped (2 groups)", Conv(4, 3, strides=(1, 2), feature_group_count=2), (5, 6, 4)),
    LayerCase("Conv depthwise", Conv(3, 3, feature_group_count=3), (5, 5, 3)),
    LayerCase("Conv no bias", Conv(3, 1, use_bias=False), (4, 4, 2)),
    LayerCase("Conv1D stride 2", Conv1D(3, 4, strides=2), (11, 2)),
    LayerCase("MaxPool 2x2", MaxPool(2), (6, 6, 2)),
    LayerCase("MaxPool 3x3 stride 2 SAME", MaxPool(3, strides=2, padding="SAME"), (7, 6, 2)),
    LayerCase("AvgPool 2x2", AvgPool(2), (6, 6, 2)),
    LayerCase("AvgPool 3x3 stride 1 SAME", AvgPool(3, strides=1, padding="SAME"), (5, 4, 2)),
    LayerCase("GlobalAvgPool", GlobalAvgPool, (4, 5, 3)),
    LayerCase("GlobalAvgPool (T, C)", GlobalAvgPool, (6, 3)),
    LayerCase("LayerNorm", LayerNorm(), (7,)),
    LayerCase("LayerNorm (3-D input)", LayerNorm(), (3, 5)),
    LayerCase("LayerNorm (no bias)", LayerNorm(use_bias=False), (3, 5)),
    LayerCase("RMSNorm (3-D input)", RMSNorm(), (3, 5)),
    LayerCase("RMSNorm (no scale)", RMSNorm(use_scale=False), (7,)),
    LayerCase("BatchNorm (train)", BatchNorm(), (4, 4, 3)),
    LayerCase("BatchNorm (eval)", BatchNorm(), (4, 4, 3), train=False),
    LayerCase("Dropout (train)", Dropout(0.5), (7,)),
    LayerCase("Embedding", Embedding(9, 4), (5,), vocab=9),
    LayerCase("PositionalEmbedding (T < max_length)", PositionalEmbedding(8), (5, 3)),
    LayerCase("Unembed", Unembed(9, 4), (5, 4)),
    LayerCase("Tied (Embedding, Dense, Unembed)", Tied(Embedding(9, 4), serial(Dense(4), Tanh), Unembed(9, 4)),
              (5,), vocab=9),
    LayerCase("Tied (with Dropout in the body) (train)", Tied(Embedding(9, 4), serial(Dense(4), Dropout(0.3)),
                                                           Unembed(9, 4)), (5,), vocab=9),
    LayerCase("CausalSelfAttention (2 heads)", CausalSelfAttention(2), (6, 4)),
    LayerCase("CausalSelfAttention (1 head, T < max_length)", CausalSelfAttention(1, 9), (5, 3)),
    LayerCase("CausalSelfAttention (4 heads, T = 1)", CausalSelfAttention(4), (1, 8)),
    LayerCase("CausalSelfAttention (4 heads, T < max_length)", CausalSelfAttention(4, max_length=10), (7, 8)),
    LayerCase("CausalSelfAttention (2 heads, no bias)", CausalSelfAttention(2, use_bias=False), (6, 4)),
    LayerCase("CausalSelfAttention (2 heads, rope)", CausalSelfAttention(2, rope=True), (6, 8)),
    LayerCase("CausalSelfAttention (2 heads, qk-norm)", CausalSelfAttention(2, qk_norm=True), (5, 4)),
    LayerCase("CausalSelfAttention (2 heads, rope, qk-norm, no bias)",
              CausalSelfAttention(2, rope=True, qk_norm=True, use_bias=False, max_length=8), (6, 8)),
    LayerCase("RNN", RNN(4), (5, 3)),
    LayerCase("RNN (relu, last step)", RNN(4, "relu", return_sequences=False), (5, 3)),
    LayerCase("LSTM", LSTM(4), (5, 3)),
    LayerCase("GRU", GRU(4), (5, 3)),
    LayerCase("GRU (no bias, last step)", GRU(4, return_sequences=False, use_bias=False), (5, 3)),
    LayerCase("Bidirectional(LSTM)", Bidirectional(LSTM(4)), (5, 3)),
    LayerCase("TransformerBlock (GPT, 2 heads)", TransformerBlock(GPTConfig(block_size=6, num_layers=1, num_heads=2,
                                                                            features=4)), (6, 4)),
    LayerCase("TransformerBlock (speedrun: RMSNorm, rope, qk-norm, ReluSquared)",
              TransformerBlock(GPTConfig(block_size=6, num_layers=1, num_heads=2, features=8, norm="rms", rope=True,
                                         qk_norm=True, mlp_activation="relu2")), (6, 8)),
    LayerCase("serial (Dense, Tanh, Dense, Softmax)", serial(Dense(5), Tanh, Dense(3), Softmax), (4,)),
    LayerCase("serial (nested)", serial(serial(Dense(5), Relu), Gelu, serial(Dense(2), Sigmoid)), (3,)),
    LayerCase("serial (Flatten, Dense)", serial(Flatten, Dense(3), LeakyRelu()), (2, 2)),
    LayerCase("Residual", Residual(serial(Dense(4), Tanh)), (4,)),
    LayerCase("FanOut + parallel + FanInConcat", serial(
        FanOut(2), parallel(Dense(3), Tanh), FanInConcat()), (4,)),
    LayerCase("FanInConcat(0) of 2-D examples", FanInConcat(0), ((4, 5), (2, 5))),
    LayerCase("FanInConcat(1) of 3-D examples", FanInConcat(1), ((4, 5, 3), (4, 2, 3))),
    LayerCase("FanInSum of three branches", serial(
        FanOut(3), parallel(Dense(3), Dense(3), Identity), FanInSum), (3,)),
    LayerCase("Residual (Dense, Dropout) (train)", Residual(serial(Dense(4), Dropout(0.3))), (4,)),
    LayerCase("parallel (BatchNorm, Dropout) (train)", serial(
        FanOut(2), parallel(BatchNorm(), Dropout(0.5)), FanInConcat()), (3, 3, 2)),
    LayerCase("Conv block (Conv, BatchNorm, MaxPool, GlobalAvgPool, Dense)", serial(
        Conv(4, 3), BatchNorm(), Relu, MaxPool(2), GlobalAvgPool, Dense(3)), (6, 6, 2)),
    LayerCase("CNN head (Reshape, Conv, Flatten, Dense)", serial(
        Reshape((4, 4, 1)), Conv(2, 3), Relu, Flatten, Dense(3)), (16,)),
    LayerCase("ResNet block (Conv, Residual(Conv, Relu, Conv), MaxPool, Flatten, Dense)", serial(
        Conv(4, 3), Relu, Residual(serial(Conv(4, 3), Relu, Conv(4, 3))), MaxPool(2), Flatten, Dense(3)),
        (6, 6, 2)),
]
"""Every built-in layer and combinator, with one example's shape."""

SEQUENCE_CASES: list[LayerCase] = [
    LayerCase("RNN (relu, initial carry)", RNN(4, "relu"), (5, 3), carry=(4,)),
    LayerCase("LSTM (padded, last step, initial carry)", LSTM(4, return_sequences=False), (6, 3), lengths=True,
              carry=((4,), (4,))),
    LayerCase("GRU (padded)", GRU(4), (5, 3), lengths=True),
    LayerCase("Bidirectional(GRU) (padded, last step, initial carries)", Bidirectional(GRU(4, return_sequences=False)),
              (5, 3), lengths=True, carry=((4,), (4,))),
    LayerCase("serial (Bidirectional(RNN), LSTM) on padded sequences", serial(
        Bidirectional(RNN(4)), LSTM(3, return_sequences=False)), (5, 3), lengths=True),
]
"""Recurrent layers on a :class:`fnnet.Sequences` (padded lengths, an initial carry), checked in float64
by :func:`builtin_cases` like the others. Kept apart from :data:`LAYER_CASES` because its other readers
take a plain array: ``fnnet.trace`` (``jnp.asarray(x)``), the ONNX export (one input array), and
``test_batch_axes.py``, which expects ``dx`` of ``x``'s dtypes (integer lengths get ``float0``). Their
batch shapes and ``jax.vmap`` are checked in ``tests/test_recurrent.py``."""


def by_name(name: str) -> LayerCase:
    """The catalogue entry called ``name``; a KeyError listing the names otherwise."""
    for case in LAYER_CASES + SEQUENCE_CASES:
        if case.name == name:
            return case
    raise KeyError(f"no layer case {name!r}; known: {', '.join(c.name for c in LAYER_CASES + SEQUENCE_CASES)}")


def builtin_cases():
    """(name, thunk) pairs that check every built-in layer (the catalogue
    :data:`fnnet.gradcheck.LAYER_CASES`, and :data:`SEQUENCE_CASES`), loss and model; used by
    ``fnnet gradcheck``."""
    key = jax.random.PRNGKey(42)
    k1, k2, k3, k4 = jax.random.split(key, 4)

    def layer_case(case: LayerCase):
        def run():
            with jax.enable_x64(True):
                _, params, state = case.init(k1)
                x = case.inputs(k2, (5,), jnp.float64)
                return check_layer(case.layer, params, x, key=k3, raise_on_failure=False, state=state,
                                   rng=jax.random.fold_in(k3, 7), train=case.train)
        return run

    def cnn_case():
        with jax.enable_x64(True):
            model = serial(Conv(4, 3, use_bias=False), BatchNorm(), Relu, MaxPool(2),
                           Residual(serial(Conv(4, 3), Relu)), Dropout(0.25), GlobalAvgPool, Dense(3))
            _, params = model.init(k1, (8, 8, 2))
            x = draws.normal(k2, (6, 8, 8, 2), jnp.float64)
            labels = jax.random.randint(k3, (6,), 0, 3)
        return check_model(model, losses.softmax_cross_entropy, params, x, labels, key=k4,
                           raise_on_failure=False)

    def gpt_case(**options):
        with jax.enable_x64(True):
            model = GPT(GPTConfig(vocab_size=7, block_size=6, num_layers=1, num_heads=2, features=8,
                                          **options))
            _, params = model.init(k1, (6,))
            ids = jax.random.randint(k2, (3, 6), 0, 7)
            targets = jax.random.randint(k3, (3, 6), 0, 7)
        return check_model(model, losses.softmax_cross_entropy, params, ids, targets, key=k4,
                           raise_on_failure=False)

    def loss_case(loss, pred, target):
        return lambda: check_loss(loss, pred, target, key=k4, raise_on_failure=False)

    def model_case():
        with jax.enable_x64(True):
            model = serial(Dense(5), Tanh, Dense(4), Relu, Dense(3))
            _, params = model.init(k1, (6,))
            x = draws.normal(k2, (8, 6), jnp.float64)
            labels = jax.random.randint(k3, (8,), 0, 3)
        return check_model(model, losses.softmax_cross_entropy, params, x, labels, key=k4,
                           raise_on_failure=False)

    with jax.enable_x64(True):
        logits = draws.normal(k1, (8, 3), jnp.float64, scale=3)
        probs = draws.uniform(k2, (8, 2), jnp.float64, 0.05, 0.95)
        bits = jax.random.bernoulli(k3, 0.5, (8, 2)).astype(jnp.float64)
        labels = jax.random.randint(k4, (8,), 0, 3)
        onehot = jax.nn.one_hot(labels, 3, dtype=jnp.float64)
        seq_logits = draws.normal(k2, (3, 5, 7), jnp.float64, scale=2)
        seq_labels = jax.random.randint(k3, (3, 5), 0, 7)
    return [
        *[(case.name, layer_case(case)) for case in LAYER_CASES + SEQUENCE_CASES],
        ("squared_error", loss_case(losses.squared_error, logits, onehot)),
        ("mse", loss_case(losses.mse, logits, onehot)),
        ("binary_cross_entropy", loss_case(losses.binary_cross_entropy, probs, bits)),
        ("sigmoid_binary_cross_entropy", loss_case(losses.sigmoid_binary_cross_entropy, logits, onehot)),
        ("softmax_cross_entropy (labels)", loss_case(losses.softmax_cross_entropy, logits, labels)),
        ("softmax_cross_entropy (one-hot)", loss_case(losses.softmax_cross_entropy, logits, onehot)),
        ("serial MLP + softmax_cross_entropy", model_case),
        ("CNN (conv, BatchNorm, pool, residual, dropout) + softmax_cross_entropy", cnn_case),
        ("softmax_cross_entropy on (B, T, V) logits", loss_case(losses.softmax_cross_entropy, seq_logits, seq_labels)),
        ("GPT (1 block) + softmax_cross_entropy over (B, T)", gpt_case),
        ("GPT (nanoGPT's form: tied head, no biases, exact GELU) + softmax_cross_entropy",
         functools.partial(gpt_case, tie_embeddings=True, bias=False, gelu_approximate=False)),
        ("GPT (the speedrun's form: RMSNorm, rope, qk-norm, ReluSquared, soft cap) + softmax_cross_entropy",
         functools.partial(gpt_case, norm="rms", rope=True, qk_norm=True, mlp_activation="relu2", logit_cap=3.0)),
    ]


def run_builtin(verbose: bool = True) -> list[tuple[str, Report]]:
    """Checks every built-in layer and loss and prints one table; returns the reports."""
    results = []
    rows = []
    for name, case in builtin_cases():
        report = case()
        results.append((name, report))
        rows += [dataclasses.replace(row, layer=name if row.layer == report.subject else
                                     f"{name}: {row.layer}") for row in report.rows]
    if verbose:
        print(format_table(rows))
        print(f"\n{sum(r.passed for r in rows)}/{len(rows)} gradient leaves pass "
              f"(autodiff rtol {AUTODIFF_RTOL:g}, finite differences rtol {FD_RTOL:g}, float64)")
    return results
