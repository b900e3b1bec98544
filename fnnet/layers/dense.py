"""The fully connected layer ``y = x @ w + b`` and its hand-written backward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnnet import initializers
from fnnet.layer import Layer, as_shape, make_layer, spec
from fnnet.layers._checks import check_param_keys, param_dtype


def Dense(out_dim: int, w_init=initializers.glorot_uniform, b_init=initializers.zeros,
          dtype=None, use_bias: bool = True) -> Layer:
    """A dense (fully connected) layer: ``y = x @ w + b``.

    Params are ``{"w": (n_in, out_dim), "b": (out_dim,)}``. Backward, for any
    number of leading batch axes (summed over)::

        dW = xᵀ · dy        db = Σ dy        dx = dy · Wᵀ

    Args:
      out_dim: number of output features.
      w_init: initialiser ``(key, shape, dtype) -> array`` for ``w`` (Glorot uniform).
      b_init: initialiser for ``b`` (zeros).
      dtype: parameter dtype; ``None`` means JAX's default float (float32, or
        float64 when x64 is enabled).
      use_bias: ``False`` drops ``b`` (params ``{"w"}``, ``y = x @ w``), as PyTorch's
        ``nn.Linear(bias=False)`` and a GPT without biases.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> layer = fnnet.Dense(4)
      >>> out_shape, params = layer.init(jax.random.PRNGKey(0), (3,))
      >>> out_shape, params["w"].shape, layer.apply(params, jnp.ones((5, 3))).shape
      ((4,), (3, 4), (5, 4))

    To batch, pass ``x`` with any leading axes, or ``jax.vmap`` over single examples.
    """
    if not isinstance(out_dim, int) or out_dim <= 0:
        raise ValueError(f"Dense: out_dim must be a positive int, got {out_dim!r}")
    name = f"Dense({out_dim})" if use_bias else f"Dense({out_dim}, no bias)"
    param_keys = ("w", "b") if use_bias else ("w",)

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        if len(in_shape) == 0:
            raise ValueError(f"{name}: expected an input with a feature axis, got in_shape ()")
        w_key, b_key = jax.random.split(key)
        params = {"w": w_init(w_key, (in_shape[-1], out_dim), param_dtype(dtype))}
        if use_bias:
            params["b"] = b_init(b_key, (out_dim,), param_dtype(dtype))
        return in_shape[:-1] + (out_dim,), params

    def check(params, x):
        check_param_keys(name, params, param_keys)
        w = params["w"]
        b_shape = jnp.shape(params["b"]) if use_bias else (out_dim,)
        if jnp.ndim(w) != 2 or w.shape[1] != out_dim or b_shape != (out_dim,):
            raise ValueError(f"{name}: expected params w of shape (n_in, {out_dim})"
                             + (f" and b of shape ({out_dim},), got w {jnp.shape(w)} and b {b_shape}"
                                if use_bias else f", got w {jnp.shape(w)}"))
        if jnp.ndim(x) == 0 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"{name}: expected input of shape (..., {w.shape[0]}), "
                             f"got {jnp.shape(x)}")

    def apply(params, x):
        check(params, x)
        y = (x.reshape(-1, x.shape[-1]) @ params["w"]).reshape(x.shape[:-1] + (out_dim,))  # one 2-D matmul
        if not use_bias:
            return y
        return y + params["b"][(None,) * (y.ndim - 1)]  # explicit broadcast: fine under strict rank promotion

    def forward(params, x):
        return apply(params, x), x

    def backward(params, x, dy):
        rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])  # every example a row
        dw = rows_x.T @ rows_dy                                      # xᵀ·dy, summed over examples
        dx = jnp.einsum("...o,io->...i", dy, params["w"])           # dy·Wᵀ, no transpose materialised
        # each gradient in its own tensor's dtype (bfloat16 params with float32 data, and back)
        grads = {"w": dw.astype(params["w"].dtype)}
        if use_bias:
            grads["b"] = jnp.sum(rows_dy, axis=0).astype(params["b"].dtype)  # Σ dy
        return grads, dx.astype(x.dtype)

    return make_layer(name, init, apply, forward, backward, doc=Dense.__doc__,
                      spec=spec("Dense", out_dim=out_dim, use_bias=use_bias))
