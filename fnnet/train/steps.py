"""One training step: gradients (hand-written or autodiff), the optax update, the batch metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fnnet.gradients import check_compute_dtype, check_grad_mode, loss_and_grads
from fnnet.layer import Layer, is_stateful
from fnnet.losses import Loss
from fnnet.train.state import TrainState
from fnnet.train.tasks import correct, resolve_task


def make_train_step(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, *,
                    grad: str = "manual", task: str | None = None, compute_dtype=None):
    """Returns a pure ``step(state, x, y, weights=None) -> (state, metrics)`` to ``jax.jit``.

    Args:
      model, loss: what to train.
      optimizer: any ``optax.GradientTransformation``.
      grad: ``"manual"`` for the hand-written backward, ``"autodiff"`` for ``jax.grad``.
      task: ``"multiclass"``, ``"binary"`` or ``"regression"``; inferred from ``loss.kind``.
      compute_dtype: mixed precision, e.g. ``jnp.bfloat16``: the forward and backward
        passes run in it, the params (and the optimizer) stay in their own dtype.

    A model with state or randomness (BatchNorm, Dropout) runs in training mode with the
    key ``fold_in(state.key, state.step)``; its new state goes into ``state.model_state``.

    ``metrics`` holds ``loss`` (the batch loss before the update) and, for
    classification, ``accuracy``. ``weights`` (one 0/1 per example) masks padding.

    Example:
      >>> import jax, jax.numpy as jnp, optax, fnnet
      >>> from fnnet import train
      >>> model = fnnet.serial(fnnet.Dense(8), fnnet.Relu, fnnet.Dense(3))
      >>> state = train.init_state(model, optax.adam(1e-2), jax.random.PRNGKey(0), (4,))
      >>> step = jax.jit(train.make_train_step(model, fnnet.losses.softmax_cross_entropy, optax.adam(1e-2)))
      >>> state, metrics = step(state, jnp.ones((16, 4)), jnp.zeros(16, jnp.int32))
      >>> sorted(metrics), int(state.step)
      (['accuracy', 'loss'], 1)
    """
    check_grad_mode(grad)
    check_compute_dtype(compute_dtype)
    task = resolve_task(loss, task)

    stateful = is_stateful(model)

    def step(state: TrainState, x, y, weights=None):
        key = jax.random.fold_in(state.key, state.step) if stateful else None  # e.g. dropout masks
        value, grads, pred, model_state = loss_and_grads(
            model, loss, state.params, x, y, grad=grad, weights=weights, compute_dtype=compute_dtype,
            state=state.model_state, key=key, train=True)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value}
        hits = correct(loss, task, pred, y)
        if hits is not None:
            metrics["accuracy"] = (jnp.mean(hits) if weights is None else
                                   jnp.sum(hits * weights) / jnp.maximum(jnp.sum(weights), 1))
        return TrainState(params, opt_state, state.step + 1, state.key, model_state), metrics

    return step
