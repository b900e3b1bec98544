"""Inverted dropout: the one built-in layer that needs a PRNG key and the train/eval mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnnet.layer import Layer, as_shape, make_layer, spec


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _floating(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def Dropout(rate: float) -> Layer:
    """Inverted dropout: in training, each entry is dropped with probability ``rate`` and the
    survivors are scaled by ``1 / (1 - rate)``; in evaluation it is the identity.

    ``rate`` is the probability of *dropping* (as in PyTorch, Keras and Flax; stax's
    ``Dropout`` took the keep rate, jax issue #849). Forward and backward, with the mask
    ``m ~ Bernoulli(1 - rate)``::

        y = x · m / (1 - rate)        dx = dy · m / (1 - rate)

    Use it through :func:`fnnet.apply_with_state` / :func:`fnnet.train.fit`, which pass
    the key and ``train``; its plain ``apply(params, x)`` is the evaluation-mode identity.
    Between recurrent layers on a padded batch it takes the :class:`fnnet.Sequences` they pass
    on: it drops the steps and passes the lengths.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> drop = fnnet.Dropout(0.5)
      >>> y, _ = fnnet.apply_with_state(drop, (), (), jnp.ones((2, 4)), key=jax.random.PRNGKey(0), train=True)
      >>> sorted(set(y.ravel().tolist()))
      [0.0, 2.0]
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"Dropout: rate (the probability of dropping) must be in [0, 1), got {rate!r}")
    rate = float(rate)
    name = f"Dropout({rate:g})"

    def init(key, in_shape):
        return as_shape(in_shape, name), ()

    def stateful_init(key, in_shape):
        return as_shape(in_shape, name), (), ()

    def keep_scale(x, key, train):
        """``m / (1 - rate)`` (None in evaluation or at rate 0: nothing to do). For an input that is
        a pytree (a :class:`fnnet.Sequences`: steps, lengths), one mask per floating leaf, each from
        its own key; integer leaves (lengths) pass through (``None``)."""
        if not train or rate == 0.0:
            return None
        if key is None:
            raise ValueError(f"{name}: training mode needs a PRNG key (key=...)")
        if _is_array(x):
            return _mask(key, x)
        leaves, treedef = jax.tree.flatten(x)
        keys = jax.random.split(key, max(len(leaves), 1))
        return tuple(_mask(k, leaf) if _floating(leaf) else None for k, leaf in zip(keys, leaves))

    def _mask(key, x):
        keep = jax.random.bernoulli(key, 1.0 - rate, jnp.shape(x))
        return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(x.dtype)

    def scaled(tree, scale):
        """``tree · scale`` leaf by leaf (``scale`` None: the leaf as it is)."""
        if scale is None:
            return tree
        if not isinstance(scale, tuple):
            return tree * scale
        leaves, treedef = jax.tree.flatten(tree)
        return jax.tree.unflatten(treedef, [leaf if s is None else leaf * s for leaf, s in zip(leaves, scale)])

    def stateful_forward(params, state, x, *, key=None, train=False):
        scale = keep_scale(x, key, train)
        return scaled(x, scale), scale, state

    def stateful_apply(params, state, x, *, key=None, train=False):
        y, _, state = stateful_forward(params, state, x, key=key, train=train)
        return y, state

    def backward(params, scale, dy):
        return (), scaled(dy, scale)  # dx = dy · m / (1 - rate)

    return make_layer(name, init, lambda params, x: x, lambda params, x: (x, None), backward, doc=Dropout.__doc__,
                      stateful_init=stateful_init, stateful_apply=stateful_apply,
                      stateful_forward=stateful_forward, spec=spec("Dropout", rate=rate))
