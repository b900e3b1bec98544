"""Gradients three ways: hand-written, autodiff, and hand-written behind ``jax.custom_vjp``.

All three take a model (a :class:`fnnet.Layer`) and a :class:`fnnet.Loss` and
return functions of ``(params, x, y)``, so they can be swapped and compared:

* :func:`value_and_grad` runs ``forward``, ``loss.grad`` and ``backward``: only
  hand-written derivatives, no autodiff at all.
* :func:`autodiff_value_and_grad` is ``jax.value_and_grad`` of ``apply`` and
  ``loss.value``: the reference the hand-written path is checked against.
* :func:`objective` is a scalar function whose ``jax.grad`` *is* the hand-written
  backward, so it composes with ``jit``, ``vmap`` and optax like any JAX function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.layer import Layer
from fnnet.losses import Loss


def value_and_grad(model: Layer, loss: Loss):
    """Returns ``f(params, x, y) -> (loss_value, grads)`` using the hand-written backward passes.

    The tutorial's backprop, in three lines::

        pred, residuals = model.forward(params, x)
        delta = loss.grad(pred, y)                          # e.g. (ŷ - y) / N
        grads, _ = model.backward(params, residuals, delta)

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(3), fnnet.Relu, fnnet.Dense(1))
      >>> _, params = model.init(jax.random.PRNGKey(0), (2,))
      >>> f = jax.jit(fnnet.value_and_grad(model, fnnet.losses.mse))
      >>> value, grads = f(params, jnp.ones((4, 2)), jnp.zeros((4, 1)))
      >>> jax.tree.structure(grads) == jax.tree.structure(params)
      True
    """

    def value_and_grads(params, x, y):
        pred, residuals = model.forward(params, x)
        value = loss.value(pred, y)
        grads, _ = model.backward(params, residuals, loss.grad(pred, y))
        return value, grads

    return value_and_grads


def autodiff_value_and_grad(model: Layer, loss: Loss):
    """Returns ``f(params, x, y) -> (loss_value, grads)`` through ``jax.value_and_grad``: the reference."""

    def total_loss(params, x, y):
        return loss.value(model.apply(params, x), y)

    return jax.value_and_grad(total_loss)


def _zero_cotangent(x):
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(jnp.shape(x), dtype=jax.dtypes.float0)


def objective(model: Layer, loss: Loss):
    """Returns ``f(params, x, y) -> loss``, a ``jax.custom_vjp`` whose gradient is the hand-written one.

    ``jax.grad(f)`` runs ``model.backward``, not autodiff of ``apply``, and the
    result composes with ``jax.jit``, ``jax.vmap`` (per-example gradients) and
    optax. The cotangent for ``x`` is the model's hand-written ``dx``; the one
    for the targets ``y`` (rarely wanted) comes from autodiff of ``loss.value``.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(3), fnnet.Tanh, fnnet.Dense(1))
      >>> _, params = model.init(jax.random.PRNGKey(0), (2,))
      >>> f = fnnet.objective(model, fnnet.losses.squared_error)
      >>> grads = jax.jit(jax.grad(f))(params, jnp.ones((4, 2)), jnp.zeros((4, 1)))
      >>> grads[0]["w"].shape
      (2, 3)
    """

    @jax.custom_vjp
    def f(params, x, y):
        return loss.value(model.apply(params, x), y)

    def f_fwd(params, x, y):
        pred, residuals = model.forward(params, x)
        return loss.value(pred, y), (params, residuals, pred, x, y)

    def f_bwd(saved, g):
        params, residuals, pred, x, y = saved
        dparams, dx = model.backward(params, residuals, g * loss.grad(pred, y))
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            dx = jnp.asarray(dx, jnp.result_type(x))
        else:
            dx = _zero_cotangent(x)
        if jnp.issubdtype(jnp.result_type(y), jnp.inexact):
            _, target_vjp = jax.vjp(lambda target: loss.value(pred, target), y)
            (dy,) = target_vjp(g)
        else:
            dy = _zero_cotangent(y)
        return dparams, dx, dy

    f.defvjp(f_fwd, f_bwd)
    return f


def per_example_grads(model: Layer, loss: Loss, *, grad: str = "manual"):
    """Returns ``f(params, x, y) -> grads`` with a leading example axis on every leaf.

    Each example's gradient is the hand-written backward (``grad="manual"``) or
    ``jax.grad`` (``grad="autodiff"``) run on that example alone, as a batch of
    one (``x[i][None]``), vectorised with ``jax.vmap``. Useful for gradient-noise
    statistics and DP-SGD-style per-example clipping.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(3), fnnet.Relu, fnnet.Dense(1))
      >>> _, params = model.init(jax.random.PRNGKey(0), (2,))
      >>> g = fnnet.per_example_grads(model, fnnet.losses.mse)(params, jnp.ones((5, 2)), jnp.ones((5, 1)))
      >>> g[0]["w"].shape
      (5, 2, 3)
    """
    if grad == "manual":
        grads_of = value_and_grad(model, loss)
    elif grad == "autodiff":
        grads_of = autodiff_value_and_grad(model, loss)
    else:
        raise ValueError(f"per_example_grads: grad must be 'manual' or 'autodiff', got {grad!r}")

    def per_example(params, x, y):
        def one(x_i, y_i):
            return grads_of(params, x_i[None], y_i[None])[1]

        return jax.vmap(one)(x, y)

    return per_example
