"""Training: a jit-compiled step, whole epochs in one ``lax.scan``, optax optimizers.

The tutorials train with a Python loop that prints the cost. Here:

* :func:`make_train_step` builds a pure ``step(state, x, y) -> (state, metrics)``
  whose gradient is the hand-written backward (``grad="manual"``) or ``jax.grad``
  (``grad="autodiff"``), so both can be compared on the same run;
* :func:`fit` shuffles on the device (a sort-free keyed permutation, :mod:`fnnet.shuffle`)
  and runs all of an epoch's batches inside one
  jitted ``lax.scan``; a last partial batch is padded and masked (no recompile, no
  example dropped); the data stays on the device between epochs; it can checkpoint
  every epoch and resume, and stops with an error naming the step on a NaN;
* :func:`evaluate`, :func:`predict`, :func:`predict_proba` work in batches;
* :func:`fit_compiled` runs init and every epoch of one model in a single compiled call;
  :func:`fit_ensemble` trains K models from K keys at once with ``jax.vmap`` of it.

Regularisation ``J = L + λ Ω(θ)`` and every optimizer come from optax, e.g.
``optax.chain(optax.add_decayed_weights(λ, mask=weight_decay_mask), optax.sgd(0.1, momentum=0.9))``.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet import checkpoint
from fnnet.layer import Layer
from fnnet.losses import Loss, loss_kind
from fnnet.shuffle import permutation

CHECKPOINT_NAME = "checkpoint.safetensors"


class TrainState(NamedTuple):
    """Everything training needs to continue: a pytree, so it can be jitted, donated and saved."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


def init_state(model: Layer, optimizer: optax.GradientTransformation, key, in_shape,
               params=None) -> TrainState:
    """A fresh :class:`TrainState`: ``model.init`` (unless ``params`` is given) and ``optimizer.init``."""
    init_key, state_key = jax.random.split(key)
    if params is None:
        _, params = model.init(init_key, in_shape)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), state_key)


# --- what a prediction means: accuracy and probabilities ---------------------------------

def resolve_task(loss: Loss, task: str | None) -> str | None:
    """``"multiclass"``, ``"binary"`` or ``None`` (no accuracy), inferred from the loss if not given."""
    if task is not None:
        if task not in ("multiclass", "binary", "regression"):
            raise ValueError(f"task must be 'multiclass', 'binary' or 'regression', got {task!r}")
        return None if task == "regression" else task
    return {"multiclass_logits": "multiclass", "logits": "binary",
            "probabilities": "binary"}.get(loss_kind(loss))


def _correct(loss: Loss, task: str | None, pred, y):
    """Per-example correctness in [0, 1] (None when the task has no accuracy)."""
    if task == "multiclass":
        labels = y if y.ndim == pred.ndim - 1 else jnp.argmax(y, axis=-1)
        return (jnp.argmax(pred, axis=-1) == labels).astype(jnp.float32)
    if task == "binary":
        threshold = 0.0 if loss_kind(loss) == "logits" else 0.5  # logits vs sigmoid output
        hits = (pred > threshold) == (y > 0.5)
        return jnp.mean(hits.astype(jnp.float32), axis=-1)
    return None


def _per_example_loss(loss: Loss, pred, y):
    return jax.vmap(lambda p, t: loss.value(p[None], t[None]))(pred, y)


def _loss_and_grads(model, loss, grad, params, x, y, weights):
    """(value, grads, pred) for a batch; ``weights`` (0/1 per example) mask padding."""
    if weights is None:
        if grad == "manual":
            pred, residuals = model.forward(params, x)
            grads, _ = model.backward(params, residuals, loss.grad(pred, y))
            return loss.value(pred, y), grads, pred

        def total(p):
            pred = model.apply(p, x)
            return loss.value(pred, y), pred
    else:
        count = jnp.maximum(jnp.sum(weights), 1)
        if grad == "manual":
            pred, residuals = model.forward(params, x)
            # loss.grad averages over the B rows of the batch; reweight to the valid ones.
            scale = (weights * (weights.shape[0] / count)).astype(pred.dtype)
            delta = loss.grad(pred, y) * scale.reshape(scale.shape + (1,) * (pred.ndim - 1))
            grads, _ = model.backward(params, residuals, delta)
            value = jnp.sum(_per_example_loss(loss, pred, y) * weights) / count
            return value, grads, pred

        def total(p):
            pred = model.apply(p, x)
            return jnp.sum(_per_example_loss(loss, pred, y) * weights) / count, pred
    (value, pred), grads = jax.value_and_grad(total, has_aux=True)(params)
    return value, grads, pred


def _check_grad_mode(grad):
    if grad not in ("manual", "autodiff"):
        raise ValueError(f"grad must be 'manual' (hand-written backward) or 'autodiff' (jax.grad), "
                         f"got {grad!r}")


def make_train_step(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, *,
                    grad: str = "manual", task: str | None = None):
    """Returns a pure ``step(state, x, y, weights=None) -> (state, metrics)`` to ``jax.jit``.

    Args:
      model, loss: what to train.
      optimizer: any ``optax.GradientTransformation``.
      grad: ``"manual"`` for the hand-written backward, ``"autodiff"`` for ``jax.grad``.
      task: ``"multiclass"``, ``"binary"`` or ``"regression"``; inferred from the loss.

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
    _check_grad_mode(grad)
    task = resolve_task(loss, task)

    def step(state: TrainState, x, y, weights=None):
        value, grads, pred = _loss_and_grads(model, loss, grad, state.params, x, y, weights)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value}
        correct = _correct(loss, task, pred, y)
        if correct is not None:
            metrics["accuracy"] = (jnp.mean(correct) if weights is None else
                                   jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1))
        return TrainState(params, opt_state, state.step + 1, state.key), metrics

    return step


def _batch_plan(key, nonce, n: int, batch_size: int, shuffle: bool = True):
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


def _gather(data, indices):
    """Rows ``indices`` of ``data``; every index is valid by construction, so no bounds fill."""
    return jnp.take(data, indices, axis=0, mode="clip")


def make_epoch(model: Layer, loss: Loss, optimizer, *, n: int, batch_size: int,
               grad: str = "manual", task: str | None = None, shuffle: bool = True,
               constrain: Callable | None = None):
    """Returns ``epoch(state, x, y) -> (state, metrics)``: one shuffled pass in a ``lax.scan``.

    Not jitted: :func:`fit` jits it (with the state donated) and :func:`fit_ensemble`
    vmaps it. ``metrics`` has one entry per batch, plus ``count`` (valid examples per batch).
    ``constrain`` (e.g. a sharding constraint) is applied to each gathered batch.
    """
    step = make_train_step(model, loss, optimizer, grad=grad, task=task)
    full = n % batch_size == 0  # then no padding, no masking

    def epoch(state: TrainState, x, y):
        if n <= batch_size:  # full batch: order does not matter, no gather, no mask
            xb, yb = (constrain(x), constrain(y)) if constrain is not None else (x, y)
            state, metrics = step(state, xb, yb)
            metrics["count"] = jnp.asarray(n, jnp.float32)
            return state, jax.tree.map(lambda m: m[None], metrics)
        order, weights = _batch_plan(state.key, state.step, n, batch_size, shuffle)

        def body(state, plan):
            indices, batch_weights = plan
            xb, yb = _gather(x, indices), _gather(y, indices)
            if constrain is not None:
                xb, yb = constrain(xb), constrain(yb)
            if full:  # every batch is whole: the plain step, no masking work at all
                state, metrics = step(state, xb, yb)
                metrics["count"] = jnp.asarray(batch_size, jnp.float32)
            else:
                if constrain is not None:
                    batch_weights = constrain(batch_weights)
                state, metrics = step(state, xb, yb, batch_weights)
                metrics["count"] = jnp.sum(batch_weights)
            return state, metrics

        return jax.lax.scan(body, state, (order, None if full else weights))

    return epoch


# --- history ---------------------------------------------------------------------------

@dataclasses.dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run."""

    epoch: list = dataclasses.field(default_factory=list)
    train_loss: list = dataclasses.field(default_factory=list)
    train_accuracy: list = dataclasses.field(default_factory=list)
    eval_loss: list = dataclasses.field(default_factory=list)
    eval_accuracy: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    traces: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def __len__(self):
        return len(self.epoch)

    def plot(self, path) -> pathlib.Path:
        """Writes a PNG with the loss and accuracy curves (train and eval) to ``path``."""
        from fnnet.plots import pyplot, save_figure

        plt = pyplot()
        has_acc = any(a is not None for a in self.train_accuracy + self.eval_accuracy)
        fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4))
        axes = np.atleast_1d(axes)
        for name, values in (("train", self.train_loss), ("eval", self.eval_loss)):
            if any(v is not None for v in values):
                axes[0].plot(self.epoch, values, marker="o", label=name)
        axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
        if has_acc:
            for name, values in (("train", self.train_accuracy), ("eval", self.eval_accuracy)):
                if any(v is not None for v in values):
                    axes[1].plot(self.epoch, values, marker="o", label=name)
            axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)


# --- evaluation -------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _evaluator(model: Layer, loss: Loss, batch_size: int, n: int, task: str | None, mesh=None):
    placement = None
    if mesh is not None:
        from fnnet.distributed import DataParallel

        placement = DataParallel(mesh, batch_size)

    def run(params, x, y):
        order, weights = _batch_plan(None, 0, n, batch_size, shuffle=False)

        def body(totals, plan):
            indices, w = plan
            xb, yb = _gather(x, indices), _gather(y, indices)
            if placement is not None:
                xb, yb, w = placement.constrain_batch(xb), placement.constrain_batch(yb), \
                    placement.constrain_batch(w)
            pred = model.apply(params, xb)
            loss_sum = jnp.sum(_per_example_loss(loss, pred, yb) * w)
            correct = _correct(loss, task, pred, yb)
            correct_sum = jnp.sum(correct * w) if correct is not None else jnp.zeros(())
            return (totals[0] + loss_sum, totals[1] + correct_sum), None

        zero = jnp.zeros((), jnp.result_type(float))
        (loss_sum, correct_sum), _ = jax.lax.scan(body, (zero, zero), (order, weights))
        return loss_sum / n, correct_sum / n

    return jax.jit(run)


def evaluate(model: Layer, params, loss: Loss, data, *, batch_size: int = 1024,
             task: str | None = None, mesh=None) -> dict:
    """Mean loss and accuracy of ``params`` on ``data = (x, y)``, computed in batches.

    Accuracy: multi-class takes the argmax; binary thresholds the sigmoid output at
    0.5 (logits at 0); regression has none (``accuracy`` is ``None``). With a
    ``mesh``, each batch is split over its devices (the batch size is rounded up
    to a multiple of the device count; padding is masked out).
    """
    x, y = _as_arrays(data, "evaluate")
    task = resolve_task(loss, task)
    batch_size = max(1, min(batch_size, x.shape[0]))
    if mesh is not None:
        from fnnet.distributed import DataParallel

        devices = mesh.shape[mesh.axis_names[0]]
        batch_size = -(-batch_size // devices) * devices
        placement = DataParallel(mesh, batch_size)
        x, y, params = placement.put_data(x), placement.put_data(y), placement.put_state(params)
    mean_loss, accuracy = _evaluator(model, loss, batch_size, x.shape[0], task, mesh)(params, x, y)
    return {"loss": float(mean_loss), "accuracy": float(accuracy) if task else None}


def predict(model: Layer, params, x, *, batch_size: int = 4096):
    """``model.apply`` over ``x`` in batches (the raw outputs: logits for fused losses)."""
    x = _on_device(x)
    apply = jax.jit(model.apply)
    return jnp.concatenate([apply(params, x[i:i + batch_size])
                            for i in range(0, x.shape[0], batch_size)]) if x.shape[0] else apply(params, x)


def predict_proba(model: Layer, params, x, loss: Loss, *, batch_size: int = 4096):
    """Probabilities: softmax of logits (multi-class), sigmoid of logits (binary), else the output."""
    out = predict(model, params, x, batch_size=batch_size)
    kind = loss_kind(loss)
    if kind == "multiclass_logits":
        return jax.nn.softmax(out, axis=-1)
    if kind == "logits":
        return jax.nn.sigmoid(out)
    return out


# --- fit ----------------------------------------------------------------------------------

def _on_device(array):
    # device_put copies a NumPy array to the device once; jnp.asarray would alias it and then be
    # copied again at every jit boundary that needs an owned buffer (a dataset-sized copy each).
    return array if isinstance(array, jax.Array) else jax.device_put(np.asarray(array))


def _as_arrays(data, where):
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError(f"{where}: data must be a pair (x, y), got {type(data).__name__}") from None
    x, y = _on_device(x), _on_device(y)
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: x and y must have the same number of examples on axis 0, "
                         f"got x {x.shape} and y {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: the data set is empty")
    return x, y


def weight_decay_mask(params):
    """A mask for ``optax.add_decayed_weights``: decay the weights ``w``, not the biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(path) and getattr(path[-1], "key", None) == "w", params)


def fit(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, train_data, *,
        epochs: int, batch_size: int, key, eval_data=None, grad: str = "manual",
        params=None, task: str | None = None, eval_batch_size: int = 1024, verbose: bool = True,
        checkpoint_dir=None, resume: bool = False, on_epoch_end: Callable | None = None,
        mesh=None) -> tuple[TrainState, History]:
    """Trains ``model`` on ``train_data = (x, y)``; returns ``(state, history)``.

    Each epoch shuffles on the device and runs all its batches in one jitted
    ``lax.scan`` (compiled once, the state's buffers donated). The last partial
    batch is padded and masked: no example is dropped, nothing recompiles.

    Args:
      epochs: number of passes over the data (in total, when resuming).
      batch_size: examples per step.
      key: PRNG key for ``model.init`` and the shuffles.
      eval_data: optional ``(x, y)`` evaluated after every epoch.
      grad: ``"manual"`` (hand-written backward) or ``"autodiff"`` (``jax.grad``).
      params: start from these instead of ``model.init``.
      task: ``"multiclass"``, ``"binary"`` or ``"regression"`` (inferred from the loss).
      verbose: a tqdm progress bar (also quiet when stderr is not a terminal).
      checkpoint_dir: save the full :class:`TrainState` and history there after
        every epoch (``checkpoint.safetensors``, written atomically).
      resume: continue from ``checkpoint_dir``'s checkpoint if there is one.
      on_epoch_end: called as ``on_epoch_end(epoch, state, history)``.
      mesh: a ``jax.sharding.Mesh`` for data-parallel training (see
        :mod:`fnnet.distributed`): batches are split along its first axis.

    Raises:
      TrainingDiverged: the loss became NaN/inf (the message names epoch and step);
        the last good checkpoint is kept.
    """
    _check_grad_mode(grad)
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
    x, y = _as_arrays(train_data, "fit")
    n = x.shape[0]
    batch_size = min(batch_size, n)
    placement = None
    if mesh is not None:
        from fnnet import distributed

        placement = distributed.DataParallel(mesh, batch_size)
        x, y = placement.put_data(x), placement.put_data(y)

    state = init_state(model, optimizer, key, x.shape[1:], params)
    history = History()
    ckpt_path = pathlib.Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, like=state)
        history = History.from_dict(checkpoint.read_metadata(ckpt_path)["history"])
        history.traces = 0
    if placement is not None:
        state = placement.put_state(state)

    traces = [0]
    epoch_body = make_epoch(model, loss, optimizer, n=n, batch_size=batch_size, grad=grad, task=task,
                            constrain=placement.constrain_batch if placement else None)

    def counted(state, x, y):
        traces[0] += 1  # runs only while tracing: counts compilations
        return epoch_body(state, x, y)

    run_epoch = jax.jit(counted, donate_argnums=0) if placement is None else \
        placement.jit_epoch(counted)
    if eval_data is not None:
        eval_data = _as_arrays(eval_data, "fit (eval_data)")

    from tqdm.auto import tqdm

    progress = tqdm(range(len(history), epochs), initial=len(history), total=epochs, unit="epoch",
                    disable=None if verbose else True, leave=True, desc="fit")
    for epoch in progress:
        start_step = int(state.step)
        started = time.perf_counter()
        state, metrics = run_epoch(state, x, y)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - started
        losses = np.asarray(metrics["loss"])
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            kept = f"; the last good checkpoint ({ckpt_path}) is kept" if ckpt_path and ckpt_path.exists() else ""
            raise TrainingDiverged(f"fit: loss became {losses[bad]} at epoch {epoch + 1}, step "
                                   f"{start_step + bad + 1} (batch {bad + 1} of the epoch){kept}")
        counts = np.asarray(metrics["count"])
        history.epoch.append(epoch + 1)
        history.train_loss.append(float(np.sum(losses * counts) / np.sum(counts)))
        history.train_accuracy.append(float(np.sum(np.asarray(metrics["accuracy"]) * counts) / np.sum(counts))
                                      if "accuracy" in metrics else None)
        if eval_data is not None:
            result = evaluate(model, state.params, loss, eval_data, batch_size=eval_batch_size,
                              task=task, mesh=mesh)
            history.eval_loss.append(result["loss"])
            history.eval_accuracy.append(result["accuracy"])
        else:
            history.eval_loss.append(None)
            history.eval_accuracy.append(None)
        history.seconds.append(seconds)
        history.traces = traces[0]
        postfix = {"loss": f"{history.train_loss[-1]:.4f}"}
        if history.train_accuracy[-1] is not None:
            postfix["acc"] = f"{history.train_accuracy[-1]:.4f}"
        if history.eval_accuracy[-1] is not None:
            postfix["eval_acc"] = f"{history.eval_accuracy[-1]:.4f}"
        progress.set_postfix(postfix)
        if ckpt_path is not None and jax.process_index() == 0:  # one writer in multi-host runs
            checkpoint.save(ckpt_path, state, metadata={"history": history.to_dict(),
                                                        "epoch": epoch + 1})
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, state, history)
    progress.close()
    history.traces = traces[0]
    return state, history


# --- everything on the device: one model or an ensemble ------------------------------------

@functools.lru_cache(maxsize=32)
def _compiled_trainer(model, loss, optimizer, n, in_shape, *, epochs, batch_size, grad, task,
                      ensemble):
    """The jitted ``(key(s), x, y) -> (state, per-epoch losses, final train accuracy)``; cached so
    that calling :func:`fit_compiled` / :func:`fit_ensemble` again with the same objects reuses it."""
    _check_grad_mode(grad)
    batch_size = n if batch_size is None else min(batch_size, n)
    task_resolved = resolve_task(loss, task)
    epoch = make_epoch(model, loss, optimizer, n=n, batch_size=batch_size, grad=grad, task=task)

    def train_one(key, x, y):
        state = init_state(model, optimizer, key, in_shape)

        def one_epoch(state, _):
            state, metrics = epoch(state, x, y)
            return state, jnp.sum(metrics["loss"] * metrics["count"]) / n

        state, losses = jax.lax.scan(one_epoch, state, None, length=epochs)
        correct = _correct(loss, task_resolved, model.apply(state.params, x), y)
        accuracy = jnp.mean(correct) if correct is not None else jnp.zeros(())
        return state, losses, accuracy

    run = jax.vmap(train_one, in_axes=(0, None, None)) if ensemble else train_one
    return jax.jit(run), task_resolved


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
    x, y = _as_arrays(train_data, "fit_compiled")
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
    x, y = _as_arrays(train_data, "fit_ensemble")
    run, task_resolved = _compiled_trainer(model, loss, optimizer, x.shape[0], x.shape[1:],
                                           epochs=epochs, batch_size=batch_size, grad=grad, task=task,
                                           ensemble=True)
    states, losses, accuracy = run(jnp.asarray(keys), x, y)
    return states, {"loss": losses, "accuracy": accuracy if task_resolved else None}
