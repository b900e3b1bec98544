"""Normalisation layers: BatchNorm (with running statistics as state), LayerNorm and RMSNorm.

Both normalise ``x̂ = (x - μ) / sqrt(σ² + ε)`` and then scale and shift,
``y = scale · x̂ + offset``. With ``m`` the number of values averaged, the full backward
through the mean and the variance (not the simplified one that treats them as
constants) is, per normalised group::

    dscale  = Σ dy · x̂            doffset = Σ dy
    dx̂ = dy · scale
    dx  = (1/m) · inv_std · (m · dx̂ - Σ dx̂ - x̂ · Σ(dx̂ · x̂))        inv_std = 1 / sqrt(σ² + ε)

LayerNorm normalises each example over its last axis; BatchNorm each channel (the last
axis) over the batch and all spatial positions. RMSNorm divides by the root mean square
alone (no mean is taken away, no offset added): ``x̂ = x · r``, ``r = 1 / sqrt(mean(x²) + ε)``,
``y = scale · x̂``, and backward ``dx = r · (dx̂ - x̂ · mean(dx̂ · x̂))``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fnnet import host
from fnnet.layer import Layer, as_shape, make_layer, spec
from fnnet.layers._checks import check_param_keys, param_dtype


class BatchStatistics(NamedTuple):
    """BatchNorm's residuals in training: ``x̂`` and ``1/σ`` of the batch's own statistics, which
    the backward goes through (the full formula of the module docstring)."""

    x_hat: Any
    inv_std: Any


class RunningStatistics(NamedTuple):
    """BatchNorm's residuals in evaluation: ``x̂`` and ``1/σ`` of the running statistics, constants
    to the backward (``dx = dy · scale / σ``)."""

    x_hat: Any
    inv_std: Any


def _check_scale_offset(name, params, x, keys=("scale", "offset")):
    check_param_keys(name, params, keys)
    features = params["scale"].shape[-1]
    if jnp.ndim(x) == 0 or x.shape[-1] != features:
        raise ValueError(f"{name}: expected input of shape (..., {features}), got {jnp.shape(x)}")


def _init_scale_offset(name, in_shape, dtype):
    in_shape = as_shape(in_shape, name)
    if len(in_shape) == 0:
        raise ValueError(f"{name}: expected an input with a feature axis, got in_shape ()")
    features, dtype = in_shape[-1], param_dtype(dtype)
    return in_shape, {"scale": host.filled((features,), dtype, 1.0), "offset": host.filled((features,), dtype)}


def _normalized_backward(x_hat, inv_std, scale, dy, axes):
    """``(dscale, doffset, dx)`` through ``y = scale · x̂ + offset`` and ``x̂ = (x - μ) · inv_std``
    with μ and σ² taken over ``axes``: the full backward through the mean and the variance."""
    m = math.prod(dy.shape[a] for a in axes)
    param_axes = tuple(range(dy.ndim - 1))
    dscale = jnp.sum(dy * x_hat, axis=param_axes)
    doffset = jnp.sum(dy, axis=param_axes)
    dx_hat = dy * scale
    if tuple(axes) == param_axes:
        # BatchNorm normalises over the same axes its parameters are shared over, so the two sums
        # are the ones just taken: Σ dx̂ = scale · doffset, Σ dx̂ · x̂ = scale · dscale (two passes
        # over the activations fewer, 2-3x faster on a CNN's feature maps)
        lead = (None,) * (dy.ndim - 1)
        sum_dx_hat, sum_dx_hat_x_hat = scale * doffset[lead], scale * dscale[lead]
    else:
        sum_dx_hat = jnp.sum(dx_hat, axis=axes, keepdims=True)
        sum_dx_hat_x_hat = jnp.sum(dx_hat * x_hat, axis=axes, keepdims=True)
    dx = inv_std / m * (m * dx_hat - sum_dx_hat - x_hat * sum_dx_hat_x_hat)
    return dscale, doffset, dx


def LayerNorm(epsilon: float = 1e-5, dtype=None, *, use_bias: bool = True) -> Layer:
    """Normalises each example over its last axis, then ``y = scale · x̂ + offset``.

    Params ``{"scale": (F,), "offset": (F,)}`` (ones and zeros); ``use_bias=False`` leaves the
    offset out (``y = scale · x̂``, params ``{"scale"}``: nanoGPT's ``LayerNorm(bias=False)``).
    Backward: the full formula of the module docstring with ``m = F``, row by row.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> norm = fnnet.LayerNorm()
      >>> _, params = norm.init(jax.random.PRNGKey(0), (4,))
      >>> y = norm.apply(params, jnp.array([[1., 2., 3., 4.]]))
      >>> round(float(y.mean()), 6), round(float(y.std()), 3)
      (0.0, 1.0)
    """
    name = "LayerNorm" if use_bias else "LayerNorm(no bias)"
    keys = ("scale", "offset") if use_bias else ("scale",)

    def init(key, in_shape):
        out_shape, params = _init_scale_offset(name, in_shape, dtype)
        return out_shape, {k: params[k] for k in keys}

    def affine(params, x_hat):
        lead = (None,) * (x_hat.ndim - 1)
        y = x_hat * params["scale"][lead]
        return y + params["offset"][lead] if use_bias else y

    def normalize(x):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        inv_std = jax.lax.rsqrt(var + epsilon)
        return (x - mean) * inv_std, inv_std

    def apply(params, x):
        _check_scale_offset(name, params, x, keys)
        return affine(params, normalize(x)[0])

    def forward(params, x):
        _check_scale_offset(name, params, x, keys)
        x_hat, inv_std = normalize(x)
        return affine(params, x_hat), (x_hat, inv_std)

    def backward(params, residuals, dy):
        x_hat, inv_std = residuals
        scale = params["scale"][(None,) * (dy.ndim - 1)]
        dscale, doffset, dx = _normalized_backward(x_hat, inv_std, scale, dy, axes=(dy.ndim - 1,))
        grads = {"scale": dscale, "offset": doffset}  # without the offset, its gradient is not asked for
        return {k: grads[k].astype(params[k].dtype) for k in keys}, dx.astype(x_hat.dtype)

    return make_layer(name, init, apply, forward, backward, doc=LayerNorm.__doc__,
                      spec=spec("LayerNorm", epsilon=epsilon, use_bias=use_bias))


def BatchNorm(momentum: float = 0.9, epsilon: float = 1e-5, dtype=None) -> Layer:
    """Batch normalisation over the batch and spatial axes, per channel (the last axis).

    Params ``{"scale": (C,), "offset": (C,)}``; state ``{"mean": (C,), "var": (C,)}``, the
    running statistics (zeros and ones at init). In training (``train=True``) it normalises
    with the batch's mean and (biased) variance, backpropagates through them (the full
    formula of the module docstring, ``m`` = values per channel in the batch), and returns
    the state ``running ← momentum · running + (1 - momentum) · batch``. In evaluation it
    normalises with the running statistics, which are then constants.

    Under ``fit(..., mesh=...)`` the batch mean and variance are taken over the *global*
    batch (XLA inserts the cross-device reductions), so 4 devices give the result of 1.
    A training batch needs more than one value per channel.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> bn = fnnet.BatchNorm()
      >>> _, params, state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (3,))
      >>> x = jnp.arange(12.).reshape(4, 3)
      >>> y, state = fnnet.apply_with_state(bn, params, state, x, train=True)
      >>> [round(float(v), 4) for v in y.mean(0)], [round(float(v), 4) for v in state["mean"]]
      ([0.0, 0.0, 0.0], [0.45, 0.55, 0.65])

    Long: a layer is its functions as closures (init, apply, forward, backward, stateful twins); each is short.
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"BatchNorm: momentum must be in [0, 1), got {momentum!r}")
    name = f"BatchNorm(momentum={momentum:g})"

    def init(key, in_shape):
        return _init_scale_offset(name, in_shape, dtype)

    def stateful_init(key, in_shape):
        out_shape, params = init(key, in_shape)
        features = out_shape[-1]
        state_dtype = params["scale"].dtype
        return out_shape, params, {"mean": host.filled((features,), state_dtype),
                                   "var": host.filled((features,), state_dtype, 1.0)}

    def apply(params, x):
        raise ValueError(f"{name} normalises with running statistics it keeps as state: call "
                         f"fnnet.apply_with_state(model, params, state, x, train=False), or use "
                         f"fnnet.train.evaluate / predict with the trained state")

    def stateful_forward(params, state, x, *, key=None, train=False):
        _check_scale_offset(name, params, x)
        axes = tuple(range(x.ndim - 1))
        lead = (None,) * (x.ndim - 1)
        if train:
            if math.prod(x.shape[:-1]) < 2:  # as PyTorch: one (H, W, C) image has H·W values per channel
                raise ValueError(f"{name}: training mode needs more than one value per channel (batch "
                                 f"statistics over all axes but the channels), got input of shape "
                                 f"{jnp.shape(x)}")
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean[lead]), axis=axes)
            new_state = {"mean": momentum * state["mean"] + (1 - momentum) * mean.astype(state["mean"].dtype),
                         "var": momentum * state["var"] + (1 - momentum) * var.astype(state["var"].dtype)}
        else:
            mean, var, new_state = state["mean"].astype(x.dtype), state["var"].astype(x.dtype), state
        inv_std = jax.lax.rsqrt(var + epsilon)
        x_hat = (x - mean[lead]) * inv_std[lead]
        y = x_hat * params["scale"][lead] + params["offset"][lead]
        # the residuals' type records the mode, so backward knows which formula applies
        return y, (BatchStatistics if train else RunningStatistics)(x_hat, inv_std), new_state

    def stateful_apply(params, state, x, *, key=None, train=False):
        y, _, state = stateful_forward(params, state, x, key=key, train=train)
        return y, state

    def backward(params, residuals, dy):
        if not isinstance(residuals, (BatchStatistics, RunningStatistics)):
            raise ValueError(f"{name}: backward expects the residuals of its stateful_forward (BatchStatistics "
                             f"or RunningStatistics), got {type(residuals).__name__}")
        x_hat, inv_std = residuals
        lead = (None,) * (dy.ndim - 1)
        scale = params["scale"][lead]
        axes = tuple(range(dy.ndim - 1))
        if isinstance(residuals, BatchStatistics):  # training: through the batch mean and variance
            dscale, doffset, dx = _normalized_backward(x_hat, inv_std[lead], scale, dy, axes)
        else:                                       # evaluation: the running statistics are constants
            dscale, doffset = jnp.sum(dy * x_hat, axis=axes), jnp.sum(dy, axis=axes)
            dx = dy * scale * inv_std[lead]
        return ({"scale": dscale.astype(params["scale"].dtype), "offset": doffset.astype(params["offset"].dtype)},
                dx.astype(x_hat.dtype))

    return make_layer(name, init, apply, lambda params, x: (apply(params, x), None), backward, doc=BatchNorm.__doc__,
                      stateful_init=stateful_init, stateful_apply=stateful_apply,
                      stateful_forward=stateful_forward, spec=spec("BatchNorm", momentum=momentum, epsilon=epsilon))


def rms_normalize(x, epsilon: float):
    """``(x̂, r)``: ``x̂ = x · r`` with ``r = 1 / sqrt(mean(x²) + ε)`` over the last axis (``r`` keeps
    it, size 1). What :func:`RMSNorm` and QK-norm in :func:`fnnet.CausalSelfAttention` do."""
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + epsilon)
    return x * inv_rms, inv_rms


def rms_normalize_backward(x_hat, inv_rms, dx_hat):
    """``dx`` through :func:`rms_normalize`, from ``dx̂``: since ``∂r/∂x_j = -r³ x_j / F``,
    ``dx = r · dx̂ - x · r³ · mean(dx̂ · x) = r · (dx̂ - x̂ · mean(dx̂ · x̂))``."""
    return inv_rms * (dx_hat - x_hat * jnp.mean(dx_hat * x_hat, axis=-1, keepdims=True))


def RMSNorm(epsilon: float = 1e-6, dtype=None, *, use_scale: bool = True) -> Layer:
    """Root-mean-square normalisation over the last axis: ``y = scale · x / sqrt(mean(x²) + ε)``.

    As LayerNorm without the mean taken away and without an offset (Zhang & Sennrich 2019; Llama's
    and modded-nanogpt's norm), so one reduction fewer. Params ``{"scale": (F,)}`` (ones), or
    ``()`` with ``use_scale=False`` (modded-nanogpt's parameter-free ``F.rms_norm``). PyTorch's
    ``nn.RMSNorm(F, eps=epsilon)`` computes the same.

    Backward, with ``x̂ = x · r`` and ``r = 1 / sqrt(mean(x²) + ε)``::

        dscale = Σ dy · x̂          dx̂ = dy · scale
        dx     = r · (dx̂ - x̂ · mean(dx̂ · x̂))       (through r: ∂r/∂x_j = -r³ x_j / F)

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> norm = fnnet.RMSNorm()
      >>> _, params = norm.init(jax.random.PRNGKey(0), (4,))
      >>> y = norm.apply(params, jnp.array([[1., -1., 2., -2.]]))
      >>> round(float(jnp.sqrt(jnp.mean(y ** 2))), 4)
      1.0
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
        raise ValueError(f"RMSNorm: epsilon must be a number >= 0, got {epsilon!r}")
    if not isinstance(use_scale, bool):
        raise ValueError(f"RMSNorm: use_scale must be True or False, got {use_scale!r}")
    name = "RMSNorm" if use_scale else "RMSNorm(no scale)"

    def init(key, in_shape):
        out_shape, params = _init_scale_offset(name, in_shape, dtype)
        return out_shape, {"scale": params["scale"]} if use_scale else ()

    def check(params, x):
        if use_scale:
            _check_scale_offset(name, params, x, ("scale",))
        elif params != ():
            raise ValueError(f"{name}: takes no params (()), got {type(params).__name__}")
        elif jnp.ndim(x) == 0:
            raise ValueError(f"{name}: expected an input with a feature axis, got shape ()")

    def forward(params, x):
        check(params, x)
        x_hat, inv_rms = rms_normalize(x, epsilon)
        y = x_hat * params["scale"][(None,) * (x.ndim - 1)] if use_scale else x_hat
        return y, (x_hat, inv_rms)

    def backward(params, residuals, dy):
        x_hat, inv_rms = residuals
        if not use_scale:
            return (), rms_normalize_backward(x_hat, inv_rms, dy).astype(x_hat.dtype)
        # through  y = scale · x̂:  dscale = Σ dy·x̂ over every example, dx̂ = dy · scale
        dscale = jnp.sum(dy * x_hat, axis=tuple(range(dy.ndim - 1)))
        dx = rms_normalize_backward(x_hat, inv_rms, dy * params["scale"][(None,) * (dy.ndim - 1)])
        return {"scale": dscale.astype(params["scale"].dtype)}, dx.astype(x_hat.dtype)

    return make_layer(name, init, lambda params, x: forward(params, x)[0], forward, backward, doc=RMSNorm.__doc__,
                      spec=spec("RMSNorm", epsilon=epsilon, use_scale=use_scale))
