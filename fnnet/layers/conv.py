"""Convolutions, channels-last, and their hand-written backward passes.

For one spatial axis, with kernel size ``K``, stride ``S``, dilation ``D`` and padding
``(lo, hi)``, the forward pass is the correlation the tutorials write::

    y[n, o, co] = b[co] + Σ_k Σ_ci x_pad[n, o·S + k·D, ci] · w[k, ci, co]

and the backward pass is two more convolutions and a sum::

    db = Σ dy                                        (over examples and positions)
    dW = a correlation of the input with dy:         dW[k, ci, co] = Σ_n Σ_o x_pad[n, o·S + k·D, ci] · dy[n, o, co]
    dx = a transposed convolution of dy with the flipped kernel:
         dx = conv(dilate(dy, S), flip(W)ᵀ) with padding (K_eff - 1 - lo, ...)

The forward pass and ``dx`` are plain ``lax.conv_general_dilated`` calls in the canonical
NHWC / HWIO layout (XLA's CPU backend runs those fastest, also inside ``lax.scan``);
on the CPU ``dW`` is one matrix product of the input's patches (im2col) with ``dy``, which
that backend runs faster than the convolution form of it at moderate sizes
(``benchmarks/profile_cnn.py``; when, in :func:`fnnet.xla_options.im2col_dw`). The file reads
as the backward does: the forward, the backward in stages, then ``dW`` (plain form, then the
im2col fast path) and ``dx``, and last the layer constructors. Feature groups (``feature_group_count``, depthwise when it
equals the input channels) split the channels into independent blocks; ``dW`` then uses a
convolution with ``batch_group_count``.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from fnnet import initializers, xla_options
from fnnet.layer import Layer, as_shape, make_layer, spec
from fnnet.layers._checks import (check_param_keys, explicit_padding, padding_spec, param_dtype, positive_ints,
                                  window_geometry)

_SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _flatten_batch(x, rank: int):
    """``x`` as exactly one batch axis + ``rank`` spatial axes + channels, and how to undo it."""
    lead = x.shape[:x.ndim - rank - 1]
    flat = x.reshape((math.prod(lead),) + x.shape[x.ndim - rank - 1:])
    return flat, lambda y: y.reshape(lead + y.shape[1:])


def _common_dtype(x, w):
    """``x`` and ``w`` in one floating dtype, the one ``x @ w`` would give (bfloat16 params with
    float32 images compute in float32; uint8 pixels in the params' float dtype):
    ``lax.conv_general_dilated`` itself refuses mixed dtypes."""
    dtype = jnp.result_type(x, w)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    return x.astype(dtype), w.astype(dtype)


def _conv_forward(params, x, pads, strides, dilation, groups, rank):
    """The layer's forward on checked params, ``x (..., s.., Cin)`` -> ``y (..., o.., Cout)``,
    ``pads`` the explicit ``(lo, hi)`` of each spatial axis."""
    # stage 1: one batch axis; x and W in one dtype (mixed dtypes promote, as x @ w does in Dense)
    flat, restore = _flatten_batch(x, rank)
    flat, w = _common_dtype(flat, params["w"])
    # stage 2: y[n, o, co] = Σ_k Σ_ci x_pad[n, o·S + k·D, ci] · W[k, ci, co]
    y = lax.conv_general_dilated(flat, w, strides, pads, rhs_dilation=dilation,
                                 dimension_numbers=_SPECS[rank], feature_group_count=groups)
    # stage 3: + b
    if "b" in params:
        y = y + params["b"][(None,) * (y.ndim - 1)]
    # stage 4: the leading batch axes put back
    return restore(y)


def _conv_backward(params, x, dy, kernel, strides, padding, dilation, groups, rank):
    """:func:`_conv_forward`'s four stages in reverse, each under the forward line it differentiates:
    ``(params, x, dy)`` -> ``(dparams, dx)``, ``dparams`` with ``params``' keys."""
    pads = explicit_padding(padding, x.shape[x.ndim - rank - 1:x.ndim - 1], kernel, strides, dilation)
    w = params["w"]
    # stage 4, through  return restore(y):  dy with one batch axis, and x as stage 1 read it,
    #   flat, restore = _flatten_batch(x, rank);  flat, w = _common_dtype(flat, params["w"])
    flat_x, restore = _flatten_batch(x, rank)
    flat_dy, _ = _flatten_batch(dy, rank)
    flat_x, compute_w = _common_dtype(flat_x, w)
    flat_dy = flat_dy.astype(flat_x.dtype)
    # stage 3, through  y = y + params["b"][(None,) * (y.ndim - 1)]:  db = Σ dy over every example and position
    db = jnp.sum(flat_dy, axis=tuple(range(rank + 1))) if "b" in params else None
    # stage 2, through  y = lax.conv_general_dilated(flat, w, strides, pads, rhs_dilation=dilation, ...),
    #   y[n, o, co] = Σ_k Σ_ci x_pad[n, o·S + k·D, ci] · W[k, ci, co]:
    #   dW[k, ci, co] = Σ_n Σ_o x_pad[n, o·S + k·D, ci] · dy[n, o, co]   (x correlated with dy)
    dw = conv_kernel_grad(flat_x, flat_dy, kernel, strides, pads, dilation, groups, rank)
    #   dx_pad[n, o·S + k·D, ci] += dy[n, o, co] · W[k, ci, co]   (dy dilated by S, convolved with the flipped W)
    dx = conv_input_grad(flat_dy, compute_w, flat_x.shape[1:1 + rank], strides, pads, dilation, groups, rank)
    # stage 1, through  flat, restore = _flatten_batch(x, rank);  flat, w = _common_dtype(flat, params["w"]):
    #   each gradient back in the shape and dtype of what it is the gradient of
    grads = {"w": dw.astype(w.dtype)}
    if db is not None:
        grads["b"] = db.astype(params["b"].dtype)
    return grads, restore(dx).astype(x.dtype)


_IM2COL_MAX_BYTES = 32 * 2**20  # above this the patches' memory traffic costs more than the product saves


def conv_kernel_grad(x, dy, kernel, strides, pads, dilation, groups, rank):
    """``dW``: the correlation of the input with ``dy``,
    ``dW[k, ci, co] = Σ_n Σ_o x_pad[n, o·S + k·D, ci] · dy[n, o, co]``.

    The plain form, on every backend, is :func:`_kernel_grad_convolution`: a canonical
    convolution in which the input channels play the batch, the examples the features, and ``dy``
    is the kernel (``batch_group_count`` for groups). Without feature groups, while the input's
    patches fit in 32 MiB and where :func:`fnnet.xla_options.im2col_dw` says so (on the CPU,
    unless the program compiles with XLA's own convolutions; its docstring has when and why), it
    is instead one matrix product, :func:`_kernel_grad_im2col`, the faster form there.
    """
    taps = math.prod(kernel)
    patch_bytes = math.prod(dy.shape[:-1]) * taps * x.shape[-1] * x.dtype.itemsize
    if groups == 1 and patch_bytes <= _IM2COL_MAX_BYTES and xla_options.im2col_dw():
        # optimisation, CPU only: the same sum as one matrix product over im2col columns
        return _kernel_grad_im2col(x, dy, kernel, strides, pads, dilation, rank)
    return _kernel_grad_convolution(x, dy, kernel, strides, pads, dilation, groups, rank)


def _kernel_grad_convolution(x, dy, kernel, strides, pads, dilation, groups, rank):
    """The readable form of ``dW``, on every backend: ``x`` correlated with ``dy`` as one
    convolution (the input channels as its batch, the examples as its features, ``dy`` as its
    kernel dilated by the strides)."""
    # x (N, s.., Cin) -> (Cin, s.., N);  dy (N, o.., Cout) -> (o.., N, Cout)
    lhs = jnp.moveaxis(x, (0, rank + 1), (rank + 1, 0))
    rhs = jnp.moveaxis(dy, 0, rank)
    pads_w = []
    for size, k, s, d, (lo, _), o in zip(x.shape[1:1 + rank], kernel, strides, dilation, pads,
                                         dy.shape[1:1 + rank]):
        pads_w.append((lo, (k - 1) * d + (o - 1) * s + 1 - size - lo))
    # out (Cin/G, k.., Cout) -> (k.., Cin/G, Cout)
    out = lax.conv_general_dilated(lhs, rhs, dilation, pads_w, rhs_dilation=strides,
                                   dimension_numbers=_SPECS[rank], batch_group_count=groups)
    return jnp.moveaxis(out, 0, rank)


def _kernel_grad_im2col(x, dy, kernel, strides, pads, dilation, rank):
    """``dW = columnsᵀ · dy``: ``columns`` (im2col) holds, for every example and output position,
    the input values under each kernel tap (one strided slice of ``x_pad`` per tap, side by
    side), so the correlation is one product contracting over all examples and positions.

    With few columns (a first layer on grey or RGB images: taps·Cin <= 32) they are built
    transposed, ``(taps·Cin, N·positions)``, a plain row-major product. Otherwise the long
    contraction is split into 4 chunks summed at the end, a batched product that XLA's CPU
    backend spreads over the cores.
    """
    c_in, c_out, out_sizes = x.shape[-1], dy.shape[-1], dy.shape[1:1 + rank]
    taps = list(itertools.product(*(range(k) for k in kernel)))  # row-major kernel taps, as in w
    rows = dy.reshape(-1, c_out)

    def windows(t):  # the strided slice of every spatial axis under kernel tap t
        return tuple(slice(i * d, i * d + (o - 1) * s + 1, s)
                     for i, d, o, s in zip(t, dilation, out_sizes, strides))

    if len(taps) * c_in <= 32:
        x_pad = jnp.pad(jnp.moveaxis(x, -1, 0), ((0, 0), (0, 0)) + tuple(pads))  # (Cin, N, s..)
        columns = jnp.concatenate([x_pad[(slice(None), slice(None)) + windows(t)] for t in taps], axis=0)
        return (columns.reshape(len(taps) * c_in, -1) @ rows).reshape(tuple(kernel) + (c_in, c_out))
    x_pad = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
    columns = jnp.concatenate([x_pad[(slice(None),) + windows(t)] for t in taps], axis=-1)
    columns = columns.reshape(-1, len(taps) * c_in)  # (N·positions, taps·Cin)
    chunks = next(c for c in (4, 2, 1) if rows.shape[0] % c == 0)
    partial = jnp.einsum("gpo,gpk->gok", rows.reshape(chunks, -1, c_out),
                         columns.reshape(chunks, -1, columns.shape[-1]))
    return partial.sum(0).T.reshape(tuple(kernel) + (c_in, c_out))


def conv_input_grad(dy, w, in_sizes, strides, pads, dilation, groups, rank):
    """``dx``: the transposed convolution of ``dy`` with the flipped kernel (inputs and outputs
    of each group swapped), ``dy`` dilated by the strides."""
    kernel = w.shape[:rank]
    c_in_group, c_out = w.shape[rank], w.shape[rank + 1]
    flipped = jnp.flip(w, axis=tuple(range(rank)))
    # (k.., Cin/G, G, Cout/G) -> (k.., Cout/G, G, Cin/G) -> (k.., Cout/G, Cin): group g maps dy's
    # channels g·Cout/G.. back to x's channels g·Cin/G..
    swapped = flipped.reshape(kernel + (c_in_group, groups, c_out // groups))
    swapped = jnp.swapaxes(swapped, rank, rank + 2).reshape(kernel + (c_out // groups, groups * c_in_group))
    pads_t = []
    for size, k, s, d, (lo, _), o in zip(in_sizes, kernel, strides, dilation, pads, dy.shape[1:1 + rank]):
        effective = (k - 1) * d + 1
        pads_t.append((effective - 1 - lo, size + lo - (o - 1) * s - 1))
    return lax.conv_general_dilated(dy, swapped, (1,) * rank, pads_t, lhs_dilation=strides,
                                    rhs_dilation=dilation, dimension_numbers=_SPECS[rank],
                                    feature_group_count=groups)



def _make_conv(rank: int, out_channels, kernel_size, strides, padding, dilation, feature_group_count,
               w_init, b_init, dtype, use_bias) -> Layer:
    kind = "Conv" if rank == 2 else "Conv1D"
    if not isinstance(out_channels, int) or out_channels <= 0:
        raise ValueError(f"{kind}: out_channels must be a positive int, got {out_channels!r}")
    kernel = positive_ints(kernel_size, rank, "kernel_size", kind)
    strides = positive_ints(strides, rank, "strides", kind)
    dilation = positive_ints(dilation, rank, "dilation", kind)
    padding = padding_spec(padding, rank, kind)
    groups = feature_group_count
    if not isinstance(groups, int) or groups <= 0 or out_channels % groups:
        raise ValueError(f"{kind}: feature_group_count must be a positive int dividing out_channels "
                         f"{out_channels}, got {groups!r}")
    size_text = "x".join(map(str, kernel))
    name = f"{kind}({out_channels}, {size_text}" + ("" if set(strides) == {1} else
                                                   f", strides={strides if rank > 1 else strides[0]}") + \
        ("" if groups == 1 else f", groups={groups}") + ("" if use_bias else ", no bias") + ")"
    param_keys = {"w", "b"} if use_bias else {"w"}
    axes_text = "(H, W, C)" if rank == 2 else "(W, C)"

    def spatial_check(shape):
        if len(shape) != rank + 1:
            raise ValueError(f"{name}: expected examples of shape {axes_text}, got in_shape {shape}"
                             + ("; for a (H, W) image add a channel axis, x[..., None]" if rank == 2 and
                                len(shape) == 2 else ""))
        c_in = shape[-1]
        if c_in % groups:
            raise ValueError(f"{name}: {c_in} input channels do not divide into {groups} feature groups")
        return window_geometry(shape[:rank], kernel, strides, dilation, padding, name)

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        _, sizes = spatial_check(in_shape)
        dtype_ = param_dtype(dtype)
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, kernel + (in_shape[-1] // groups, out_channels), dtype_)}
        if use_bias:
            params["b"] = b_init(b_key, (out_channels,), dtype_)
        return sizes + (out_channels,), params

    def check(params, x):
        check_param_keys(name, params, param_keys)
        w = params["w"]
        if jnp.ndim(w) != rank + 2 or tuple(w.shape[:rank]) != kernel or w.shape[-1] != out_channels:
            raise ValueError(f"{name}: expected params w of shape {kernel + ('C_in',)} + ({out_channels},), "
                             f"got {jnp.shape(w)}")
        if jnp.ndim(x) < rank + 1:
            raise ValueError(f"{name}: expected input of shape (N, {axes_text[1:]} or one example "
                             f"{axes_text}, got {jnp.shape(x)}")
        if x.shape[-1] != w.shape[rank] * groups:
            raise ValueError(f"{name}: expected {w.shape[rank] * groups} input channels (last axis), "
                             f"got input of shape {jnp.shape(x)}")
        return spatial_check(x.shape[x.ndim - rank - 1:])[0]

    def apply(params, x):
        return _conv_forward(params, x, check(params, x), strides, dilation, groups, rank)

    def forward(params, x):
        return apply(params, x), x

    def backward(params, x, dy):
        return _conv_backward(params, x, dy, kernel, strides, padding, dilation, groups, rank)

    return make_layer(name, init, apply, forward, backward, doc=(Conv if rank == 2 else Conv1D).__doc__,
                      spec=spec(kind, out_channels=out_channels, kernel_size=kernel, strides=strides, padding=padding,
                                dilation=dilation, feature_group_count=groups, use_bias=use_bias))


def Conv(out_channels: int, kernel_size, strides=1, padding="SAME", dilation=1, feature_group_count=1,
         w_init=initializers.he_normal, b_init=initializers.zeros, dtype=None, use_bias: bool = True) -> Layer:
    """A 2-D convolution on channels-last images ``(N, H, W, C)`` (or one image ``(H, W, C)``).

    Params ``{"w": (kh, kw, C // groups, out_channels), "b": (out_channels,)}`` (HWIO).
    Backward (see the module docstring)::

        dW = x ⋆ dy (a correlation)   db = Σ dy   dx = dilate(dy, strides) ⊛ flip(W)ᵀ

    Args:
      out_channels: number of output channels.
      kernel_size, strides, dilation: an int or a ``(h, w)`` tuple.
      padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``.
      feature_group_count: split the channels into this many independent groups
        (``= C`` for a depthwise convolution).
      w_init: initialiser for ``w`` (He normal, for ReLU networks); b_init: for ``b`` (zeros).
      use_bias: ``False`` drops ``b`` (params ``{"w"}``), as before a BatchNorm, whose mean
        subtraction makes a bias pointless (its gradient is exactly 0).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> conv = fnnet.Conv(8, 3)
      >>> out_shape, params = conv.init(jax.random.PRNGKey(0), (28, 28, 1))
      >>> out_shape, params["w"].shape, conv.apply(params, jnp.ones((2, 28, 28, 1))).shape
      ((28, 28, 8), (3, 3, 1, 8), (2, 28, 28, 8))
    """
    return _make_conv(2, out_channels, kernel_size, strides, padding, dilation, feature_group_count,
                      w_init, b_init, dtype, use_bias)


def Conv1D(out_channels: int, kernel_size, strides=1, padding="SAME", dilation=1, feature_group_count=1,
           w_init=initializers.he_normal, b_init=initializers.zeros, dtype=None, use_bias: bool = True) -> Layer:
    """A 1-D convolution on channels-last sequences ``(N, W, C)``; params ``{"w": (k, C // groups,
    out_channels), "b": (out_channels,)}``. Same arguments and backward as :func:`Conv`.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> conv = fnnet.Conv1D(4, 5, strides=2)
      >>> conv.init(jax.random.PRNGKey(0), (100, 3))[0]
      (50, 4)
    """
    return _make_conv(1, out_channels, kernel_size, strides, padding, dilation, feature_group_count,
                      w_init, b_init, dtype, use_bias)
