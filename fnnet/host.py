"""Arrays made on the host and moved to the device, where JAX would compile a program per shape.

Outside ``jit`` JAX runs every operation as a compiled program of its own, compiled the first
time it meets a shape: ``jnp.zeros((3, 4))`` (a ``broadcast_in_dim``), ``jnp.asarray`` of a NumPy
array (a ``stage`` program), ``jnp.array(a, copy=True)`` (a ``copy``) each cost about 15 ms of a
CPU core for every new shape, far more than the arrays themselves. Building a model, an
optimizer's state or a checkpoint of many shapes spent most of its time compiling these. The
functions here give the same arrays (values, dtypes, devices) by a transfer or a device copy,
which compiles nothing; :mod:`fnnet.draws` does the same for random draws.

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from fnnet import host
  >>> bool((host.filled((2, 3), jnp.float32, 1.0) == jnp.ones((2, 3))).all())
  True
  >>> a = host.on_device(np.arange(3.0)); a.dtype, type(a).__name__
  (dtype('float32'), 'ArrayImpl')
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def on_device(array, *, copy: bool = True):
    """``array`` on the default device, as ``jnp.asarray`` gives it (the same values and the same
    canonical dtype: float64 becomes float32 unless x64 is on); a JAX array (or a tracer) is
    returned as it is. A NumPy array is copied first: ``jax.device_put`` may keep using a NumPy
    array's own memory on the CPU, and the caller may change it later (a torch tensor's
    ``.numpy()``, a buffer refilled in place). ``copy=False`` skips that copy, for data used only
    while the call that moved it runs (a data set during ``fit``: no second copy of its memory)."""
    if isinstance(array, jax.Array):
        return array
    return jax.device_put(np.array(array) if copy else np.asarray(array))


def filled(shape, dtype, value: float = 0.0):
    """``jnp.full(shape, value, dtype)`` (``dtype`` None: JAX's default float), made on the host."""
    dtype = jnp.result_type(float) if dtype is None else jax.dtypes.canonicalize_dtype(dtype)
    return jax.device_put(np.full(tuple(shape), value, dtype))


def owned_copy(tree):
    """A copy of every array in ``tree`` in new buffers on the same devices, so fnnet can donate
    them freely (the caller's arrays are never donated or changed)."""
    def copy(leaf):
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) and not leaf.is_fully_addressable:
            return jnp.array(leaf, copy=True)  # spread over several processes: a program copies each part
        return jax.device_put(leaf, may_alias=False)

    return jax.tree.map(copy, tree)
