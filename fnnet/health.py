"""The health of a layer's output, as a practitioner reads it: mean, spread, dead ReLU units,
saturated sigmoid and tanh outputs, and norms. :func:`fnnet.trace` shows these per layer, the
training monitor (``fit(..., monitor=N)``) records them inside the compiled step, and
:func:`fnnet.doctor` reads them at initialisation.

Example:
  >>> import jax.numpy as jnp
  >>> from fnnet.health import activation_stats
  >>> stats = activation_stats("Relu", jnp.array([[0., 1.], [0., 2.]]))
  >>> float(stats["dead"]), float(stats["mean"])
  (0.5, 0.75)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

ELEMENTWISE = {"Relu": "relu", "Sigmoid": "σ", "Tanh": "tanh", "LeakyRelu": "leaky_relu", "Gelu": "gelu",
               "Identity": "id", "ReluSquared": "relu²", "SoftCap": "softcap"}
"""The activation kinds that act unit by unit (``y[n, j]`` depends on ``x[n, j]`` alone), and the
symbol :func:`fnnet.explain` writes for each."""
FRACTION_HIGH = 0.5
"""Dead or saturated fractions from this on are reported (the monitor, :func:`fnnet.doctor`)."""
SATURATION = 0.01
"""A sigmoid output within this of 0 or 1, or a tanh output within this of ±1, is saturated: its
derivative (``σ(1 − σ)``, ``1 − tanh²``) is below about 2 %, so little gradient passes it."""

def activation_stats(kind: str, y, *, weights=None) -> dict:
    """The health of a layer's output ``y`` (any leading batch axes, units on the last axis), as
    JAX scalars (so it runs inside a compiled step too): ``mean``, ``std``, ``min``, ``max``,
    ``zeros`` (fraction exactly 0); for ReLU and ReLU², ``dead`` (fraction of units, last axis, that are 0
    for every example of the batch); for sigmoid and tanh, ``saturated`` (fraction of outputs
    within :data:`SATURATION` of their limits). ``weights``: optional 0/1 per example, on the
    leading axis of ``y`` (a feature map's or a sequence's axes follow it); every statistic is
    then of the examples with weight 1 alone (a short batch's padding rows left out)."""
    leaves = [leaf for leaf in jax.tree.leaves(y) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    if not leaves or sum(jnp.size(leaf) for leaf in leaves) == 0:
        return {}

    def real(leaf):  # True at the entries of the examples with weight 1 (everywhere without weights)
        if weights is None:
            return jnp.ones(jnp.shape(leaf), bool)
        rows = jnp.asarray(weights) > 0
        return jnp.broadcast_to(jnp.reshape(rows, rows.shape + (1,) * (jnp.ndim(leaf) - rows.ndim)), jnp.shape(leaf))

    dtype = jnp.float64 if jnp.result_type(leaves[0]) == jnp.float64 else jnp.float32
    flat = jnp.concatenate([jnp.ravel(leaf) for leaf in leaves]).astype(dtype)
    kept = jnp.concatenate([jnp.ravel(real(leaf)) for leaf in leaves])
    count = jnp.maximum(jnp.sum(kept), 1).astype(dtype)

    def mean(values):  # over the kept entries (``where``: a padding row's inf or NaN stays out)
        return jnp.sum(jnp.where(kept, values, 0)) / count

    centre = mean(flat)
    stats = {"mean": centre, "std": jnp.sqrt(mean(jnp.square(flat - centre))),
             "min": jnp.min(jnp.where(kept, flat, jnp.inf)), "max": jnp.max(jnp.where(kept, flat, -jnp.inf)),
             "zeros": mean(flat == 0)}
    if kind in ("Relu", "ReluSquared") and not isinstance(y, (tuple, list)) and jnp.ndim(y) >= 1:
        silent = (y == 0) | ~real(y)  # dead: 0 for every real example
        stats["dead"] = jnp.mean(jnp.all(jnp.reshape(silent, (-1, jnp.shape(y)[-1])), axis=0))
    if kind == "Sigmoid":
        stats["saturated"] = mean(jnp.minimum(flat, 1 - flat) < SATURATION)
    if kind == "Tanh":
        stats["saturated"] = mean(jnp.abs(flat) > 1 - SATURATION)
    return stats

def norm(tree) -> float:
    """The Euclidean norm of all the floating entries of ``tree`` together (``0.0`` for none)."""
    total = 0.0
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            total += float(np.sum(np.square(np.asarray(leaf, np.float64))))
    return math.sqrt(total)
