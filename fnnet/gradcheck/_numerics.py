"""The float64 arithmetic every check shares: casting a tree to float64 on the host, and the
largest absolute and relative difference of two arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def to_float64(tree):
    """Floating leaves as float64 NumPy arrays (host-side: no per-shape compilation), others as they are."""
    def cast(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return leaf
        dtype = jnp.result_type(leaf)
        return np.asarray(leaf, np.float64) if jnp.issubdtype(dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


def errors(manual, reference, floor: float = 0.0) -> tuple[float, float]:
    """``(max |manual − reference|, that over the larger of the two's largest entry and floor)``."""
    manual, reference = np.asarray(manual, np.float64), np.asarray(reference, np.float64)
    if manual.size == 0:
        return 0.0, 0.0
    abs_error = float(np.max(np.abs(manual - reference)))
    scale = max(float(np.max(np.abs(reference))), float(np.max(np.abs(manual))), floor, 1e-300)
    return abs_error, abs_error / scale
