"""Training a language model on one long sequence of token ids (nanoGPT's loop, compiled).

A step draws ``batch_size`` random windows of ``block_size + 1`` tokens *on the device*
(``x`` the first ``block_size``, ``y`` the same shifted by one) and takes one optimizer step
on the mean next-token cross-entropy. ``eval_interval`` steps run in one jitted
``lax.scan``; between them the training loss of the interval and an estimate of the
validation loss (``eval_batches`` random batches) are recorded, as nanoGPT does.
:func:`evaluate_language_model` gives the exact loss over a whole split.

The windows of step ``s`` come from ``fold_in(data_key, s)``, a function of the state's key
and step alone, so a run resumed from a checkpoint continues bit for bit. With
``windows="streams"`` (truncated backprop through time for a recurrent model that keeps its
carry, :func:`fnnet.layers.recurrent.Stateful`), step ``s`` reads instead the ``s``-th window of
each of ``batch_size`` streams that read the text in order (:func:`stream_windows`), a function
of the step alone too.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet import checkpoint
from fnnet.distributed import DataParallel
from fnnet.gradients import check_grad_mode, per_example_loss
from fnnet.host import on_device
from fnnet.layer import Layer, abstract_init, apply_with_state
from fnnet.losses import softmax_cross_entropy
from fnnet.plots import pyplot, save_figure
from fnnet.train.checkpointing import Checkpointer, check_checkpoint_dir
from fnnet.train.diverged import divergence_message, first_non_finite, located_divergence
from fnnet.train.history import Record
from fnnet.train.state import TrainState, compile_ahead, init_state, state_shapes
from fnnet.train.steps import make_train_step

_DATA_STREAM = 0x5EED  # windows use fold_in(key, _DATA_STREAM), dropout keys fold_in(key, step)


@dataclasses.dataclass
class LanguageHistory(Record):
    """What :func:`fit_language_model` records every ``eval_interval`` steps."""

    rows: ClassVar[tuple] = ("step", "train_loss", "val_loss", "seconds", "elapsed")

    step: list = dataclasses.field(default_factory=list)
    train_loss: list = dataclasses.field(default_factory=list)   # mean batch loss over the interval
    val_loss: list = dataclasses.field(default_factory=list)     # estimate on eval_batches batches
    seconds: list = dataclasses.field(default_factory=list)      # training time of the interval
    elapsed: list = dataclasses.field(default_factory=list)
    """Wall seconds from the start of this :func:`fit_language_model` call to the end of each
    interval's validation estimate (compilation included; a resumed run counts from its resume)."""

    def __len__(self):
        return len(self.step)

    def line(self, index: int = -1, steps: int | None = None) -> str:
        """``step 250/2000  train_loss 2.3012  val_loss 2.3181  9.8 s``."""
        return (f"step {self.step[index]}" + (f"/{steps}" if steps else "")
                + f"  train_loss {self.train_loss[index]:.4f}  val_loss {self.val_loss[index]:.4f}"
                + f"  {self.seconds[index]:.1f} s")

    def plot(self, path, *, target: float | None = None) -> pathlib.Path:
        """Writes the training and validation loss against the step to a PNG."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(self.step, self.train_loss, marker="o", label="train (interval mean)")
        ax.plot(self.step, self.val_loss, marker="o", label="validation (estimate)")
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", label=f"target {target:g}")
        ax.set(xlabel="step", ylabel="cross-entropy (nats per token)", title="loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)


def check_tokens(tokens, vocab_size: int, where: str, *, min_length: int) -> np.ndarray:
    """The token ids as a 1-D int32 NumPy array, or a ValueError naming what is wrong
    (not integers, not 1-D, too short, an id outside ``[0, vocab_size)``)."""
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D array of token ids, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{where}: token ids must be integers, got dtype {array.dtype}")
    if array.shape[0] < min_length:
        raise ValueError(f"{where}: {array.shape[0]} tokens, need at least {min_length} "
                         f"(one window of block_size + 1)")
    bad = (array < 0) | (array >= vocab_size)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{where}: token id {int(array[index])} at position {index} is outside the "
                         f"model's vocabulary [0, {vocab_size}) ({int(bad.sum())} such ids)")
    return array.astype(np.int32)


def random_windows(tokens, key, batch_size: int, block_size: int):
    """``(x, y)``, each ``(batch_size, block_size)``: windows at uniform random starts, ``y`` = ``x``
    shifted by one token. Runs on the device (jit- and scan-friendly)."""
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - block_size)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (block_size + 1,)))(starts)
    return windows[:, :-1], windows[:, 1:]


def stream_windows(tokens, step, batch_size: int, block_size: int):
    """``(x, y)`` of step ``step`` for ``batch_size`` streams reading the text in order: the text's
    whole windows cut into ``batch_size`` equal parts of ``L`` tokens, stream ``n`` starts at ``n·L``
    and step ``s`` reads its ``s``-th window, so that row ``n`` of one step is continued by row ``n``
    of the next. Each stream reads the text cyclically (past its part, the next part, which is what
    follows in the text; past the last part, the first), so the batches repeat every ``L /
    block_size`` steps (an epoch). Runs on the device (jit- and scan-friendly)."""
    part = (tokens.shape[0] - 1) // (batch_size * block_size) * block_size
    starts = (jnp.arange(batch_size) * part + step * block_size) % (batch_size * part)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (block_size + 1,)))(starts)
    return windows[:, :-1], windows[:, 1:]


WINDOWS = ("random", "streams")
"""How :func:`fit_language_model` draws a step's windows: :func:`random_windows` (each from a fresh
start, nanoGPT's) or :func:`stream_windows` (consecutive, for truncated backprop through time)."""


def _vocab_size(model: Layer, block_size: int) -> int:
    out_shape, _, _ = abstract_init(model, (block_size,))
    return int(out_shape[-1])


def estimate_loss(model: Layer, params, tokens, key, *, block_size: int, batch_size: int, batches: int,
                  model_state=()):
    """nanoGPT's ``estimate_loss``: the mean loss (eval mode) over ``batches`` batches of random
    windows, in one jittable call."""

    def one(key):
        x, y = random_windows(tokens, key, batch_size, block_size)
        logits, _ = apply_with_state(model, params, model_state, x, train=False)
        return softmax_cross_entropy.value(logits, y)

    return jnp.mean(jax.lax.map(one, jax.random.split(key, batches)))


def evaluate_language_model(model: Layer, params, tokens, *, block_size: int, batch_size: int = 64,
                            model_state=()) -> dict:
    """The exact mean next-token loss over a whole split, in eval mode.

    The split is cut into consecutive non-overlapping windows of ``block_size`` inputs (each
    predicting the next ``block_size`` tokens, as training's random windows do); a tail
    shorter than a window is left out. Returns ``{"loss", "tokens", "bits_per_token"}``.
    """
    tokens = check_tokens(tokens, _vocab_size(model, block_size), "evaluate_language_model",
                          min_length=block_size + 1)
    x, y = consecutive_windows(tokens, block_size)
    windows = x.shape[0]
    batch_size = min(batch_size, windows)
    padded = -(-windows // batch_size) * batch_size
    weights = (np.arange(padded) < windows).astype(np.float32).reshape(-1, batch_size)
    x = np.pad(x, ((0, padded - windows), (0, 0))).reshape(-1, batch_size, block_size)
    y = np.pad(y, ((0, padded - windows), (0, 0))).reshape(-1, batch_size, block_size)

    @jax.jit
    def total(params, model_state, x, y, weights):
        def body(carry, batch):
            bx, by, bw = batch
            logits, _ = apply_with_state(model, params, model_state, bx, train=False)
            return carry + jnp.sum(per_example_loss(softmax_cross_entropy, logits, by) * bw).astype(carry.dtype), None

        # the sum in JAX's default float: float64 under x64 (a float64 model), else float32
        return jax.lax.scan(body, jnp.zeros((), jnp.result_type(float)), (x, y, weights))[0]

    loss = float(total(params, model_state, x, y, weights)) / windows
    return {"loss": loss, "tokens": int(windows * block_size), "bits_per_token": loss / np.log(2)}


def consecutive_windows(tokens, block_size: int, count: int | None = None):
    """``(x, y)``, each ``(windows, block_size)``: ``tokens`` cut into consecutive
    non-overlapping windows from the start (``count`` of them, or all that fit), ``y`` each
    window's next tokens; a tail shorter than a window is left out."""
    tokens = np.asarray(tokens)
    windows = (tokens.shape[0] - 1) // block_size
    windows = windows if count is None else min(count, windows)
    return (tokens[:windows * block_size].reshape(windows, block_size),
            tokens[1:windows * block_size + 1].reshape(windows, block_size))


def step_windows(tokens, state: TrainState, batch_size: int, block_size: int, windows: str = "random"):
    """The windows ``(x, y)`` the training step at ``state`` draws: from
    ``fold_in(fold_in(state.key, DATA), state.step)`` (``windows="streams"``: the step's windows of
    :func:`stream_windows`), so a replay draws the same ones."""
    if windows == "streams":
        return stream_windows(tokens, state.step, batch_size, block_size)
    return random_windows(tokens, jax.random.fold_in(jax.random.fold_in(state.key, _DATA_STREAM), state.step),
                          batch_size, block_size)


def make_interval(model: Layer, optimizer: optax.GradientTransformation, *, block_size: int,
                  batch_size: int, grad: str = "manual", compute_dtype=None, windows: str = "random", mesh=None):
    """``interval(state, tokens, length) -> (state, losses)``: ``length`` training steps in one
    ``lax.scan`` (``length`` static), each on random windows drawn on the device from
    ``fold_in(fold_in(state.key, DATA), state.step)`` (``windows="streams"``: :func:`stream_windows`);
    ``losses`` holds each step's batch loss. What :func:`fit_language_model` jits, and what the
    benchmarks time. With ``mesh``, each device computes the gradients of its share of each step's
    windows (:func:`fnnet.train.make_train_step`'s ``mesh``)."""
    step_fn = make_train_step(model, softmax_cross_entropy, optimizer, grad=grad, compute_dtype=compute_dtype,
                              mesh=mesh)

    def interval(state, tokens, length):
        def body(state, _):
            x, y = step_windows(tokens, state, batch_size, block_size, windows)
            state, metrics = step_fn(state, x, y)
            return state, metrics["loss"]

        return jax.lax.scan(body, state, None, length=length)

    return interval


def _programs(model: Layer, optimizer, *, block_size: int, batch_size: int, eval_batches: int, grad: str,
              compute_dtype, windows: str, eval_block_size: int, placement: DataParallel | None):
    """:func:`fit_language_model`'s two jitted programs: ``run_interval(state, tokens, length)``
    (:func:`make_interval`; not donated: the state before an interval replays a divergence) and
    ``val_estimate(state, tokens)`` (:func:`estimate_loss` on windows of a key of its own)."""
    interval = make_interval(model, optimizer, block_size=block_size, batch_size=batch_size, grad=grad,
                             compute_dtype=compute_dtype, windows=windows,
                             mesh=None if placement is None else placement.mesh)
    run_interval = (jax.jit(interval, static_argnums=2) if placement is None else
                    jax.jit(interval, static_argnums=2, out_shardings=placement.replicated))

    @jax.jit
    def val_estimate(state, tokens):
        eval_key = jax.random.fold_in(jax.random.fold_in(state.key, _DATA_STREAM + 1), state.step)
        return estimate_loss(model, state.params, tokens, eval_key, block_size=eval_block_size,
                             batch_size=batch_size, batches=eval_batches, model_state=state.model_state)

    return run_interval, val_estimate


def _placement(mesh, batch_size: int, windows: str) -> DataParallel | None:
    """Where :func:`fit_language_model` puts its state, tokens and batches for ``mesh`` (``None``: one device);
    a batch that does not divide over it, or ``windows="streams"``, is a ValueError."""
    if mesh is None:
        return None
    if windows == "streams":
        raise ValueError("fit_language_model: windows='streams' keeps each stream's carry in the model's state; "
                         "it cannot be split over a mesh (use windows='random')")
    return DataParallel(mesh, batch_size)


def fit_language_model(model: Layer, optimizer: optax.GradientTransformation, train_tokens, val_tokens, *,
                       block_size: int, batch_size: int = 12, steps: int = 2000, eval_interval: int = 250,
                       eval_batches: int = 20, key, grad: str = "manual", params=None,
                       compute_dtype=None, verbose: bool = True, checkpoint_dir=None,
                       resume: bool = False, metadata: dict | None = None,
                       overwrite: bool = False, windows: str = "random",
                       eval_block_size: int | None = None, mesh=None) -> tuple[TrainState, LanguageHistory]:
    """Trains a next-token model (e.g. :func:`fnnet.gpt.GPT`) on 1-D arrays of token ids.

    Every ``eval_interval`` steps (one compiled ``lax.scan``), it records the mean training
    loss of the interval and a validation estimate on ``eval_batches`` random batches, prints
    a line (``verbose``), and saves the whole :class:`TrainState` to ``checkpoint_dir``.

    Args:
      model: ids ``(B, T)`` -> logits ``(B, T, vocab)``; trained with
        :data:`fnnet.losses.softmax_cross_entropy` (the mean over all ``B·T`` predictions).
      optimizer: any optax transformation (see :func:`fnnet.gpt.optimizer`).
      train_tokens, val_tokens: 1-D integer arrays; checked on the host first (ids outside
        the model's vocabulary, too short for a window).
      block_size: tokens of context per window; batch_size: windows per step.
      steps: optimizer steps in all (when resuming, in total).
      key: PRNG key for the init, the windows and dropout.
      grad: ``"manual"`` (hand-written backward) or ``"autodiff"`` (``jax.grad``).
      params: start from these (copied, never consumed) instead of ``model.init``.
      checkpoint_dir: save the :class:`TrainState` and history there after every interval
        (``checkpoint.safetensors``, with ``metadata``), as :func:`fnnet.train.fit` does
        (:class:`fnnet.train.checkpointing.Checkpointer`): on Ctrl-C (``KeyboardInterrupt``) and
        when the output is lost (``OSError``), the last finished interval is kept.
      resume: continue from ``checkpoint_dir``'s checkpoint if there is one.
      overwrite: replace a checkpoint already in ``checkpoint_dir``; without it (or ``resume``)
        such a folder is refused with :class:`fnnet.train.RunExists`.
      windows: ``"random"`` (each step's windows at random starts) or ``"streams"`` (consecutive
        windows of ``batch_size`` streams, :func:`stream_windows`: truncated backprop through time
        for a model that keeps its carry, :func:`fnnet.layers.recurrent.Stateful`).
      eval_block_size: the validation estimate's window (default ``block_size``): a recurrent
        model trains on windows of one length and is estimated on the GPT's.
      mesh: a ``jax.sharding.Mesh`` (e.g. :func:`fnnet.distributed.data_mesh`) to train data-parallel:
        the state and the tokens replicated on its devices, each computing the gradients of its share
        of every step's windows at the same time (``batch_size`` must divide evenly over them; not with
        ``windows="streams"``, whose carries belong to their streams). On a CPU of several cores, as
        many CPU devices (``jax.config.update("jax_num_cpu_devices", n)`` before JAX starts) run a
        recurrent model's sequential loops side by side, where one device runs each loop on one core.

    Raises:
      TrainingDiverged: the loss became NaN or infinite (the message names the step); the last
        good checkpoint is kept.
      RunExists: ``checkpoint_dir`` holds a checkpoint and neither ``resume`` nor ``overwrite``.
      ValueError: bad arguments or tokens, before anything compiles.

    Long (its docstring is a third of it): the loop reads top to bottom as the steps run; its parts live
    in :mod:`fnnet.train.checkpointing` and :mod:`fnnet.train.state`.
    """
    called = time.perf_counter()  # history.elapsed counts from here: compilation included
    check_grad_mode(grad)
    ckpt_path = check_checkpoint_dir(checkpoint_dir, resume, overwrite, "fit_language_model")
    eval_block_size = block_size if eval_block_size is None else eval_block_size
    for name, value in (("block_size", block_size), ("batch_size", batch_size), ("steps", steps),
                        ("eval_interval", eval_interval), ("eval_batches", eval_batches),
                        ("eval_block_size", eval_block_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"fit_language_model: {name} must be a positive int, got {value!r}")
    if windows not in WINDOWS:
        raise ValueError(f"fit_language_model: windows must be one of {', '.join(WINDOWS)}, got {windows!r}")
    placement = _placement(mesh, batch_size, windows)
    vocab_size = _vocab_size(model, block_size)
    train_tokens = check_tokens(train_tokens, vocab_size, "fit_language_model (train_tokens)",
                                min_length=(batch_size if windows == "streams" else 1) * block_size + 1)
    val_tokens = check_tokens(val_tokens, vocab_size, "fit_language_model (val_tokens)",
                              min_length=eval_block_size + 1)
    place = on_device if placement is None else placement.put_data
    train_device, val_device = place(train_tokens), place(val_tokens)
    run_interval, val_estimate = _programs(model, optimizer, block_size=block_size, batch_size=batch_size,
                                           eval_batches=eval_batches, grad=grad, compute_dtype=compute_dtype,
                                           windows=windows, eval_block_size=eval_block_size, placement=placement)
    # to compile while the model initialises (not over a mesh: the shapes carry no placement)
    shapes = state_shapes(model, optimizer, key, (block_size,), params) if placement is None else None
    ahead = None if shapes is None else compile_ahead(
        shapes, lambda state: [(run_interval, (state, train_device, min(eval_interval, steps))),
                               (val_estimate, (state, val_device))])
    state = init_state(model, optimizer, key, (block_size,), params)
    history = LanguageHistory()
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, like=state)
        history = LanguageHistory.from_dict(checkpoint.read_metadata(ckpt_path)["history"])
    if ahead is not None:
        ahead.join()
    if placement is not None:
        state = placement.put_state(state)

    def batch_of(state, b):  # the windows of the replayed steps
        return (*step_windows(train_device, state, batch_size, block_size, windows), None)

    checkpoints = Checkpointer(ckpt_path, history, state, metadata=lambda done: dict(metadata or {}))
    done = int(state.step)
    with checkpoints.kept_on_interrupt():  # Ctrl-C, or the output gone (a pipe's reader, a full disk)
        while done < steps:
            length = min(eval_interval, steps - done)
            started = time.perf_counter()
            before = state
            state, losses = run_interval(state, train_device, length)
            losses = np.asarray(jax.device_get(losses))
            seconds = time.perf_counter() - started
            bad = first_non_finite(losses)
            if bad is not None:
                message = divergence_message("fit_language_model", losses[bad], done + bad + 1,
                                             checkpoints.last_good(before, len(history)))
                raise located_divergence(message, model, softmax_cross_entropy, optimizer, before, batch_of, bad,
                                         grad=grad, compute_dtype=compute_dtype)
            done += length
            history.append(step=done, train_loss=float(np.mean(losses)),
                           val_loss=float(val_estimate(state, val_device)), seconds=seconds,
                           elapsed=time.perf_counter() - called)
            checkpoints.finished(len(history), state)  # from here a Ctrl-C or a lost output keeps this interval
            if verbose:
                print(history.line(-1, steps), flush=True, file=sys.stdout)
            checkpoints.save_if_due(state, len(history))
    return state, history
