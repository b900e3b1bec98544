"""Flatten and Reshape: each example's shape changed, and the (trivial) backward pass."""

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


def Reshape(shape) -> Layer:
    """Reshapes each example to ``shape`` (one entry may be ``-1``); backward reshapes ``dy`` back.

    Like :data:`Flatten` it needs exactly one leading batch axis.

    Example:
      >>> import jax.numpy as jnp, fnnet
      >>> fnnet.Reshape((28, 28, 1)).apply((), jnp.ones((5, 784))).shape
      (5, 28, 28, 1)
    """
    try:
        target = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"Reshape: shape must be a tuple of ints, got {shape!r}") from None
    if target.count(-1) > 1 or any(d < -1 or d == 0 for d in target):
        raise ValueError(f"Reshape: shape must hold positive ints and at most one -1, got {shape!r}")
    name = f"Reshape({target})"

    def resolve(in_shape):
        size, known = math.prod(in_shape), math.prod(d for d in target if d != -1)
        if (-1 in target and size % known) or (-1 not in target and size != known):
            raise ValueError(f"{name}: cannot reshape examples of shape {tuple(in_shape)} "
                             f"({size} values) to {target}")
        return tuple(size // known if d == -1 else d for d in target)

    def init(key, in_shape):
        return resolve(as_shape(in_shape, name)), ()

    def apply(params, x):
        if jnp.ndim(x) < 2:
            raise ValueError(f"{name}: expected a batch of shape (N, ...), got {jnp.shape(x)}; give one "
                             f"example as x[None]")
        return jnp.reshape(x, (x.shape[0],) + resolve(x.shape[1:]))

    def backward(params, x, dy):
        return (), jnp.reshape(dy, jnp.shape(x))

    return make_layer(name, init, apply, lambda params, x: (apply(params, x), x), backward)
