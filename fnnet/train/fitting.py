"""``fit``: epochs compiled once, history, evaluation, checkpoints, and a NaN stop."""

from __future__ import annotations

import sys
import time
from typing import Callable

import jax
import numpy as np
import optax

from fnnet import checkpoint, distributed, host, xla_options
from fnnet.gradients import check_compute_dtype, check_grad_mode
from fnnet.layer import Layer
from fnnet.losses import Loss, loss_name
from fnnet.train import inputs
from fnnet.train.augment import augment_batch
from fnnet.train.checkpointing import Checkpointer, check_checkpoint_dir
from fnnet.train.diverged import divergence_message, first_non_finite, located_divergence
from fnnet.train.epochs import epoch_batches, gather, make_epoch
from fnnet.train.evaluation import evaluate_arrays, evaluation_program, validate_targets
from fnnet.train.history import History
from fnnet.train.state import TrainingDiverged, TrainState, compile_ahead, init_state, state_shapes
from fnnet.train import monitor as layer_monitor
from fnnet.train.steps import check_monitor


class _Progress:
    """A tqdm bar on a terminal, moving inside each epoch; one plain line per epoch on stdout
    otherwise (logs, CI, ``| tee``)."""

    def __init__(self, done: int, epochs: int, verbose: bool, steps_per_epoch: int = 1):
        self.epochs, self.bar, self.lines = epochs, None, False
        self.steps_per_epoch, self.epoch_start, self.inside_updates = max(steps_per_epoch, 1), done, 0
        if not verbose:
            return
        if sys.stderr.isatty() and sys.stdout.isatty():
            from tqdm.auto import tqdm  # optional at import time: only a terminal needs it

            self.bar = tqdm(total=epochs, initial=done, unit="epoch", leave=True, desc="fit", mininterval=0.5,
                            bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        else:
            self.lines = True

    @property
    def on_steps(self):
        """The in-epoch callback for :func:`fnnet.train.make_epoch` (``None`` without a bar)."""
        return self._on_steps if self.bar is not None else None

    def _on_steps(self, steps_done) -> None:
        # runs inside the compiled epoch, which waits for it: only move the count; tqdm redraws at
        # most every mininterval (0.5 s), so a callback costs microseconds, not a terminal write
        self.inside_updates += 1
        self.bar.update(self.epoch_start + min(float(steps_done) / self.steps_per_epoch, 1.0) - self.bar.n)

    def update(self, history: History) -> None:
        if self.bar is not None:
            postfix = {"train_loss": f"{history.train_loss[-1]:.4f}"}
            if history.train_accuracy[-1] is not None:
                postfix["train_accuracy"] = f"{history.train_accuracy[-1]:.4f}"
            if history.eval_accuracy[-1] is not None:
                postfix["eval_accuracy"] = f"{history.eval_accuracy[-1]:.4f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.epoch_start = len(history)
            self.bar.n = self.epoch_start
            self.bar.refresh()
        elif self.lines:
            print(history.line(-1, self.epochs), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _located(message, model, loss, optimizer, before, x, y, batch_size, bad, augment=None,
             **step_options) -> TrainingDiverged:
    """The :class:`TrainingDiverged` for an epoch whose batch ``bad`` had a non-finite loss: the
    epoch replayed from ``before`` with the same batches (augmented as they were), the failing
    layer named."""
    batches = epoch_batches(model, before.key, before.step, x.shape[0], batch_size)

    def batch_of(state, b):
        indices, weights = batches[b]
        xb, yb = (x, y) if indices is None else (gather(x, indices), gather(y, indices))
        if augment is not None:
            xb = augment_batch(augment, state, xb)
        return xb, yb, weights

    return located_divergence(message, model, loss, optimizer, before, batch_of, bad, **step_options)


def _check_arguments(checkpoint_every, augment, epochs, batch_size, eval_batch_size) -> None:
    """The ``ValueError`` for a bad number or ``augment`` given to ``fit``."""
    if not isinstance(checkpoint_every, (int, float)) or not checkpoint_every >= 0:
        raise ValueError(f"fit: checkpoint_every must be a number of seconds >= 0, got {checkpoint_every!r}")
    if augment is not None and not callable(augment):
        raise ValueError(f"fit: augment must be a function augment(key, x_batch) -> x_batch, got {augment!r}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(eval_batch_size, int) or isinstance(eval_batch_size, bool) or eval_batch_size <= 0:
        raise ValueError(f"fit: eval_batch_size must be a positive int, got {eval_batch_size!r}")


def _epoch_program(model, loss, optimizer, placement, traces: list, **epoch_options):
    """``run_epoch(state, x, y)``: :func:`~fnnet.train.make_epoch` jitted with fnnet's XLA choices for
    this model (:mod:`fnnet.xla_options`), or for ``placement``'s mesh, counting its compilations in
    ``traces[0]``. Not donated: the state before an epoch stays valid, to replay the epoch if it
    diverges (a sharded state is donated, and copied first)."""
    epoch_body = make_epoch(model, loss, optimizer, constrain=placement.constrain_batch if placement else None,
                            **epoch_options)

    def counted(state, x, y):
        traces[0] += 1  # runs only while tracing: counts compilations
        return epoch_body(state, x, y)

    return xla_options.jit(counted, model) if placement is None else placement.jit_epoch(counted, model)


def _start(model, loss, optimizer, key, params, x, y, eval_data, run_epoch, *, placement, resume_from,
           eval_batch_size, task) -> TrainState:
    """``fit``'s state, ready for the first epoch: the targets checked against the model's shapes
    before anything compiles; the epoch (and evaluation) compiled while the model initialises
    (:func:`~fnnet.train.state.compile_ahead`; not with a mesh); the outputs of the initialised
    model checked; the checkpoint ``resume_from`` loaded; the state placed on the mesh."""
    ahead = None
    checked = [((x, y), "fit")] + ([(eval_data, "fit (eval_data)")] if eval_data is not None else [])
    shapes = state_shapes(model, optimizer, key, x.shape[1:], params)
    for data, where in checked if shapes is not None else ():  # the checks that need only shapes:
        validate_targets(model, loss, shapes.params, *data, where, shapes.model_state)  # before any compile
    if placement is None and shapes is not None:  # the epoch (and evaluation) compile while the model initialises
        def programs(state):
            yield run_epoch, (state, x, y)
            if eval_data is not None:
                yield (evaluation_program(model, loss, eval_data[0], batch_size=eval_batch_size, task=task),
                       (state.params, state.model_state, *eval_data))

        ahead = compile_ahead(shapes, programs)
    state = init_state(model, optimizer, key, x.shape[1:], params)
    for data, where in checked:  # the rest of validate(): outputs the initialised model gives
        if shapes is None:
            validate_targets(model, loss, state.params, *data, where, state.model_state)
        inputs.check_outputs(loss, model, state.params, data[0], where, model_state=state.model_state)
    if resume_from is not None:
        state = checkpoint.load(resume_from, like=state)
    if placement is not None:
        state = placement.put_state(state)
    if ahead is not None:
        ahead.join()
    return state


def _epoch_row(epoch: int, metrics, seconds: float, evaluated: dict | None) -> dict:
    """One epoch's row of :class:`History`: its batches' loss (and accuracy) weighted by their
    examples, the evaluation's, the seconds it took."""
    counts = np.asarray(metrics["count"])

    def mean(values):
        return float(np.sum(np.asarray(values) * counts) / np.sum(counts))

    return dict(epoch=epoch, train_loss=mean(metrics["loss"]),
                train_accuracy=mean(metrics["accuracy"]) if "accuracy" in metrics else None,
                eval_loss=evaluated["loss"] if evaluated else None,
                eval_accuracy=evaluated["accuracy"] if evaluated else None, seconds=seconds)


def fit(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, train_data, *,
        epochs: int, batch_size: int, key, eval_data=None, grad: str = "manual",
        params=None, task: str | None = None, eval_batch_size: int = 1024, verbose: bool = True,
        checkpoint_dir=None, resume: bool = False, on_epoch_end: Callable | None = None,
        mesh=None, compute_dtype=None, overwrite: bool = False,
        monitor: int | None = None, checkpoint_every: float = 0.0,
        augment: Callable | None = None) -> tuple[TrainState, History]:
    """Trains ``model`` on ``train_data = (x, y)``; returns ``(state, history)``.

    Each epoch shuffles on the device and runs all its batches in one jitted
    ``lax.scan`` (compiled once; without ``mesh`` and outside thread-local JAX settings, on a
    background thread while the model initialises, :func:`fnnet.train.state.compile_ahead`; a
    model with convolutions with :mod:`fnnet.xla_options`; no array you hold is ever donated: ``params`` are copied
    first, ``on_epoch_end`` gets a state of its own that stays valid, and the state before
    each epoch is kept until the epoch ends, to replay it if the loss diverges). The last partial batch is padded and
    masked: no example is dropped, nothing recompiles. A model with state (BatchNorm) gets
    a smaller last batch instead, so padding never enters its batch statistics
    (:func:`fnnet.train.make_epoch`).

    Before anything compiles, the data are checked on the host (:mod:`fnnet.train.inputs`):
    NaN/inf in ``x``, ``y`` or ``eval_data``, inputs the model cannot take, labels outside the
    model's classes, targets of a shape the loss does not take (named with ``y``'s whole shape,
    not one batch's), targets outside [0, 1] for the binary losses, and ``params`` that do not fit
    the model for examples of shape ``x.shape[1:]`` raise a ``ValueError`` naming what is wrong;
    so do outputs outside [0, 1] for a probability loss, found by running the initialised model
    on the first examples.

    Args:
      epochs: number of passes over the data (in total, when resuming).
      batch_size: examples per step.
      key: PRNG key for ``model.init`` and the shuffles.
      eval_data: optional ``(x, y)`` evaluated after every epoch.
      grad: ``"manual"`` (hand-written backward) or ``"autodiff"`` (``jax.grad``).
      params: start from these instead of ``model.init(key, x.shape[1:])`` (one example's
        shape, no batch axis); they are copied, never consumed.
      task: ``"multiclass"``, ``"binary"`` or ``"regression"`` (inferred from ``loss.kind``).
      verbose: a tqdm progress bar on a terminal; one plain line per epoch when stdout or
        stderr is not a terminal (logs, CI, pipes).
      checkpoint_dir: save the full :class:`TrainState` and history there after
        every epoch (``checkpoint.safetensors``, written atomically; see ``checkpoint_every``).
      checkpoint_every: with ``checkpoint_dir``, the seconds that must pass between two
        checkpoints (``0``, the default: after every epoch). A checkpoint is always written
        after the last epoch and at an early stop, and, when the last finished epoch has not
        been saved yet, on Ctrl-C (``KeyboardInterrupt``), when the output is lost (``OSError``: a
        pipe's reader gone, a full disk) and when the loss diverges (the last
        good state). Many tiny epochs (XOR: 1,000 of 4 examples) then cost a few writes, not
        one per epoch; a killed process loses at most this many seconds of training.
      resume: continue from ``checkpoint_dir``'s checkpoint if there is one.
      overwrite: replace a checkpoint already in ``checkpoint_dir`` (without ``resume``).
        By default a ``checkpoint_dir`` that holds one is refused (:class:`RunExists`): a
        finished run is never silently replaced.
      on_epoch_end: called as ``on_epoch_end(epoch, state, history)`` after each epoch (and
        after its checkpoint, when one is written); the state is a copy the callback may keep
        (best model).
        Returning ``True`` stops training there (early stopping): ``fit`` returns the
        state and history so far.
      mesh: a ``jax.sharding.Mesh`` for data-parallel training (see
        :mod:`fnnet.distributed`): batches are split along its first axis.
      compute_dtype: mixed precision (e.g. ``jnp.bfloat16``): forward and backward run in
        it, the params and optimizer state keep their dtype (float32 master weights).
      monitor: every ``monitor`` steps, record each layer's health inside the compiled step
        (:mod:`fnnet.train.monitor`: activation mean/std, dead ReLU units, saturated sigmoid/tanh
        outputs, ``‖dθ‖``, the update/weight ratio) into ``history.layers``, and warn once per
        layer (stderr when ``verbose``; kept in ``history.warnings``), e.g. ``layer 3 (Relu): 64%
        dead units since step 400``. ``history.plot_health(path)`` draws them. Off by default.
      augment: data augmentation on the device, ``augment(key, x_batch) -> x_batch`` (e.g.
        :func:`fnnet.train.random_translation`): each training batch is made anew inside the
        compiled epoch, with a key of the run's seed and the step (:mod:`fnnet.train.augment`),
        so a resumed run sees the same examples. ``eval_data`` is never augmented.

    Raises:
      TrainingDiverged: the loss became NaN/inf (the message names epoch and step);
        the last good checkpoint is kept.
      RunExists: ``checkpoint_dir`` already holds a checkpoint and neither ``resume`` nor
        ``overwrite`` was given.
      fnnet.checkpoint.CheckpointWriteError: a checkpoint could not be written (disk full);
        the message names the file and the epoch of the checkpoint that is kept.
      ValueError: bad arguments or data, before anything is compiled.

    Long (its docstring is half of it): the loop reads top to bottom as the epochs run; its parts live in
    :mod:`fnnet.train.checkpointing`, :mod:`fnnet.train.state` and :mod:`fnnet.train.epochs`.
    """
    check_grad_mode(grad)
    check_compute_dtype(compute_dtype)
    check_monitor(monitor, grad, "fit")
    ckpt_path = check_checkpoint_dir(checkpoint_dir, resume, overwrite, "fit")
    _check_arguments(checkpoint_every, augment, epochs, batch_size, eval_batch_size)
    x, y = inputs.as_arrays(train_data, "fit")
    if eval_data is not None:
        eval_data = inputs.as_arrays(eval_data, "fit (eval_data)")
    if params is not None:
        inputs.check_params(model, params, x.shape[1:], "fit", batch=x.shape[0])
    n = x.shape[0]
    batch_size = min(batch_size, n)
    placement = None
    if mesh is not None:
        placement = distributed.DataParallel(mesh, batch_size)
        x, y = placement.put_data(x), placement.put_data(y)
    resume_from = ckpt_path if resume and ckpt_path is not None and ckpt_path.exists() else None
    history = History.from_dict(checkpoint.read_metadata(resume_from)["history"]) if resume_from else History()
    history.traces = 0

    traces = [0]
    progress = _Progress(len(history), epochs, verbose, steps_per_epoch=-(-n // batch_size))
    run_epoch = _epoch_program(model, loss, optimizer, placement, traces, n=n, batch_size=batch_size, grad=grad,
                               task=task, compute_dtype=compute_dtype, on_steps=progress.on_steps, monitor=monitor,
                               augment=augment)
    try:
        state = _start(model, loss, optimizer, key, params, x, y, eval_data, run_epoch, placement=placement,
                       resume_from=resume_from, eval_batch_size=eval_batch_size, task=task)
        checkpoints = Checkpointer(ckpt_path, history, state, every=checkpoint_every, metadata=lambda done: {
            "epoch": done, "in_shape": list(x.shape[1:]), "loss": loss_name(loss)})
        with checkpoints.kept_on_interrupt():  # Ctrl-C, or the output gone (`fnnet train ... | head`, a full disk)
            for epoch in range(len(history), epochs):
                start_step = int(state.step)
                before = state if placement is None else host.owned_copy(state)  # replayed if the epoch diverges
                checkpoints.finished(epoch, before)  # a sharded `state` is donated to the epoch: its copy stays valid
                started = time.perf_counter()
                state, metrics = run_epoch(state, x, y)
                metrics = jax.device_get(metrics)
                seconds = time.perf_counter() - started
                losses = np.asarray(metrics["loss"])
                bad = first_non_finite(losses)
                if bad is not None:
                    message = divergence_message("fit", losses[bad], start_step + bad + 1,
                                                 checkpoints.last_good(before, epoch), epoch=epoch + 1, batch=bad + 1)
                    raise _located(message, model, loss, optimizer, before, x, y, batch_size, bad, augment=augment,
                                   grad=grad, task=task, compute_dtype=compute_dtype)
                evaluated = None if eval_data is None else evaluate_arrays(
                    model, state.params, loss, *eval_data, batch_size=eval_batch_size, task=task, mesh=mesh,
                    model_state=state.model_state)
                history.append(**_epoch_row(epoch + 1, metrics, seconds, evaluated))
                history.traces = traces[0]
                warnings = []
                if monitor is not None:
                    layer_monitor.record(history, metrics["health"], start_step + 1 + np.asarray(metrics["health_at"]))
                    warnings = layer_monitor.health_warnings(history)
                checkpoints.finished(epoch + 1, state)  # from here a Ctrl-C or a lost output keeps this epoch
                progress.update(history)
                for message in warnings if verbose else ():
                    print(f"fit: warning: {message}", file=sys.stderr, flush=True)
                checkpoints.save_if_due(state, epoch + 1, last=epoch + 1 == epochs)
                if on_epoch_end is not None and on_epoch_end(epoch + 1, host.owned_copy(state), history) is True:
                    checkpoints.save_unsaved(state, epoch + 1)
                    break  # early stopping: the callback asked for it
    finally:
        progress.close()
    history.traces = traces[0]
    return state, history
