"""Everything on the device: init and all epochs of one model, or of an ensemble, in one compiled call."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from fnnet.gradients import check_grad_mode
from fnnet.layer import Layer, apply_with_state
from fnnet.losses import Loss, check_targets
from fnnet.train import inputs
from fnnet.train.epochs import make_epoch
from fnnet.train.state import init_state
from fnnet.train.tasks import correct, resolve_task
from fnnet import xla_options

@functools.lru_cache(maxsize=32)
def _compiled_trainer(model, loss, optimizer, n, in_shape, *, epochs, batch_size, grad, task,
                      ensemble):
    """The jitted ``(key(s), x, y) -> (state, per-epoch losses, final train accuracy)``; cached so
    that calling :func:`fit_compiled` / :func:`fit_ensemble` again with the same objects reuses it."""
    check_grad_mode(grad)
    batch_size = n if batch_size is None else min(batch_size, n)
    task_resolved = resolve_task(loss, task)
    epoch = make_epoch(model, loss, optimizer, n=n, batch_size=batch_size, grad=grad, task=task)

    def train_one(key, x, y):
        state = init_state(model, optimizer, key, in_shape)

        def one_epoch(state, _):
            state, metrics = epoch(state, x, y)
            return state, jnp.sum(metrics["loss"] * metrics["count"]) / n

        state, losses = jax.lax.scan(one_epoch, state, None, length=epochs)
        hits = correct(loss, task_resolved,
                       apply_with_state(model, state.params, state.model_state, x)[0], y)
        accuracy = jnp.mean(hits) if hits is not None else jnp.zeros(())
        return state, losses, accuracy

    run = jax.vmap(train_one, in_axes=(0, None, None)) if ensemble else train_one
    return xla_options.jit(run, model), task_resolved


def fit_compiled(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, train_data, *,
                 key, epochs: int, batch_size: int | None = None, grad: str = "manual",
                 task: str | None = None):
    """Trains one model with ``init`` and *all* epochs in a single compiled call.

    :func:`fit` returns to Python after every epoch (history, eval, checkpoints,
    progress bar). For tiny problems such as XOR, where an epoch is one step, that
    per-epoch round trip dominates; here the whole run is one ``lax.scan`` on the
    device, as fast as a hand-written JAX loop.

    Returns:
      ``(state, metrics)`` with ``metrics = {"loss": (epochs,) mean train loss per
      epoch, "accuracy": final train accuracy (or None)}``.
    """
    x, y = inputs.as_arrays(train_data, "fit_compiled")
    check_targets(loss, y, inputs.out_shape(model, x.shape[1:]), "fit_compiled")
    run, task_resolved = _compiled_trainer(model, loss, optimizer, x.shape[0], x.shape[1:],
                                           epochs=epochs, batch_size=batch_size, grad=grad, task=task,
                                           ensemble=False)
    state, losses, accuracy = run(key, x, y)
    return state, {"loss": losses, "accuracy": accuracy if task_resolved else None}


def fit_ensemble(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, train_data, *,
                 keys, epochs: int, batch_size: int | None = None, grad: str = "manual",
                 task: str | None = None):
    """Trains ``len(keys)`` independent models at once: ``jax.vmap`` of :func:`fit_compiled`.

    Every model gets its own initialisation and shuffles from its key; all epochs of
    all models run in one compiled ``lax.scan`` under ``vmap``.

    Args:
      keys: a batch of PRNG keys, shape ``(K, 2)`` (``jax.random.split(key, K)``).
      epochs: passes over the data; with ``batch_size=None`` (full batch) one epoch
        is one gradient step, as in the XOR tutorials.

    Returns:
      ``(states, metrics)``: a :class:`TrainState` whose leaves have a leading axis K,
      and ``{"loss": (K, epochs) mean train loss per epoch, "accuracy": (K,) final
      train accuracy (or None)}``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, fnnet
      >>> from fnnet import train
      >>> x = jnp.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]]); y = jnp.array([[0.], [1.], [1.], [0.]])
      >>> model = fnnet.serial(fnnet.Dense(3), fnnet.Tanh, fnnet.Dense(1))
      >>> states, metrics = train.fit_ensemble(model, fnnet.losses.sigmoid_binary_cross_entropy,
      ...     optax.sgd(0.5), (x, y), keys=jax.random.split(jax.random.PRNGKey(0), 8), epochs=50)
      >>> metrics["loss"].shape, metrics["accuracy"].shape
      ((8, 50), (8,))
    """
    x, y = inputs.as_arrays(train_data, "fit_ensemble")
    check_targets(loss, y, inputs.out_shape(model, x.shape[1:]), "fit_ensemble")
    run, task_resolved = _compiled_trainer(model, loss, optimizer, x.shape[0], x.shape[1:],
                                           epochs=epochs, batch_size=batch_size, grad=grad, task=task,
                                           ensemble=True)
    states, losses, accuracy = run(jnp.asarray(keys), x, y)
    return states, {"loss": losses, "accuracy": accuracy if task_resolved else None}
