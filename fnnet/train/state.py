"""What training carries from step to step: :class:`TrainState`, and how a fresh one is made."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fnnet.layer import Layer, init_with_state


class TrainState(NamedTuple):
    """Everything training needs to continue: a pytree, so it can be jitted, donated and saved."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    model_state: Any = ()
    """The model's non-trainable state (BatchNorm's running statistics); ``()`` for most models."""


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step and, once
    the failing step has been replayed layer by layer, the first layer that stopped being finite.

    Attributes (``None`` when not located): ``step`` (the step, counted from 1, whose forward,
    backward or update first produced a non-finite value), ``layer_index`` (its position in the
    walk of :func:`fnnet.trace`), ``layer_name``, ``path`` (``"3/1/0"``) and ``where``
    (``"forward"``, ``"backward"``, ``"loss"``, ``"update"``: the optimizer's step made the params
    non-finite, or ``"params"``: they already were).
    """

    def __init__(self, message: str, *, step: int | None = None, layer_index: int | None = None,
                 layer_name: str | None = None, where: str | None = None, path: str | None = None):
        super().__init__(message)
        self.step, self.layer_index, self.layer_name, self.where, self.path = step, layer_index, layer_name, where, path


def owned_copy(tree):
    """A copy of every array in ``tree`` in new buffers, so fnnet can donate them freely."""
    return jax.tree.map(lambda leaf: jnp.array(leaf, copy=True), tree)


def init_state(model: Layer, optimizer: optax.GradientTransformation, key, in_shape,
               params=None, model_state=None) -> TrainState:
    """A fresh :class:`TrainState`: ``model.init`` (unless ``params`` is given), the model's state
    (:func:`fnnet.init_with_state`, unless ``model_state`` is given) and ``optimizer.init``.

    ``in_shape`` is the shape of *one example*, without the batch axis (``x.shape[1:]``).
    Given ``params`` are copied, so the caller's arrays are never donated or changed.
    """
    init_key, state_key = jax.random.split(key)
    if params is None:
        _, params, model_state = init_with_state(model, init_key, in_shape)
    else:
        params = owned_copy(params)
        model_state = owned_copy(model_state) if model_state is not None else \
            init_with_state(model, init_key, in_shape)[2]
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), state_key, model_state)


def weight_decay_mask(params):
    """A mask for ``optax.add_decayed_weights``: decay the weights ``w``, not the biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(path) and getattr(path[-1], "key", None) == "w", params)
