"""Pooling over the spatial axes of channels-last images, with hand-written backward passes.

A window of ``kh × kw`` taps slides by ``strides`` over the (padded) image. Both pools
are written with one strided slice per window tap, so forward and backward are the
same few lines for any window, stride and padding:

* max pool: ``y = max over the window``; backward routes ``dy`` to **one** maximum per
  window, the first in row-major window order (top-left first), which is the rule of
  ``jax.vjp`` of ``lax.reduce_window``. Ties are common (after a ReLU a whole window
  can be 0): a plain ``x == max`` mask would send ``dy`` to every tied entry and
  count it several times. Overlapping windows add their contributions. Padding is
  ``-inf``, so it is never the maximum of a window holding a real value.
* average pool: ``y = Σ window / (kh·kw)`` (padding counts as zeros, as in Flax's
  ``avg_pool`` and PyTorch's ``count_include_pad=True``); backward spreads
  ``dy / (kh·kw)`` back over each window.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from fnnet.layer import ExampleShape, Layer, as_shape, example_shape, make_layer, spec, split_batch
from fnnet.layers._checks import padding_spec, positive_ints, window_geometry


def _tiles(shape, window, strides, out_sizes) -> bool:
    """Whether the windows tile the (padded) image exactly: no overlap, no gap, nothing left over."""
    return tuple(strides) == tuple(window) and \
        all(o * k == n for o, k, n in zip(out_sizes, window, shape[1:3]))


def _windows(x_padded, window, strides, out_sizes):
    """The ``kh·kw`` taps of every window of a padded ``(N, H, W, C)`` batch, in row-major tap
    order: one strided slice ``(N, Ho, Wo, C)`` per tap (XLA fuses them into their consumer)."""
    return [x_padded[:, a:a + (out_sizes[0] - 1) * strides[0] + 1:strides[0],
                     b:b + (out_sizes[1] - 1) * strides[1] + 1:strides[1], :]
            for a in range(window[0]) for b in range(window[1])]


def _first_maximum(taps):
    """``(max, index of its first tap)`` over a list of same-shaped taps, by a running comparison:
    a later tap wins only when strictly greater (or NaN, as ``jnp.argmax`` treats NaN as the
    largest), so ties go to the first, as in ``jax.vjp`` of ``lax.reduce_window``."""
    best, first = taps[0], jnp.zeros(taps[0].shape, jnp.int8 if len(taps) < 128 else jnp.int32)
    for index, tap in enumerate(taps[1:], start=1):
        wins = (tap > best) | (jnp.isnan(tap) & ~jnp.isnan(best))
        best, first = jnp.where(wins, tap, best), jnp.where(wins, jnp.asarray(index, first.dtype), first)
    return best, first


def _scatter_windows(contributions, padded_shape, window, strides, out_sizes):
    """The transpose of :func:`_windows`: adds each tap's ``(N, Ho, Wo, C)`` contribution back
    where the tap came from."""
    n, _, _, c = padded_shape
    if _tiles(padded_shape, window, strides, out_sizes):  # each entry in exactly one window: interleave
        tiled = jnp.stack(contributions, axis=3).reshape(n, *out_sizes, window[0], window[1], c)
        return tiled.transpose(0, 1, 3, 2, 4, 5).reshape(padded_shape)
    dx = jnp.zeros(padded_shape, contributions[0].dtype)
    taps = iter(contributions)
    for a in range(window[0]):
        for b in range(window[1]):
            dx = dx.at[:, a:a + (out_sizes[0] - 1) * strides[0] + 1:strides[0],
                       b:b + (out_sizes[1] - 1) * strides[1] + 1:strides[1], :].add(next(taps))
    return dx


def _make_pool(kind: str, window, strides, padding) -> Layer:
    window = positive_ints(window, 2, "window", kind)
    strides = window if strides is None else positive_ints(strides, 2, "strides", kind)
    padding = padding_spec(padding, 2, kind)
    name = f"{kind}({window[0]}x{window[1]}" + ("" if strides == window else f", strides={strides}") + ")"
    fill = -jnp.inf if kind == "MaxPool" else 0.0

    def geometry(shape):
        if len(shape) != 3:
            raise ValueError(f"{name}: expected examples of shape (H, W, C), got {shape}")
        return window_geometry(shape[:2], window, strides, (1, 1), padding, name)

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        _, sizes = geometry(in_shape)
        return sizes + in_shape[-1:], ()

    def windows_of(x):
        if jnp.ndim(x) < 3:
            raise ValueError(f"{name}: expected input of shape (N, H, W, C) or (H, W, C), got {jnp.shape(x)}")
        lead = x.shape[:-3]
        flat = x.reshape((math.prod(lead),) + x.shape[-3:])
        pads, sizes = geometry(flat.shape[1:])
        padded = jnp.pad(flat, ((0, 0),) + tuple(pads) + ((0, 0),), constant_values=fill)
        return _windows(padded, window, strides, sizes), (lead, pads, sizes, padded.shape)

    def apply(params, x):
        """The reference autodiff differentiates: ``lax.reduce_window``, an independent implementation."""
        if jnp.ndim(x) < 3:
            raise ValueError(f"{name}: expected input of shape (N, H, W, C) or (H, W, C), got {jnp.shape(x)}")
        pads, _ = geometry(x.shape[-3:])
        full = (1,) * (x.ndim - 3) + window + (1,)
        step = (1,) * (x.ndim - 3) + strides + (1,)
        pad = ((0, 0),) * (x.ndim - 3) + tuple(pads) + ((0, 0),)
        if kind == "MaxPool":
            return lax.reduce_window(x, -jnp.inf, lax.max, full, step, pad)
        return lax.reduce_window(x, 0.0, lax.add, full, step, pad) / (window[0] * window[1])

    def forward(params, x):
        # residuals are arrays only (x itself: its static shape gives the geometry back), so they
        # pass through jax.custom_vjp and lax.scan unchanged
        taps, (lead, _, _, _) = windows_of(x)
        if kind == "MaxPool":
            y, first = _first_maximum(taps)  # the first maximum of each window (row-major)
        else:
            first, y = None, sum(taps) / (window[0] * window[1])
        return y.reshape(lead + y.shape[1:]), (first, x)

    def backward(params, residual, dy):
        first, x = residual
        lead = x.shape[:-3]
        pads, sizes = geometry(x.shape[-3:])
        padded_shape = (math.prod(lead), x.shape[-3] + sum(pads[0]), x.shape[-2] + sum(pads[1]), x.shape[-1])
        flat_dy = dy.reshape((math.prod(lead),) + dy.shape[len(lead):])
        taps = window[0] * window[1]
        if kind == "MaxPool":  # dy to the first maximum of each window only
            first = first.reshape(flat_dy.shape)
            zero = jnp.zeros((), dy.dtype)
            contributions = [jnp.where(first == tap, flat_dy, zero) for tap in range(taps)]
        else:                  # dy / (kh·kw) to every tap of each window
            contributions = [flat_dy / taps] * taps
        dx = _scatter_windows(contributions, padded_shape, window, strides, sizes)
        (top, _), (left, _) = pads
        dx = dx[:, top:top + x.shape[-3], left:left + x.shape[-2], :]
        return (), dx.reshape(x.shape).astype(x.dtype)

    return make_layer(name, init, apply, forward, backward,
                      doc=(MaxPool if kind == "MaxPool" else AvgPool).__doc__,
                      spec=spec(kind, window=window, strides=strides, padding=padding))


def MaxPool(window, strides=None, padding="VALID") -> Layer:
    """Max pooling over ``window`` (int or ``(h, w)``) with ``strides`` (default: the window).

    Backward: ``dy`` goes to the first maximum of each window (row-major), as ``jax.vjp``
    of ``lax.reduce_window`` does; see the module docstring for why ties matter.

    Example:
      >>> import jax.numpy as jnp, fnnet
      >>> pool = fnnet.MaxPool(2)
      >>> pool.init(None, (28, 28, 8))[0], pool.apply((), jnp.ones((1, 4, 4, 1))).shape
      ((14, 14, 8), (1, 2, 2, 1))
    """
    return _make_pool("MaxPool", window, strides, padding)


def AvgPool(window, strides=None, padding="VALID") -> Layer:
    """Average pooling over ``window`` with ``strides`` (default: the window); padding counts
    as zeros. Backward: ``dy / (kh·kw)`` spread over each window."""
    return _make_pool("AvgPool", window, strides, padding)


def _global_avg_init(key, in_shape):
    in_shape = as_shape(in_shape, "GlobalAvgPool")
    if len(in_shape) < 2:
        raise ValueError(f"GlobalAvgPool: expected examples with spatial axes and channels, e.g. "
                         f"(H, W, C), got {in_shape}")
    return in_shape[-1:], ExampleShape(in_shape)


def _global_avg_axes(params, x) -> tuple:
    """The spatial axes of ``x``: all of one example's axes but the channels (the example's shape
    as init recorded it; without it, examples are ``(H, W, C)`` images)."""
    example = example_shape(params)
    if example is not None:
        lead = split_batch(jnp.shape(x), example, "GlobalAvgPool")
        return tuple(range(len(lead), jnp.ndim(x) - 1))
    if jnp.ndim(x) < 3:
        raise ValueError(f"GlobalAvgPool: expected images (..., H, W, C), got {jnp.shape(x)}")
    return (jnp.ndim(x) - 3, jnp.ndim(x) - 2)


def _global_avg_apply(params, x):
    return jnp.mean(x, axis=_global_avg_axes(params, x))


def _global_avg_backward(params, x, dy):
    axes = _global_avg_axes(params, x)
    spatial = math.prod(x.shape[a] for a in axes)
    expanded = jnp.expand_dims(dy, axes)
    return params, jnp.broadcast_to(expanded / spatial, x.shape).astype(x.dtype)  # dx = dy / (H·W) everywhere


GlobalAvgPool: Layer = make_layer("GlobalAvgPool", _global_avg_init, _global_avg_apply,
                                  lambda params, x: (_global_avg_apply(params, x), x),
                                  _global_avg_backward, spec=spec("GlobalAvgPool"), doc="""Global average pooling: each channel averaged over all spatial positions.

``(..., H, W, C) -> (..., C)``: ``y_c = Σ_{h,w} x_{h,w,c} / (H·W)``; backward
``dx = dy / (H·W)`` at every position. ``init`` records one example's shape, so any
number of leading batch axes works (and ``jax.vmap`` over single examples), and so do
examples with one spatial axis (``(T, C) -> (C,)``); ``apply((), x)`` without those params
takes ``(H, W, C)`` images.

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> out_shape, params = fnnet.GlobalAvgPool.init(None, (5, 5, 4))
  >>> out_shape, fnnet.GlobalAvgPool.apply(params, jnp.ones((3, 2, 5, 5, 4))).shape
  ((4,), (3, 2, 4))
""")
