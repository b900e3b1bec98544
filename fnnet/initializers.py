"""Weight initialisers: each is ``(key, shape, dtype) -> array``.

For a weight matrix of shape ``(n_in, n_out)`` (``y = x @ w + b``) the fan-in is
``n_in`` and the fan-out ``n_out``.

Example:
    >>> import jax
    >>> from fnnet import initializers
    >>> w = initializers.glorot_uniform(jax.random.PRNGKey(0), (784, 512), "float32")
    >>> bool(abs(w).max() <= (6 / (784 + 512)) ** 0.5)
    True
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from fnnet import draws, host


def _fans(shape) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(key, shape, dtype=jnp.float32):
    """Glorot/Xavier uniform: ``U(-a, a)`` with ``a = sqrt(6 / (n_in + n_out))``."""
    n_in, n_out = _fans(shape)
    limit = math.sqrt(6.0 / (n_in + n_out))
    return draws.uniform(key, shape, dtype, -limit, limit)


def glorot_normal(key, shape, dtype=jnp.float32):
    """Glorot/Xavier normal: ``N(0, 2 / (n_in + n_out))``."""
    n_in, n_out = _fans(shape)
    return draws.normal(key, shape, dtype, scale=math.sqrt(2.0 / (n_in + n_out)))


def he_uniform(key, shape, dtype=jnp.float32):
    """He/Kaiming uniform for ReLU nets: ``U(-a, a)`` with ``a = sqrt(6 / n_in)``."""
    n_in, _ = _fans(shape)
    limit = math.sqrt(6.0 / n_in)
    return draws.uniform(key, shape, dtype, -limit, limit)


def he_normal(key, shape, dtype=jnp.float32):
    """He/Kaiming normal for ReLU nets: ``N(0, 2 / n_in)``."""
    n_in, _ = _fans(shape)
    return draws.normal(key, shape, dtype, scale=math.sqrt(2.0 / n_in))


def normal(stddev: float = 1e-2):
    """Returns an initialiser drawing from ``N(0, stddev**2)``."""

    def init(key, shape, dtype=jnp.float32):
        return draws.normal(key, shape, dtype, scale=stddev)

    return init


def uniform(scale: float = 1e-2):
    """Returns an initialiser drawing from ``U(-scale, scale)`` (the tutorials' small uniform)."""

    def init(key, shape, dtype=jnp.float32):
        return draws.uniform(key, shape, dtype, -scale, scale)

    return init


def zeros(key, shape, dtype=jnp.float32):
    """All zeros (the usual bias initialiser)."""
    del key
    return host.filled(shape, dtype, 0.0)


def constant(value: float):
    """Returns an initialiser filling with ``value`` (e.g. a small positive ReLU bias)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return host.filled(shape, dtype, value)

    return init
