"""One epoch on the device: a keyed shuffle, the batches gathered, every step inside one ``lax.scan``."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fnnet.layer import Layer, is_stateful
from fnnet.losses import Loss
from fnnet.shuffle import permutation
from fnnet.train.augment import augment_batch
from fnnet.train.state import TrainState
from fnnet.train.steps import make_train_step


def batch_plan(key, nonce, n: int, batch_size: int, shuffle: bool = True):
    """Indices (n_batches, batch_size) of a (shuffled) epoch, the tail padded, and 0/1 weights.

    The order is a sort-free keyed permutation (:mod:`fnnet.shuffle`) of ``key`` and
    ``nonce`` (the step count, so every epoch gets a new order).
    """
    n_batches = -(-n // batch_size)
    padded = n_batches * batch_size
    if shuffle:
        key_data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        order = permutation(key_data, nonce, n)
    else:
        order = jnp.arange(n, dtype=jnp.int32)
    order = jnp.concatenate([order, jnp.zeros(padded - n, order.dtype)])
    weights = (jnp.arange(padded) < n).astype(jnp.float32)
    return order.reshape(n_batches, batch_size), weights.reshape(n_batches, batch_size)


def takes_whole_batches(model: Layer, n: int, batch_size: int) -> bool:
    """Whether an epoch of ``n`` examples ends in a smaller last batch instead of a padded one: a
    model with state (BatchNorm's batch statistics) when ``batch_size`` does not divide ``n``."""
    return n % batch_size != 0 and is_stateful(model)


def whole_batch_count(n: int, batch_size: int) -> int:
    """The full batches before the tail of a whole-batch epoch: a remainder of one example joins
    the batch before it (batch statistics need two), so that batch is counted in the tail."""
    n_full, remainder = divmod(n, batch_size)
    return n_full - 1 if remainder == 1 else n_full


_batch_plan_program = jax.jit(batch_plan, static_argnums=(2, 3, 4))
""":func:`batch_plan` as one compiled program (run eagerly, each of its operations would compile on its own)."""


def epoch_batches(model: Layer, key, nonce, n: int, batch_size: int, *, shuffle: bool = True) -> list:
    """The ``(indices, weights)`` of each step of the epoch :func:`make_epoch` runs from a state
    with this ``key`` and step count ``nonce``, in order, on the host (``indices`` ``None``: the
    whole data set in one batch; ``weights`` ``None``: no padding). What a replay of the epoch
    (:mod:`fnnet.train.diverged`) needs to see the same batches."""
    if n <= batch_size:
        return [(None, None)]
    order, weights = jax.device_get(_batch_plan_program(key, nonce, n, batch_size, shuffle))  # sliced on the host
    if not takes_whole_batches(model, n, batch_size):
        full = n % batch_size == 0
        return [(order[b], None if full else weights[b]) for b in range(order.shape[0])]
    n_full = whole_batch_count(n, batch_size)
    return [(order[b], None) for b in range(n_full)] + [(order.reshape(-1)[n_full * batch_size:n], None)]


def gather(data, indices):
    """Rows ``indices`` of ``data``; every index is valid by construction, so no bounds fill."""
    return jnp.take(data, indices, axis=0, mode="clip")


def make_epoch(model: Layer, loss: Loss, optimizer, *, n: int, batch_size: int,
               grad: str = "manual", task: str | None = None, shuffle: bool = True,
               constrain: Callable | None = None, compute_dtype=None, on_steps: Callable | None = None,
               report_every: int | None = None, monitor: int | None = None, augment: Callable | None = None):
    """Returns ``epoch(state, x, y) -> (state, metrics)``: one shuffled pass in a ``lax.scan``.

    Not jitted: :func:`fit` jits it and :func:`fit_ensemble`
    vmaps it. ``metrics`` has one entry per batch, plus ``count`` (valid examples per batch).
    ``constrain`` (e.g. a sharding constraint) is applied to each gathered batch.
    ``augment(key, x) -> x`` (:mod:`fnnet.train.augment`), when given, makes each training batch anew
    on the device with the step's key (:func:`~fnnet.train.augment.augment_batch`).

    When ``batch_size`` does not divide ``n``, the last batch of the epoch is partial. For a
    stateless model it is padded to full size and the padding masked out of the loss (each
    example's loss is independent of the others, so this is exact). A model with state
    (BatchNorm's batch statistics, or a stateful layer of your own) sees whole batches: its
    last batch runs as a smaller batch of the ``n % batch_size`` remaining examples (a second
    shape of the step, compiled into the same program), so padding never enters a batch
    mean or variance. A remainder of one example joins the batch before it (batch statistics
    need two), so no example is ever dropped.

    ``on_steps(k)``, a host function, is called (through ``jax.debug.callback``) after every
    ``report_every`` scanned steps (default: 5% of the epoch) with ``k``, the steps done in this
    epoch: a progress bar moves inside the compiled loop without leaving it per step.

    ``monitor``: per-layer health (:mod:`fnnet.train.monitor`) at every ``monitor``-th step of the
    epoch, in ``metrics["health"]`` (one row per observed step) and ``metrics["health_at"]`` (their
    positions in the epoch, from 0). The epoch scans chunks of ``monitor - 1`` plain steps and one
    observed step, so the steps in between run exactly the plain step (no branch, nothing extra
    kept alive). An epoch shorter than ``monitor`` steps observes, through a ``lax.cond``, the
    steps whose count is a multiple of ``monitor`` (rows of NaN for the others).

    Long: a factory of short closures (a batch step, the epoch, the scan with the monitor's observed
    steps, the whole-batch tail) that share its settings; apart, each would take ten arguments.
    """
    options = dict(grad=grad, task=task, compute_dtype=compute_dtype)
    plain = make_train_step(model, loss, optimizer, **options)
    observed = make_train_step(model, loss, optimizer, monitor=1, **options) if monitor else None
    branched = make_train_step(model, loss, optimizer, monitor=monitor, **options) if monitor else plain
    full = n % batch_size == 0  # then no padding, no masking
    whole_batches = takes_whole_batches(model, n, batch_size)  # batch statistics: a smaller last batch

    n_batches = -(-n // batch_size)
    every = report_every or max(1, n_batches // 20)

    def report(index):
        if on_steps is not None:
            jax.lax.cond((index + 1) % every == 0, lambda: jax.debug.callback(on_steps, index + 1),
                         lambda: None)

    def batch_step(state, x, y, indices, weights=None, shard=True, step=plain):
        """One step on rows ``indices`` (``weights``: 0/1 per row, masking padding); ``count``
        is the number of real examples."""
        xb, yb = gather(x, indices), gather(y, indices)
        if augment is not None:
            xb = augment_batch(augment, state, xb)
        if shard and constrain is not None:
            xb, yb = constrain(xb), constrain(yb)
            weights = None if weights is None else constrain(weights)
        state, metrics = step(state, xb, yb, weights)
        metrics["count"] = jnp.asarray(indices.shape[0], jnp.float32) if weights is None else jnp.sum(weights)
        return state, metrics

    def epoch(state: TrainState, x, y):
        if n <= batch_size:  # full batch: order does not matter, no gather, no mask
            xb = x if augment is None else augment_batch(augment, state, x)
            xb, yb = (constrain(xb), constrain(y)) if constrain is not None else (xb, y)
            state, metrics = branched(state, xb, yb)
            metrics["count"] = jnp.asarray(n, jnp.float32)
            metrics = jax.tree.map(lambda m: m[None], metrics)
            if monitor:
                metrics["health_at"] = jnp.zeros((1,), jnp.int32)
            return state, metrics
        order, weights = batch_plan(state.key, state.step, n, batch_size, shuffle)
        if whole_batches:
            return whole_batch_epoch(state, x, y, order)
        # every batch whole: the plain step, no masking work at all; otherwise the padding is masked
        return scan_steps(state, x, y, (jnp.arange(order.shape[0]), order, None if full else weights))

    def scanned(x, y, step):
        def body(state, plan):
            index, *plan = plan
            report(index)
            return batch_step(state, x, y, *plan, step=step)
        return body

    def scan_steps(state, x, y, plan):
        """The steps of ``plan`` (index, indices, weights), with the monitor's observed steps."""
        length = plan[0].shape[0]
        if not monitor:
            return jax.lax.scan(scanned(x, y, plain), state, plan)
        if monitor > length:  # fewer steps than the interval: observe the multiples of it, by a branch
            state, metrics = jax.lax.scan(scanned(x, y, branched), state, plan)
            return state, dict(metrics, health_at=jnp.arange(length, dtype=jnp.int32))
        chunks = length // monitor
        main = jax.tree.map(lambda a: a[:chunks * monitor].reshape((chunks, monitor) + a.shape[1:]), plan)

        def chunk(state, part):
            head, last = jax.tree.map(lambda a: a[:-1], part), jax.tree.map(lambda a: a[-1], part)
            state, metrics = jax.lax.scan(scanned(x, y, plain), state, head)
            state, observed_metrics = scanned(x, y, observed)(state, last)
            health = observed_metrics.pop("health")
            return state, (jax.tree.map(lambda ms, m: jnp.concatenate([ms, m[None]]), metrics, observed_metrics),
                           health)

        state, (metrics, health) = jax.lax.scan(chunk, state, main)
        metrics = jax.tree.map(lambda a: a.reshape((chunks * monitor,) + a.shape[2:]), metrics)
        if length > chunks * monitor:
            rest = jax.tree.map(lambda a: a[chunks * monitor:], plan)
            state, rest_metrics = jax.lax.scan(scanned(x, y, plain), state, rest)
            metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), metrics, rest_metrics)
        metrics["health"] = health
        metrics["health_at"] = jnp.arange(chunks, dtype=jnp.int32) * monitor + monitor - 1
        return state, metrics

    def whole_batch_epoch(state, x, y, order):
        n_full = whole_batch_count(n, batch_size)
        state, metrics = scan_steps(state, x, y, (jnp.arange(n_full), order[:n_full], None))
        tail = order.reshape(-1)[n_full * batch_size:n]  # the padding after these is never read
        # the tail is not sharded over a mesh: it may not divide over the devices (one small step)
        state, tail_metrics = batch_step(state, x, y, tail, shard=False)
        health = {k: metrics.pop(k) for k in ("health", "health_at") if k in metrics}
        return state, dict(jax.tree.map(lambda ms, m: jnp.concatenate([ms, m[None]]), metrics, tail_metrics),
                           **health)

    return epoch
