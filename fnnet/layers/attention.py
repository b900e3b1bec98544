"""Causal multi-head self-attention, the GPT way, with its backward written out.

For an input ``x`` of shape ``(..., T, C)``, ``H`` heads of size ``D = C / H``::

    q, k, v = split(x · W_qkv + b_qkv)                  one fused projection, each (..., H, T, D)
    S = q · kᵀ / √D,   S[i, j] = -inf for j > i          the causal mask: no peeking ahead
    A = softmax(S) row by row                            masked entries get weight exactly 0
    O = A · v,         y = merge(O) · W_out + b_out

and backward, from ``dy``, in the reverse order (``dO = split(dy · W_outᵀ)``)::

    dV = Aᵀ · dO          dA = dO · Vᵀ
    dS = A ⊙ (dA - Σ_j dA ⊙ A)                           the softmax backward, row by row
    dQ = dS · K / √D      dK = dSᵀ · Q / √D
    dW_qkv = xᵀ · d[q k v],  dx = d[q k v] · W_qkvᵀ       (and the output projection as in Dense)

Masked entries have ``A = 0``, so they get ``dS = 0``: the backward needs no mask of its own.

Two options act on ``q`` and ``k`` between the split and the scores (modded-nanogpt's):

* **QK-norm** (``qk_norm=True``): ``q ← q̂ = q · r_q`` with ``r_q = 1 / sqrt(mean_D(q²) + ε)`` per
  head and position (RMSNorm without a scale; ``k`` alike), so the scores stay bounded however
  large the projections grow; backward ``dq = r_q · (dq̂ - q̂ · mean_D(dq̂ · q̂))``.
* **Rotary positions** (``rope=True``, RoPE, Su et al. 2021): each of the ``D/2`` pairs
  ``(q_i, q_{i+D/2})`` of position ``t`` turned by the angle ``t · θ_i``, ``θ_i = base^(-2i/D)``:
  ``R_t q = q · cos + rotate_half(q) · sin`` with ``rotate_half([a, b]) = [-b, a]``, so that
  ``(R_s q) · (R_t k)`` depends on ``s - t`` alone. A rotation's transpose is its inverse, so the
  backward turns the gradient back: ``dq = dq_rot · cos - rotate_half(dq_rot · sin)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnnet import host, initializers
from fnnet.layer import Layer, as_shape, make_layer, spec
from fnnet.layers._checks import check_param_keys, param_dtype
from fnnet.layers.normalization import rms_normalize, rms_normalize_backward

_PARAMS = {"w_qkv", "b_qkv", "w_out", "b_out"}


def _rows(t):
    """``(..., F)`` -> ``(N, F)``: every position of every example a row (one 2-D matmul)."""
    return t.reshape(-1, t.shape[-1])


def _heads(t, num_heads: int):
    """``(..., T, C)`` -> ``(..., H, T, D)``."""
    t = t.reshape(t.shape[:-1] + (num_heads, t.shape[-1] // num_heads))
    return jnp.swapaxes(t, -2, -3)


def _merge(t):
    """``(..., H, T, D)`` -> ``(..., T, C)``."""
    t = jnp.swapaxes(t, -2, -3)
    return t.reshape(t.shape[:-2] + (-1,))


def _plus_bias(t, b):
    """``t + b`` over the last axis, or ``t`` for a layer built without biases (``b`` is None)."""
    return t if b is None else t + b[(None,) * (t.ndim - 1)]


def causal_mask(length: int):
    """``(T, T)`` booleans, True where query ``i`` may look at key ``j`` (``j <= i``)."""
    return jnp.tril(jnp.ones((length, length), bool))


QK_NORM_EPSILON = 1e-6
"""The ε of QK-norm's ``1 / sqrt(mean(q²) + ε)``."""


class Options(NamedTuple):
    """How :func:`_attend` treats ``q`` and ``k`` before the scores (the module docstring)."""
    num_heads: int
    rope: bool = False
    rope_base: float = 10000.0
    qk_norm: bool = False


def rope_tables(length: int, head_size: int, base: float = 10000.0, dtype=jnp.float32):
    """``(cos, sin)``, each ``(T, D)``: the angles ``t · θ_i`` (``θ_i = base^(-2i/D)``, ``i < D/2``) of
    positions ``0..T-1``, each angle written twice (columns ``i`` and ``i + D/2``: the pair it turns)."""
    exact = jnp.promote_types(dtype, jnp.float32)  # the angles in float32 at least (float64 in float64)
    inverse_frequencies = base ** (-jnp.arange(0, head_size, 2, dtype=exact) / head_size)  # (D/2,)
    angles = jnp.arange(length, dtype=exact)[:, None] * inverse_frequencies[None, :]      # (T, D/2)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def _rotate_half(t):
    """``[a, b] -> [-b, a]`` over the last axis (halves ``a``, ``b``): a quarter turn of every pair."""
    first, second = jnp.split(t, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def rotate(t, cos, sin):
    """RoPE: ``t (..., T, D)`` with pair ``(i, i + D/2)`` of position ``t`` turned by its angle."""
    cos, sin = _lead(cos, t), _lead(sin, t)
    return t * cos + _rotate_half(t) * sin


def rotate_backward(d_rotated, cos, sin):
    """``dt`` through :func:`rotate`: the transpose of a rotation turns back,
    ``dt = d·cos + rotate_halfᵀ(d·sin)`` with ``rotate_halfᵀ = -rotate_half``."""
    cos, sin = _lead(cos, d_rotated), _lead(sin, d_rotated)
    return d_rotated * cos - _rotate_half(d_rotated * sin)


def _lead(table, t):
    """A ``(T, D)`` table given ``t``'s leading axes (size 1), to broadcast against it."""
    return table[(None,) * (t.ndim - 2)]


class AttentionResiduals(NamedTuple):
    """What :func:`_attend` keeps for :func:`_attention_backward` (``H`` heads of ``D = C / H``;
    the last four are None unless QK-norm is on)."""
    x: jax.Array        # (..., T, C)      the layer's input
    q: jax.Array        # (..., H, T, D)   queries as the scores use them (normed, turned)
    k: jax.Array        # (..., H, T, D)   keys as the scores use them
    v: jax.Array        # (..., H, T, D)   values
    weights: jax.Array  # (..., H, T, T)   A = softmax(S), exactly 0 above the diagonal
    merged: jax.Array   # (..., T, C)      O = A·V with the heads merged, the output projection's input
    q_hat: jax.Array | None = None      # (..., H, T, D)  QK-norm: q̂ = q · r_q, before the rotation
    k_hat: jax.Array | None = None      # (..., H, T, D)  k̂ = k · r_k
    q_inv_rms: jax.Array | None = None  # (..., H, T, 1)  r_q = 1 / sqrt(mean(q²) + ε)
    k_inv_rms: jax.Array | None = None  # (..., H, T, 1)  r_k


def _attend(params, x, options: Options):
    """The forward, ``x (..., T, C)`` -> ``(y, AttentionResiduals)``, on params already checked
    (no ``b_qkv`` / ``b_out`` keys: a layer without biases)."""
    num_heads = options.num_heads
    # stage 1: [Q K V] = x·W_qkv + b_qkv, split into heads
    qkv = _plus_bias((_rows(x) @ params["w_qkv"]).reshape(x.shape[:-1] + (-1,)), params.get("b_qkv"))
    q, k, v = (_heads(part, num_heads) for part in jnp.split(qkv, 3, axis=-1))
    normed = {}
    # stage 1b (QK-norm): q̂ = q · r_q, k̂ = k · r_k per head and position
    if options.qk_norm:
        (q, q_inv_rms), (k, k_inv_rms) = rms_normalize(q, QK_NORM_EPSILON), rms_normalize(k, QK_NORM_EPSILON)
        normed = {"q_hat": q, "k_hat": k, "q_inv_rms": q_inv_rms, "k_inv_rms": k_inv_rms}
    # stage 1c (RoPE): q ← R_t q, k ← R_t k
    if options.rope:
        cos, sin = rope_tables(x.shape[-2], q.shape[-1], options.rope_base, q.dtype)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    # stage 2: S = Q·Kᵀ/√D, causally masked
    scale = 1.0 / math.sqrt(x.shape[-1] // num_heads)
    scores = jnp.einsum("...qd,...kd->...qk", q, k) * scale
    scores = jnp.where(causal_mask(x.shape[-2]), scores, -jnp.inf)  # A[i, j] = 0 for j > i
    # stage 3: A = softmax(S) row by row
    weights = jax.nn.softmax(scores, axis=-1)
    # stage 4: O = A·V, the heads merged
    merged = _merge(jnp.einsum("...qk,...kd->...qd", weights, v))
    # stage 5: y = O·W_out + b_out
    y = _plus_bias((_rows(merged) @ params["w_out"]).reshape(x.shape), params.get("b_out"))
    return y, AttentionResiduals(x, q, k, v, weights, merged, **normed)


def _attention_backward(params, residuals: AttentionResiduals, dy, options: Options):
    """:func:`_attend`'s five stages in reverse, each under the forward line it differentiates:
    ``(params, residuals, dy (..., T, C))`` -> ``(dparams, dx)``, ``dparams`` with ``params``' keys."""
    x, q, k, v, weights, merged = residuals[:6]
    num_heads = options.num_heads
    batch_axes = tuple(range(x.ndim - 1))  # db: Σ over every example and position
    scale = 1.0 / math.sqrt(x.shape[-1] // num_heads)
    grads = {}
    # stage 5, through  y = O·W_out + b_out  (as Dense):
    #   y = _plus_bias((_rows(merged) @ params["w_out"]).reshape(x.shape), params.get("b_out"))
    #   so dW_out = Oᵀ·dy, db_out = Σ dy, dO = dy·W_outᵀ
    grads["w_out"] = _rows(merged).T @ _rows(dy)
    grads["b_out"] = jnp.sum(dy, axis=batch_axes)
    d_out = _heads((_rows(dy) @ params["w_out"].T).reshape(dy.shape), num_heads)
    # stage 4, through  O = A·V:  merged = _merge(jnp.einsum("...qk,...kd->...qd", weights, v))
    #   so dV = Aᵀ·dO, dA = dO·Vᵀ
    dv = jnp.einsum("...qk,...qd->...kd", weights, d_out)
    d_weights = jnp.einsum("...qd,...kd->...qk", d_out, v)
    # stage 3, through  A = softmax(S) row by row:  weights = jax.nn.softmax(scores, axis=-1)
    #   so dS = A ⊙ (dA - Σ_row dA ⊙ A); masked entries have A = 0, so their dS is 0: the mask,
    #   scores = jnp.where(causal_mask(T), scores, -jnp.inf), needs no backward of its own
    d_scores = weights * (d_weights - jnp.sum(d_weights * weights, axis=-1, keepdims=True))
    # stage 2, through  S = Q·Kᵀ/√D:  scores = jnp.einsum("...qd,...kd->...qk", q, k) * scale
    #   so dQ = dS·K/√D, dK = dSᵀ·Q/√D
    dq = jnp.einsum("...qk,...kd->...qd", d_scores, k) * scale
    dk = jnp.einsum("...qk,...qd->...kd", d_scores, q) * scale
    # stage 1c (RoPE), through  q ← q·cos + rotate_half(q)·sin  (k alike): turned back
    if options.rope:
        cos, sin = rope_tables(x.shape[-2], q.shape[-1], options.rope_base, q.dtype)
        dq, dk = rotate_backward(dq, cos, sin), rotate_backward(dk, cos, sin)
    # stage 1b (QK-norm), through  q̂ = q · r_q:  dq = r_q · (dq̂ - q̂ · mean(dq̂ · q̂))  (k alike)
    if options.qk_norm:
        dq = rms_normalize_backward(residuals.q_hat, residuals.q_inv_rms, dq)
        dk = rms_normalize_backward(residuals.k_hat, residuals.k_inv_rms, dk)
    # stage 1, through  [Q K V] = x·W_qkv + b_qkv, split into heads:
    #   qkv = _plus_bias((_rows(x) @ params["w_qkv"]).reshape(...), params.get("b_qkv")); q, k, v = _heads(split(qkv))
    #   so d[Q K V] = merged heads side by side, dW_qkv = xᵀ·d[Q K V], db_qkv = Σ d[Q K V], dx = d[Q K V]·W_qkvᵀ
    d_qkv = jnp.concatenate([_merge(dq), _merge(dk), _merge(dv)], axis=-1)
    grads["w_qkv"] = _rows(x).T @ _rows(d_qkv)
    grads["b_qkv"] = jnp.sum(d_qkv, axis=batch_axes)
    dx = (_rows(d_qkv) @ params["w_qkv"].T).reshape(x.shape)
    return {key: grads[key].astype(params[key].dtype) for key in params}, dx.astype(x.dtype)


def _check_heads(name: str, features: int, num_heads: int, rope: bool) -> None:
    """``features`` split into ``num_heads`` heads (of an even size, for rotary positions), or an error naming the layer."""
    if features % num_heads:
        raise ValueError(f"{name}: features {features} are not divisible by num_heads {num_heads}")
    if rope and (features // num_heads) % 2:
        raise ValueError(f"{name}: rotary positions turn pairs of features, so the head size must be even; "
                         f"got {features} features / {num_heads} heads = {features // num_heads}")


def _check(name: str, keys: set, num_heads: int, max_length: int | None, params, x, rope: bool = False) -> int:
    """The layer's params and input ``x`` fit each other: an error naming the layer if not, else ``C``."""
    check_param_keys(name, params, keys)
    features = jnp.shape(params["w_out"])[0] if jnp.ndim(params["w_out"]) == 2 else None
    expected = {"w_qkv": (features, 3 * features), "b_qkv": (3 * features,), "w_out": (features, features),
                "b_out": (features,)}
    if features is None or any(jnp.shape(params[k]) != expected[k] for k in keys):
        shapes = ", ".join(f"{k} {jnp.shape(params[k])}" for k in sorted(keys))
        raise ValueError(f"{name}: params of shapes {shapes} do not fit w_qkv (C, 3C), w_out (C, C)"
                         f"{', b_qkv (3C,), b_out (C,)' if 'b_qkv' in keys else ''}")
    _check_heads(name, features, num_heads, rope)
    if jnp.ndim(x) < 2 or x.shape[-1] != features:
        raise ValueError(f"{name}: expected input of shape (..., T, {features}), got {jnp.shape(x)}")
    if max_length is not None and x.shape[-2] > max_length:
        raise ValueError(f"{name}: sequence length {x.shape[-2]} is longer than the block size "
                         f"{max_length} it was built for (input shape {jnp.shape(x)})")
    return features


def CausalSelfAttention(num_heads: int, max_length: int | None = None,
                        w_init=initializers.normal(0.02), out_init=None, dtype=None, *,
                        use_bias: bool = True, rope: bool = False, rope_base: float = 10000.0,
                        qk_norm: bool = False) -> Layer:
    """Multi-head self-attention with a causal mask, on ``(..., T, C)`` input.

    Params ``{"w_qkv": (C, 3C), "b_qkv": (3C,), "w_out": (C, C), "b_out": (C,)}``: the fused
    query/key/value projection (columns ``[q | k | v]``, each split into ``num_heads`` heads
    of ``C / num_heads`` features) and the output projection; ``use_bias=False`` leaves both
    biases out (params ``{"w_qkv", "w_out"}``, nanoGPT's ``bias=False``). Weights are ``N(0, 0.02²)``
    (GPT-2's; ``out_init`` overrides the output projection's, e.g. ``0.02 / √(2·layers)``),
    biases zero. The forward and the hand-written backward are in the module docstring, and
    in code in :func:`_attend` and :func:`_attention_backward` (its stages quote the forward).

    ``rope=True`` turns q and k by rotary position embeddings (``rope_base`` the ``base`` of the
    frequencies; the head size must be even), and ``qk_norm=True`` RMS-normalises each head's q and k
    (no scale) first: the module docstring has both, forward and backward.

    Any sequence length works, since every position only sees earlier ones; ``max_length``
    (a GPT passes its block size) makes a longer input an error naming the layer.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> attention = fnnet.CausalSelfAttention(num_heads=2)
      >>> out_shape, params = attention.init(jax.random.PRNGKey(0), (8, 4))
      >>> out_shape, attention.apply(params, jnp.ones((3, 5, 4))).shape
      ((8, 4), (3, 5, 4))
    """
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads <= 0:
        raise ValueError(f"CausalSelfAttention: num_heads must be a positive int, got {num_heads!r}")
    if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
        raise ValueError(f"CausalSelfAttention: max_length must be a positive int, got {max_length!r}")
    for flag, value in (("use_bias", use_bias), ("rope", rope), ("qk_norm", qk_norm)):
        if not isinstance(value, bool):
            raise ValueError(f"CausalSelfAttention: {flag} must be True or False, got {value!r}")
    if isinstance(rope_base, bool) or not isinstance(rope_base, (int, float)) or not rope_base > 1:
        raise ValueError(f"CausalSelfAttention: rope_base must be a number > 1, got {rope_base!r}")
    options = Options(num_heads, rope, float(rope_base), qk_norm)
    extras = (["no bias"] if not use_bias else []) + (["rope"] if rope else []) + (["qk-norm"] if qk_norm else [])
    name = f"CausalSelfAttention({', '.join([f'{num_heads} heads'] + extras)})"
    keys = _PARAMS if use_bias else {"w_qkv", "w_out"}
    out_init = w_init if out_init is None else out_init

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        if len(in_shape) < 2:
            raise ValueError(f"{name}: expected in_shape (T, features), got {in_shape}")
        length, features = in_shape[-2], in_shape[-1]
        _check_heads(name, features, num_heads, rope)
        if max_length is not None and length > max_length:
            raise ValueError(f"{name}: sequence length {length} is longer than max_length {max_length}")
        dtype_ = param_dtype(dtype)
        qkv_key, out_key = jax.random.split(key)
        params = {"w_qkv": w_init(qkv_key, (features, 3 * features), dtype_),
                  "b_qkv": host.filled((3 * features,), dtype_),
                  "w_out": out_init(out_key, (features, features), dtype_),
                  "b_out": host.filled((features,), dtype_)}
        return in_shape, {k: params[k] for k in keys}

    def apply(params, x):
        _check(name, keys, num_heads, max_length, params, x, rope)
        return _attend(params, x, options)[0]

    def forward(params, x):
        _check(name, keys, num_heads, max_length, params, x, rope)
        return _attend(params, x, options)

    def backward(params, residuals, dy):
        return _attention_backward(params, residuals, dy, options)

    return make_layer(name, init, apply, forward, backward, doc=CausalSelfAttention.__doc__,
                      spec=spec("CausalSelfAttention", num_heads=num_heads, max_length=max_length,
                                use_bias=use_bias, rope=rope, rope_base=float(rope_base), qk_norm=qk_norm))
