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

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.layer import Layer, apply_with_state, is_stateful, layer_name
from fnnet.losses import Loss, check_targets
from fnnet.tape import child_backward, child_forward, is_recording, recording


GRAD_MODES = ("manual", "autodiff")


def check_grad_mode(grad: str) -> None:
    """Raises ValueError unless ``grad`` is ``"manual"`` or ``"autodiff"``."""
    if grad not in GRAD_MODES:
        raise ValueError(f"grad must be 'manual' (hand-written backward) or 'autodiff' (jax.grad), "
                         f"got {grad!r}")


def check_compute_dtype(compute_dtype) -> None:
    """Raises ValueError unless ``compute_dtype`` is ``None`` or a floating dtype (bfloat16,
    float16, float32, float64): mixed precision computes in floats, never in integers."""
    if compute_dtype is None:
        return
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise ValueError(f"compute_dtype must be a floating dtype such as jnp.bfloat16, got {compute_dtype!r}") \
            from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype such as jnp.bfloat16 or jnp.float32, got "
                         f"{dtype} (forward and backward passes compute in it)")


def _cast_floats(tree, dtype):
    """Casts the floating leaves of ``tree`` to ``dtype`` (``None``: unchanged)."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
                        else a, tree)


def like_params(grads, params):
    """Each gradient leaf in its parameter's dtype (bfloat16 params get bfloat16 gradients)."""
    return jax.tree.map(lambda g, p: jnp.asarray(g).astype(jnp.result_type(p)), grads, params)


def per_example_loss(loss: Loss, pred, target):
    """``loss.value`` of each example alone: shape ``pred.shape[:1]``."""
    return jax.vmap(lambda p, t: loss.value(p[None], t[None]))(pred, target)


def loss_and_grads(model: Layer, loss: Loss, params, x, y, *, grad: str = "manual", weights=None,
                   compute_dtype=None, state=(), key=None, train: bool = True):
    """``(loss value, grads, prediction, new model state)`` of one batch: the one gradient
    implementation of fnnet, used by :func:`value_and_grad`, :func:`autodiff_value_and_grad`,
    :func:`per_example_grads` and every training step.

    Args:
      grad: ``"manual"`` (``forward``, ``loss.grad``, ``backward``: no autodiff) or
        ``"autodiff"`` (``jax.value_and_grad`` of ``apply`` and ``loss.value``).
      weights: optional 0/1 per example (shape ``(B,)``) that masks padding: the loss
        and the gradient are the mean over the examples with weight 1.
      compute_dtype: e.g. ``jnp.bfloat16``: params and ``x`` are cast to it for the
        forward and backward passes (mixed precision, float32 master params); the
        gradients come back in each parameter's own dtype.
      state, key, train: for a model with state or randomness (BatchNorm, Dropout; see
        :mod:`fnnet.layer`); ``()``, ``None`` and ``True`` for a plain model.

    Gradients always have their parameter's dtype, whatever the input's dtype.
    """
    check_grad_mode(grad)
    check_compute_dtype(compute_dtype)
    compute_params, x = _cast_floats(params, compute_dtype), _cast_floats(x, compute_dtype)
    count = None if weights is None else jnp.maximum(jnp.sum(weights), 1)

    def masked_value(pred):
        if weights is None:
            return loss.value(pred, y)
        return jnp.sum(per_example_loss(loss, pred, y) * weights) / count

    if grad == "manual":
        # while recording, each layer's backward is checked against its input's shape too
        with (recording() if not is_recording() else contextlib.nullcontext()):
            pred, residuals, new_state = child_forward(None, model, compute_params, state, x, key=key, train=train)
            _check_eager_targets(loss, y, pred)
            delta = loss.grad(pred, y)
            if weights is not None:  # loss.grad averages over the B rows; reweight to the valid ones
                scale = (weights * (weights.shape[0] / count)).astype(delta.dtype)
                delta = delta * scale.reshape(scale.shape + (1,) * (delta.ndim - 1))
            grads, _ = child_backward(None, model, compute_params, residuals, delta)
        return masked_value(pred), like_params(grads, params), pred, new_state

    def total(p):
        pred, new_state = apply_with_state(model, _cast_floats(p, compute_dtype), state, x, key=key,
                                           train=train)
        return masked_value(pred), (pred, new_state)

    (value, (pred, new_state)), grads = jax.value_and_grad(total, has_aux=True)(params)
    _check_eager_targets(loss, y, pred)
    return value, like_params(grads, params), pred, new_state


def _check_eager_targets(loss: Loss, y, pred) -> None:
    """Outside ``jax.jit`` (concrete targets), the check :func:`fnnet.train.fit` makes: labels
    within the model's classes, targets in [0, 1] for the binary losses. Inside a compiled step
    the values are unknown; ``fit`` checked them before compiling."""
    if isinstance(y, jax.core.Tracer) or isinstance(pred, jax.core.Tracer):
        return
    check_targets(loss, y, tuple(jnp.shape(pred)[1:]), "value_and_grad")


def _value_and_grad(model: Layer, loss: Loss, grad: str, with_state: bool, where: str):
    if with_state:
        def value_and_grads_with_state(params, state, x, y, *, key=None, train: bool = True):
            value, grads, _, new_state = loss_and_grads(model, loss, params, x, y, grad=grad, state=state,
                                                        key=key, train=train)
            return (value, new_state), grads

        return value_and_grads_with_state
    if is_stateful(model):
        raise ValueError(f"{where}: {layer_name(model)} has state or randomness (BatchNorm, Dropout): use "
                         f"{where}(model, loss, with_state=True), which returns fn(params, state, x, y, *, "
                         f"key=None, train=True) -> ((value, new_state), grads); the state comes from "
                         f"fnnet.init_with_state")

    def value_and_grads(params, x, y):
        value, grads, _, _ = loss_and_grads(model, loss, params, x, y, grad=grad)
        return value, grads

    return value_and_grads


def value_and_grad(model: Layer, loss: Loss, *, with_state: bool = False):
    """Returns ``f(params, x, y) -> (loss_value, grads)`` using the hand-written backward passes.

    The tutorial's backprop, in three lines::

        pred, residuals = model.forward(params, x)
        delta = loss.grad(pred, y)                          # e.g. (ŷ - y) / N
        grads, _ = model.backward(params, residuals, delta)

    With ``with_state=True`` (required for a model with BatchNorm or Dropout) it returns
    ``f(params, state, x, y, *, key=None, train=True) -> ((loss_value, new_state), grads)``:
    ``state`` as :func:`fnnet.init_with_state` (or ``TrainState.model_state``) gives it, ``key``
    the PRNG key for dropout, ``train`` the mode (batch statistics and dropout on).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(3), fnnet.Relu, fnnet.Dense(1))
      >>> _, params = model.init(jax.random.PRNGKey(0), (2,))
      >>> f = jax.jit(fnnet.value_and_grad(model, fnnet.losses.mse))
      >>> value, grads = f(params, jnp.ones((4, 2)), jnp.zeros((4, 1)))
      >>> jax.tree.structure(grads) == jax.tree.structure(params)
      True
      >>> bn_model = fnnet.serial(fnnet.Dense(3), fnnet.BatchNorm(), fnnet.Dense(1))
      >>> _, params, state = fnnet.init_with_state(bn_model, jax.random.PRNGKey(0), (2,))
      >>> f = fnnet.value_and_grad(bn_model, fnnet.losses.mse, with_state=True)
      >>> (value, new_state), grads = f(params, state, jnp.ones((4, 2)), jnp.zeros((4, 1)))
      >>> jax.tree.structure(new_state) == jax.tree.structure(state)
      True
    """
    return _value_and_grad(model, loss, "manual", with_state, "value_and_grad")


def autodiff_value_and_grad(model: Layer, loss: Loss, *, with_state: bool = False):
    """Returns ``f(params, x, y) -> (loss_value, grads)`` through ``jax.value_and_grad``: the reference.

    ``with_state=True``: ``f(params, state, x, y, *, key=None, train=True) -> ((value, new_state), grads)``,
    as :func:`value_and_grad`."""
    return _value_and_grad(model, loss, "autodiff", with_state, "autodiff_value_and_grad")


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
      >>> first = grads[0]
      >>> first["w"].shape
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
        return like_params(dparams, params), dx, dy

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
      >>> per_example = g[0]
      >>> per_example["w"].shape
      (5, 2, 3)
    """
    if grad not in GRAD_MODES:
        raise ValueError(f"per_example_grads: grad must be 'manual' or 'autodiff', got {grad!r}")
    if is_stateful(model):
        raise ValueError(f"per_example_grads: {layer_name(model)} has a layer with state or randomness "
                         f"(BatchNorm, Dropout): batch statistics are not per-example, and a dropout "
                         f"mask is drawn per batch; use a model without them (e.g. LayerNorm)")

    def per_example(params, x, y):
        def one(x_i, y_i):
            return loss_and_grads(model, loss, params, x_i[None], y_i[None], grad=grad)[1]

        return jax.vmap(one)(x, y)

    return per_example
