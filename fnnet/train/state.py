"""What training carries from step to step: :class:`TrainState`, and how a fresh one is made."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import optax

try:  # what keys jit's caches, as one thread sees it (JAX keeps no public name for it)
    from jax._src.config import trace_context as _jax_trace_context
except ImportError:
    _jax_trace_context = None

from fnnet import host
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
        params = host.owned_copy(params)
        model_state = host.owned_copy(model_state) if model_state is not None else \
            init_with_state(model, init_key, in_shape)[2]
    return TrainState(params, optimizer.init(params), host.filled((), jnp.int32), state_key, model_state)


def state_shapes(model: Layer, optimizer: optax.GradientTransformation, key, in_shape, params=None) -> TrainState | None:
    """The shapes :func:`init_state` will give (``jax.eval_shape``: nothing computed or compiled),
    or ``None`` when it cannot make the state: calling it for real then says what is wrong."""
    try:
        return jax.eval_shape(lambda: init_state(model, optimizer, key, in_shape, params))
    except Exception:  # a bad model or params
        return None


def compile_ahead(state: TrainState, programs: Callable[[TrainState], Iterable[tuple[Any, tuple]]]
                  ) -> threading.Thread:
    """Starts compiling a training loop's programs while its state is still being made, and returns
    the background thread (``join`` it before the first call).

    ``state`` holds the shapes the state will have (:func:`state_shapes`); each ``(jitted, args)`` of ``programs(state)`` is lowered and
    compiled on the thread. Making a state runs small programs that each compile on first use (every
    random draw of a new shape: ~0.1 s apiece in a fresh process) and XLA compiles without holding
    Python's lock, so on two cores the loop's compilation overlaps them. jit's caches are shared, so
    the first real call runs what was compiled here instead of compiling again. A program that fails
    to compile here is left for its real call, which raises the error with its own message. Inside a
    thread-local JAX setting (``with jax.enable_x64():``, ``jax.default_matmul_precision(...)``),
    which the new thread would not see, nothing is compiled ahead: the first call compiles, as it
    would without this.

    Used by :func:`fnnet.train.fit` and :func:`fnnet.train.fit_language_model`.
    """
    jobs = list(programs(state))
    context = _trace_context()

    def compile_all():
        if context != _trace_context():  # the caller is inside a thread-local setting (jax.enable_x64(),
            return                       # default_matmul_precision...) a new thread would not see
        for jitted, args in jobs:
            try:
                jitted.lower(*args).compile()
            except Exception:  # raised again, with its message, where the program is called
                pass

    thread = threading.Thread(target=compile_all, name="fnnet-compile-ahead", daemon=True)
    thread.start()
    return thread


def _trace_context():
    """The JAX settings that key jit's caches, as this thread sees them (``None`` if this jax
    version does not say: then compiling ahead is tried, and at worst wasted)."""
    return _jax_trace_context() if _jax_trace_context is not None else None


def weight_decay_mask(params):
    """A mask for ``optax.add_decayed_weights``: decay the weights ``w``, not the biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(path) and getattr(path[-1], "key", None) == "w", params)
