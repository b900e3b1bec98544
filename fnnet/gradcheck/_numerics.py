"""The float64 arithmetic every check shares: casting a tree to float64 on the host, and the
largest absolute and relative difference of two arrays."""

from __future__ import annotations

import math

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
    """``(max |manual − reference|, that over the larger of the two's largest entry and floor)``.

    NaN and inf are failures, never passes: an entry that is not finite in one array where it is
    finite in the other (or a NaN against an inf, ``+inf`` against ``−inf``) makes both errors
    ``inf``. Entries that are the same non-finite value in both agree (a layer and ``jax.vjp``
    that both overflow at the same place); the others are compared as usual."""
    manual, reference = np.asarray(manual, np.float64), np.asarray(reference, np.float64)
    if manual.size == 0:
        return 0.0, 0.0
    if np.shape(manual) != np.shape(reference):
        return float("inf"), float("inf")
    finite = np.isfinite(manual) & np.isfinite(reference)
    if not finite.all():
        odd = ~finite
        same = (np.isnan(manual) & np.isnan(reference)) | (manual == reference)  # nan ≡ nan, inf ≡ inf
        if not same[odd].all():
            return float("inf"), float("inf")
        manual, reference = manual[finite], reference[finite]
        if manual.size == 0:
            return 0.0, 0.0
    abs_error = float(np.max(np.abs(manual - reference)))
    scale = max(float(np.max(np.abs(reference))), float(np.max(np.abs(manual))), floor, 1e-300)
    return abs_error, abs_error / scale


def worst(values) -> float:
    """The largest of ``values`` with NaN counted as the worst (``inf``): ``max(0.0, nan)`` is
    ``0.0`` in Python, which would let a NaN error pass as a perfect one."""
    out = 0.0
    for value in values:
        value = float(value)
        out = float("inf") if math.isnan(value) else max(out, value)
    return out


def nonfinite_entries(tree) -> tuple[int, int, list]:
    """``(number of NaN, number of inf, [(key path, its NaN, its inf), …] of the leaves that have
    any)`` over the floating leaves of ``tree``."""
    nans = infs = 0
    where = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if leaf is None or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        array = np.asarray(leaf)
        leaf_nans, leaf_infs = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if leaf_nans or leaf_infs:
            where.append((jax.tree_util.keystr(path), leaf_nans, leaf_infs))
        nans, infs = nans + leaf_nans, infs + leaf_infs
    return nans, infs, where


def nonfinite_counts(tree) -> tuple[int, int]:
    """``(number of NaN, number of inf)`` entries in the floating leaves of ``tree``."""
    return nonfinite_entries(tree)[:2]


def describe_counts(nans: int, infs: int) -> str:
    """``"3 nan and 1 inf"``, ``"2 nan"``, ``"1 inf"`` (``""`` for none)."""
    return " and ".join(part for part in (f"{nans} nan" if nans else "", f"{infs} inf" if infs else "") if part)


def largest_finite(tree, measure=lambda array: np.max(np.abs(array))) -> float:
    """The largest ``measure`` (default: the magnitude) over the floating leaves of ``tree``, its
    NaN and inf entries counted as 0 (``0.0`` for no floating entry)."""
    best = 0.0
    for leaf in jax.tree.leaves(tree):
        if leaf is None or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) or not np.size(leaf):
            continue
        array = np.asarray(leaf, np.float64)
        best = max(best, float(measure(np.where(np.isfinite(array), array, 0.0))))
    return best
