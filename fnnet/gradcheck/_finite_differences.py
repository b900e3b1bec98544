"""Finite differences, the check that needs no autodiff: central differences of the loss along
random directions of one parameter leaf, compared with the hand-written gradient's directional
derivative; a direction whose every step crosses a kink is skipped, not failed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

FD_EPS = 1e-6
FD_STEPS = (FD_EPS, FD_EPS / 10)
"""The finite-difference steps tried in turn along a direction that crosses a kink."""


def _rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a JAX PRNG key (host-side random directions)."""
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(jnp.result_type(key), jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data).astype(np.uint64).tolist())


def fd_error(scalar_fn, derivative, point, path_index, manual_leaf, key, directions, fd_rtol,
             floor: float = 0.0) -> tuple[float, int]:
    """(largest relative error of central differences along random directions of one leaf,
    number of directions skipped because finite differences are not trustworthy there).

    ``derivative(point, tangent)`` is the exact directional derivative of the reference
    (``jax.jvp``). Where the central difference disagrees with the hand-written gradient it
    is asked whether it also disagrees with that: if so the step crossed a kink (or drowned
    in round-off), at this step and at a ten times smaller one, and the direction is skipped;
    if not, the hand-written gradient is wrong along it.
    """
    leaves, treedef = jax.tree.flatten(point)
    leaf = np.asarray(leaves[path_index], np.float64)
    manual_leaf = np.asarray(manual_leaf, np.float64)
    norm = max(float(np.linalg.norm(manual_leaf)), floor)
    worst, checked, skipped = 0.0, 0, 0

    def at(step, v):
        new = list(leaves)
        new[path_index] = leaf + step * v
        return float(scalar_fn(jax.tree.unflatten(treedef, new)))

    def tangent(v):
        zeros = [np.zeros(np.shape(a), np.float64) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)
                 else np.zeros(np.shape(a), jax.dtypes.float0) for a in leaves]
        zeros[path_index] = v
        return jax.tree.unflatten(treedef, zeros)

    rng = _rng(key)
    for _ in range(4 * directions):
        if checked == directions:
            break
        v = rng.standard_normal(leaf.shape)
        analytic = float(np.vdot(manual_leaf, v))
        if not np.isfinite(analytic):  # a NaN or inf hand-written gradient: never a pass
            worst, checked = float("inf"), checked + 1
            continue
        reference = None
        for eps in FD_STEPS:
            numeric = (at(eps, v) - at(-eps, v)) / (2 * eps)
            # <g, v> for v ~ N(0, I) is typically of size |g|: use it so near-orthogonal v don't inflate
            scale = max(abs(numeric), abs(analytic), norm, 1e-12)
            error = abs(numeric - analytic) / scale
            if error <= fd_rtol:
                break
            if reference is None:
                reference = float(derivative(point, tangent(v)))
            if abs(numeric - reference) / scale <= fd_rtol:
                break  # finite differences are sound here, and the hand-written gradient disagrees
        else:
            skipped += 1  # a kink inside every step: this direction cannot judge the gradient
            continue
        worst, checked = max(worst, error), checked + 1
    return (worst if checked else float("nan")), skipped


def random_like(key, tree):
    """Standard normal float64 arrays shaped like the leaves of ``tree`` (drawn on the host)."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = _rng(key)
    return jax.tree.unflatten(treedef, [rng.standard_normal(jnp.shape(leaf)) for leaf in leaves])
