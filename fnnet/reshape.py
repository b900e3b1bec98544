"""Flatten: reshape each example to a vector, and its (trivial) backward pass."""

from __future__ import annotations

import math

import jax.numpy as jnp

from fnnet.layer import Layer, as_shape, make_layer


def _flatten_init(key, in_shape):
    del key
    in_shape = as_shape(in_shape, "Flatten")
    return (math.prod(in_shape),), ()


def _flatten_apply(params, x):
    if jnp.ndim(x) < 2:
        raise ValueError(f"Flatten: expected a batch of shape (N, ...), got {jnp.shape(x)}; "
                         "Flatten keeps exactly one leading batch axis, so give one example as x[None]")
    return jnp.reshape(x, (x.shape[0], -1))


def _flatten_forward(params, x):
    return _flatten_apply(params, x), x  # x itself (no copy) carries its static shape


def _flatten_backward(params, x, dy):
    return (), jnp.reshape(dy, jnp.shape(x))  # dx is dy folded back to the input's shape


Flatten: Layer = make_layer("Flatten", _flatten_init, _flatten_apply, _flatten_forward,
                            _flatten_backward)
"""Flattens ``(N, d1, d2, ...)`` to ``(N, d1*d2*...)``; backward reshapes ``dy`` back.

Unlike the other layers, Flatten needs exactly one leading batch axis (it cannot
tell batch axes from example axes otherwise), as in stax, Keras and PyTorch.
To use it on a single example under ``jax.vmap``, give that example as ``x[None]``
(as :func:`fnnet.per_example_grads` does).
"""
