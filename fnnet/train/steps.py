"""One training step: gradients (hand-written or autodiff), the optax update, the batch metrics."""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import optax

from fnnet import distributed
from fnnet.gradients import check_compute_dtype, check_grad_mode, loss_and_grads
from fnnet.layer import Layer, is_stateful
from fnnet.tape import recording
from fnnet.losses import Loss
from fnnet.train.monitor import layer_health, masked
from fnnet.train.state import TrainState
from fnnet.train.tasks import correct, resolve_task


def make_train_step(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, *,
                    grad: str = "manual", task: str | None = None, compute_dtype=None,
                    monitor: int | None = None, mesh=None):
    """Returns a pure ``step(state, x, y, weights=None) -> (state, metrics)`` to ``jax.jit``.

    Args:
      model, loss: what to train.
      optimizer: any ``optax.GradientTransformation``.
      grad: ``"manual"`` for the hand-written backward, ``"autodiff"`` for ``jax.grad``.
      task: ``"multiclass"``, ``"binary"`` or ``"regression"``; inferred from ``loss.kind``.
      compute_dtype: mixed precision, e.g. ``jnp.bfloat16``: the forward and backward
        passes run in it, the params (and the optimizer) stay in their own dtype.
      monitor: every ``monitor`` steps (when ``(state.step + 1) % monitor == 0``), also return
        ``metrics["health"]``: per layer, the statistics of :mod:`fnnet.train.monitor`,
        computed inside the step from what the hand-written backward already holds, under a
        ``lax.cond`` (NaN on the other steps; ``monitor=1``: every step, no branch). Needs
        ``grad="manual"``. (:func:`make_epoch` avoids the branch: it scans ``monitor - 1``
        plain steps, then one observed step.)
      mesh: a ``jax.sharding.Mesh``: each device of its first axis computes the loss and the
        gradients of its share of the batch, in parallel, and the step applies their mean
        (:func:`fnnet.distributed.loss_and_grads_over`; not with ``monitor``). The batch must
        divide evenly over the devices; ``state`` is replicated on them.

    A model with state or randomness (BatchNorm, Dropout) runs in training mode with the
    key ``fold_in(state.key, state.step)``; its new state goes into ``state.model_state``.

    ``metrics`` holds ``loss`` (the batch loss before the update) and, for
    classification, ``accuracy``. ``weights`` (one 0/1 per example) masks padding, in the loss,
    the gradients, the accuracy and the monitor's statistics.

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
    check_monitor(monitor, grad, "make_train_step")
    if mesh is not None and monitor:
        raise ValueError(f"make_train_step: monitor={monitor} reads one device's backward; it cannot be "
                         "combined with mesh (data-parallel gradients)")
    task = resolve_task(loss, task)
    gradients = loss_and_grads if mesh is None else functools.partial(distributed.loss_and_grads_over, mesh)

    stateful = is_stateful(model)

    def step(state: TrainState, x, y, weights=None):
        key = jax.random.fold_in(state.key, state.step) if stateful else None  # e.g. dropout masks
        with recording() if monitor else contextlib.nullcontext() as tape:
            value, grads, pred, model_state = gradients(
                model, loss, state.params, x, y, grad=grad, weights=weights, compute_dtype=compute_dtype,
                state=state.model_state, key=key, train=True)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value}
        hits = correct(loss, task, pred, y)
        if hits is not None:
            metrics["accuracy"] = (jnp.mean(hits) if weights is None else
                                   jnp.sum(hits * weights) / jnp.maximum(jnp.sum(weights), 1))
        if monitor == 1:  # the padding (weights 0) left out of the statistics, as out of the loss
            metrics["health"] = layer_health(tape, state.params, params, weights)
        elif monitor:  # the reductions run on observed steps only; the step itself is not branched
            metrics["health"] = jax.lax.cond((state.step + 1) % monitor == 0,
                                             lambda: layer_health(tape, state.params, params, weights),
                                             lambda: masked(layer_health(tape, state.params, params, weights)))
        return TrainState(params, opt_state, state.step + 1, state.key, model_state), metrics

    return step


def check_monitor(monitor, grad: str, where: str) -> None:
    """Raises ValueError unless ``monitor`` is ``None`` or a positive int (with ``grad="manual"``)."""
    if monitor is None:
        return
    if not isinstance(monitor, int) or isinstance(monitor, bool) or monitor < 1:
        raise ValueError(f"{where}: monitor must be a positive int (record every N steps) or None, got {monitor!r}")
    if grad != "manual":
        raise ValueError(f"{where}: monitor={monitor} reads the hand-written backward's values: it needs "
                         f"grad='manual', got grad={grad!r}")
