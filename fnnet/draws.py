"""Random draws equal to ``jax.random.normal`` and ``jax.random.uniform``, compiled once per size class.

Outside ``jit`` each call of ``jax.random.normal(key, shape)`` compiles a program for its own
``shape`` (JAX's threefry, about 40 ms on a CPU core), so building models of many shapes, layer
by layer, spends most of its time compiling random-number generators. These functions draw the
same numbers from one program per power-of-two length (at least :data:`SMALLEST`): with
``jax_threefry_partitionable`` on (JAX's default) entry ``i`` of a draw depends on the key and on
``i`` alone, counted in row-major order, so the first ``prod(shape)`` entries of a longer flat
draw, reshaped, are exactly the draw of ``shape``. Under a transformation (``jit``, ``vmap``: the key is a tracer), with
``jax_threefry_partitionable`` off, or for a draw of more than :data:`LARGEST` entries (where
drawing costs more than compiling), they call ``jax.random`` directly.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from fnnet import draws
  >>> key = jax.random.PRNGKey(0)
  >>> bool((draws.normal(key, (3, 5)) == jax.random.normal(key, (3, 5))).all())
  True
  >>> u = draws.uniform(key, (7,), jnp.float32, -2.0, 2.0)
  >>> bool((u == jax.random.uniform(key, (7,), jnp.float32, -2.0, 2.0)).all())
  True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

SMALLEST = 1 << 12
"""Every draw of up to this many entries comes from one program (per dtype) of this length."""
LARGEST = 1 << 22
"""Draws of more entries than this call ``jax.random`` for their own shape (one compile, but the
padding to a power of two would cost more than it saves)."""


def _drawn(sample, key, shape, dtype, scale):
    """``scale * sample(key, shape)``, from one draw of a power-of-two length when that is exact."""
    shape = tuple(int(n) for n in shape)
    dtype = jnp.result_type(float) if dtype is None else dtype
    size = math.prod(shape)
    if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable or size > LARGEST:
        out = sample(key, shape, dtype)
        return out if scale is None else scale * out
    length = max(SMALLEST, 1 << max(size - 1, 0).bit_length())
    flat = np.asarray(sample(key, (length,), dtype))[:size].reshape(shape)
    # the scale multiplies in the draw's own dtype, as ``scale * jax.random.normal(...)`` does; a
    # transfer, not ``jnp.asarray`` (which compiles a program per shape to stage the array), to where
    # jax.random would leave it: a committed key's devices, else the default device
    out = flat if scale is None else scale * flat
    return jax.device_put(out, key.sharding) if getattr(key, "committed", False) else jax.device_put(out)


def normal(key, shape, dtype=None, scale: float | None = None):
    """``jax.random.normal(key, shape, dtype)`` (times ``scale`` when given), the same numbers;
    ``dtype`` None is JAX's default float, as for ``jax.random.normal``."""
    return _drawn(jax.random.normal, key, shape, dtype, scale)


def uniform(key, shape, dtype=None, minval: float = 0.0, maxval: float = 1.0):
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, the same numbers (``dtype`` None:
    JAX's default float)."""
    return _drawn(lambda k, s, d: jax.random.uniform(k, s, d, minval, maxval), key, shape, dtype, None)
