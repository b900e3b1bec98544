"""Embeddings: token ids to vectors (``Embedding``) and a learned position vector per place
in the sequence (``PositionalEmbedding``), each backward beside its forward.

A lookup ``y[..., t, :] = W[ids[..., t]]`` is linear in ``W``, so its backward is a
scatter-add: every row of ``dy`` is added into the row of ``dW`` it was read from (a row
used twice gets both contributions; a row not used gets zero)::

    dW = zeros(V, F).at[ids].add(dy)        (no cotangent for the integer ids)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import initializers
from fnnet.layer import Layer, as_shape, make_layer, spec
from fnnet.layers._checks import check_param_keys, param_dtype


def _no_cotangent(ids):
    """The cotangent of an integer input: JAX's ``float0`` zeros (``jax.vjp`` gives the same)."""
    return np.zeros(jnp.shape(ids), jax.dtypes.float0)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_token_ids(ids, vocab_size: int, where: str) -> None:
    """Raises ValueError, naming ``where``, unless ``ids`` are integers in ``[0, vocab_size)``.

    The values are checked when they are concrete (on the host); a traced array (inside
    ``jax.jit``) has only its dtype checked.
    """
    if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
        raise ValueError(f"{where}: expects integer token ids, got dtype {jnp.result_type(ids)} "
                         f"of shape {jnp.shape(ids)}")
    if _is_concrete(ids) and np.size(ids):
        ids = np.asarray(ids)
        bad = (ids < 0) | (ids >= vocab_size)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{where}: token id {int(ids[at])} at index {at} is outside "
                             f"the vocabulary [0, {vocab_size}) ({int(bad.sum())} such ids)")


def _table_sizes(kind: str, vocab_size, features) -> tuple[int, int]:
    """``(vocab_size, features)`` of a table layer as ints, or a ValueError naming the layer kind."""
    for what, value in (("vocab_size", vocab_size), ("features", features)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{kind}: {what} must be a positive int, got {value!r}")
    return int(vocab_size), int(features)


def _check_table(name: str, params, vocab_size: int, features: int) -> None:
    """Raises ValueError naming the layer unless ``params`` is ``{"w": (vocab_size, features)}``."""
    check_param_keys(name, params, ("w",))
    if jnp.shape(params["w"]) != (vocab_size, features):
        raise ValueError(f"{name}: expected params w of shape ({vocab_size}, {features}), "
                         f"got {jnp.shape(params['w'])}")


def Embedding(vocab_size: int, features: int, w_init=initializers.normal(1.0), dtype=None) -> Layer:
    """A lookup table: integer ids of shape ``(..., T)`` to vectors ``(..., T, features)``.

    Params ``{"w": (vocab_size, features)}`` (standard normal, as PyTorch's ``nn.Embedding``
    and Flax's ``nn.Embed``; GPTs pass ``w_init=fnnet.initializers.normal(0.02)``).
    ``y = W[ids]``; backward ``dW = Σ scatter-add of dy into the rows used``, and ``dx`` is
    the ``float0`` zero cotangent of integer ids.

    Ids are checked on the host when they are concrete (``ValueError`` naming the first id
    outside ``[0, vocab_size)``). Inside ``jax.jit`` they cannot be checked: an id outside
    the table reads a row of NaN (``jnp.take``'s ``mode="fill"``), so the loss turns NaN
    instead of silently training on a wrong row; :func:`fnnet.train.fit_language_model`
    checks every token on the host before it compiles.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> embed = fnnet.Embedding(10, 4)
      >>> out_shape, params = embed.init(jax.random.PRNGKey(0), (3,))
      >>> out_shape, embed.apply(params, jnp.array([[1, 2, 3]])).shape
      ((3, 4), (1, 3, 4))
    """
    vocab_size, features = _table_sizes("Embedding", vocab_size, features)
    name = f"Embedding({vocab_size}, {features})"

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        return in_shape + (features,), {"w": w_init(key, (vocab_size, features), param_dtype(dtype))}

    def check(params, ids):
        _check_table(name, params, vocab_size, features)
        check_token_ids(ids, vocab_size, name)

    def apply(params, ids):
        check(params, ids)
        return jnp.take(params["w"], ids, axis=0, mode="fill", fill_value=jnp.nan)

    def forward(params, ids):
        return apply(params, ids), ids

    def backward(params, ids, dy):
        w = params["w"]
        rows = ids.reshape(-1)
        dw = jnp.zeros(w.shape, dy.dtype).at[rows].add(dy.reshape(-1, features), mode="drop")  # scatter-add
        return {"w": dw.astype(w.dtype)}, _no_cotangent(ids)

    return make_layer(name, init, apply, forward, backward, doc=Embedding.__doc__,
                      spec=spec("Embedding", vocab_size=vocab_size, features=features))


def PositionalEmbedding(max_length: int | None = None, w_init=initializers.normal(0.02),
                        dtype=None) -> Layer:
    """Adds a learned vector per position: ``y[..., t, :] = x[..., t, :] + P[t]``.

    Input ``(..., T, F)``; params ``{"pos": (max_length, F)}`` where ``max_length`` defaults
    to the ``T`` of ``in_shape`` at init. Any ``T <= max_length`` works (the first ``T``
    rows are used). Backward: ``dx = dy``, ``dP[:T] = Σ dy`` over the batch axes, ``dP[T:] = 0``.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> pos = fnnet.PositionalEmbedding()
      >>> _, params = pos.init(jax.random.PRNGKey(0), (8, 4))
      >>> params["pos"].shape, pos.apply(params, jnp.zeros((2, 5, 4))).shape
      ((8, 4), (2, 5, 4))
    """
    if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
        raise ValueError(f"PositionalEmbedding: max_length must be a positive int, got {max_length!r}")
    name = "PositionalEmbedding"

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        if len(in_shape) < 2:
            raise ValueError(f"{name}: expected in_shape (T, features), got {in_shape}")
        length = in_shape[-2] if max_length is None else max_length
        if in_shape[-2] > length:
            raise ValueError(f"{name}: sequence length {in_shape[-2]} is longer than max_length {length}")
        return in_shape, {"pos": w_init(key, (length, in_shape[-1]), param_dtype(dtype))}

    def check(params, x):
        check_param_keys(name, params, ("pos",))
        length, features = jnp.shape(params["pos"])
        if jnp.ndim(x) < 2 or x.shape[-1] != features:
            raise ValueError(f"{name}: expected input of shape (..., T, {features}), got {jnp.shape(x)}")
        if x.shape[-2] > length:
            raise ValueError(f"{name}: sequence length {x.shape[-2]} is longer than the {length} "
                             f"positions it was built for (input shape {jnp.shape(x)})")

    def apply(params, x):
        check(params, x)
        pos = params["pos"][: x.shape[-2]]
        return x + pos[(None,) * (x.ndim - 2)].astype(x.dtype)

    def forward(params, x):
        return apply(params, x), None

    def backward(params, _, dy):
        pos = params["pos"]
        dpos = jnp.sum(dy, axis=tuple(range(dy.ndim - 2)))          # Σ dy over the batch axes
        dpos = jnp.zeros(pos.shape, dpos.dtype).at[: dy.shape[-2]].set(dpos)  # unused positions: 0
        return {"pos": dpos.astype(pos.dtype)}, dy

    return make_layer(name, init, apply, forward, backward, doc=PositionalEmbedding.__doc__,
                      spec=spec("PositionalEmbedding", max_length=max_length))


def Unembed(vocab_size: int, features: int, dtype=None) -> Layer:
    """The embedding table read backwards: vectors ``(..., F)`` to logits ``(..., vocab_size)``,
    ``y = x · Wᵀ`` with ``W`` of shape ``(vocab_size, features)``, an :func:`Embedding`'s params.

    With :func:`fnnet.Tied` it shares the token embedding's table (the GPT-2 / nanoGPT output
    head, ``GPTConfig(tie_embeddings=True)``); alone it is a ``Dense`` without bias whose weight
    is stored transposed. Backward, as ``Dense`` with ``Wᵀ``::

        dW = dyᵀ · x        (summed over every leading axis)        dx = dy · W

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> head = fnnet.Unembed(10, 4)
      >>> out_shape, params = head.init(jax.random.PRNGKey(0), (3, 4))
      >>> out_shape, params["w"].shape, head.apply(params, jnp.ones((2, 3, 4))).shape
      ((3, 10), (10, 4), (2, 3, 10))
    """
    vocab_size, features = _table_sizes("Unembed", vocab_size, features)
    name = f"Unembed({vocab_size}, {features})"

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        if not in_shape or in_shape[-1] != features:
            raise ValueError(f"{name}: expected examples of shape (..., {features}), got in_shape {in_shape}")
        return in_shape[:-1] + (vocab_size,), {"w": initializers.normal(1.0)(key, (vocab_size, features),
                                                                             param_dtype(dtype))}

    def apply(params, x):
        _check_table(name, params, vocab_size, features)
        if jnp.ndim(x) == 0 or x.shape[-1] != features:
            raise ValueError(f"{name}: expected input of shape (..., {features}), got {jnp.shape(x)}")
        return (x.reshape(-1, features) @ params["w"].T).reshape(x.shape[:-1] + (vocab_size,))

    def forward(params, x):
        return apply(params, x), x

    def backward(params, x, dy):
        w = params["w"]
        dw = dy.reshape(-1, vocab_size).T @ x.reshape(-1, features)        # dW = dyᵀ · x
        dx = (dy.reshape(-1, vocab_size) @ w).reshape(x.shape)             # dx = dy · W
        return {"w": dw.astype(w.dtype)}, dx.astype(x.dtype)

    return make_layer(name, init, apply, forward, backward, doc=Unembed.__doc__,
                      spec=spec("Unembed", vocab_size=vocab_size, features=features))
