"""When training diverges: replay the failing steps outside the compiled loop and name the layer.

The compiled loop only sees that a step's loss is not finite. From the state at the start of
that epoch (or interval), :func:`locate_divergence` replays the steps one by one with the same
batches, finds the first whose loss, gradients or updated parameters are not finite, and runs
that step layer by layer (:func:`fnnet.debug_nans`): the first layer whose forward output or
backward ``dx`` / ``dparams`` stopped being finite, with what fed it.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from fnnet.layer import Layer, is_stateful
from fnnet.losses import Loss
from fnnet.nans import NonFinite, debug_nans
from fnnet.train.state import TrainingDiverged, TrainState
from fnnet.train.steps import make_train_step
from fnnet import xla_options


def first_non_finite(losses) -> int | None:
    """The index of the first NaN or inf among a compiled run's step ``losses``; ``None`` when all
    are finite."""
    losses = np.asarray(losses)
    return None if np.all(np.isfinite(losses)) else int(np.argmax(~np.isfinite(losses)))


def divergence_message(where: str, value, step: int, kept: str = "", *, epoch: int | None = None,
                       batch: int | None = None) -> str:
    """The first line of a divergence: ``fit: loss became nan at epoch 3, step 11 (batch 3 of the
    epoch); the last good checkpoint (...) is kept``, or ``... at step 11`` without an epoch."""
    at = f"epoch {epoch}, step {step} (batch {batch} of the epoch)" if epoch is not None else f"step {step}"
    return f"{where}: loss became {value} at {at}{kept}"


def located_divergence(message: str, model: Layer, loss: Loss, optimizer, before: TrainState, batch_of: Callable,
                       last: int, **step_options) -> TrainingDiverged:
    """The :class:`TrainingDiverged` to raise for a compiled run whose step ``last`` (counted from
    ``before``) had a non-finite loss: ``message``, and where the replay found it. The replay is a
    diagnosis only: when it fails itself, the error says so and the divergence is still raised."""
    step_fn = xla_options.jit(make_train_step(model, loss, optimizer, **step_options), model)  # as the epoch
    try:
        located = locate_divergence(model, loss, step_fn, before, batch_of, last)
    except Exception as error:
        return TrainingDiverged(f"{message} (the failing layer could not be located: {error})")
    return diverged_error(message, located)


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.inexact))


def locate_divergence(model: Layer, loss: Loss, step_fn: Callable, before: TrainState, batch_of: Callable,
                      last: int) -> tuple[int, NonFinite | None, float | None] | None:
    """Replays steps ``0..last`` from ``before`` with ``step_fn`` (a jitted training step) on
    ``batch_of(state, b) -> (x, y, weights)``; at the first step whose loss or updated parameters
    are not finite, returns ``(its step number, where it happened, the loss of the step before)``.
    ``None`` when the replay stays finite (it should not)."""
    state, previous = before, None
    stateful = is_stateful(model)
    for b in range(last + 1):
        xb, yb, weights = batch_of(state, b)
        new_state, metrics = step_fn(state, xb, yb, weights)
        value = float(metrics["loss"])
        if not np.isfinite(value) or not _finite(new_state.params):
            if weights is not None:
                keep = np.asarray(weights) > 0
                xb, yb = np.asarray(xb)[keep], np.asarray(yb)[keep]
            key = jax.random.fold_in(state.key, state.step) if stateful else None
            found = debug_nans(model, loss, state.params, xb, yb, state=state.model_state, key=key, train=True,
                               updated_params=new_state.params)
            return int(state.step) + 1, found, previous
        state, previous = new_state, value
    return None


def diverged_error(message: str, located) -> TrainingDiverged:
    """A :class:`TrainingDiverged` with ``message``, the located layer appended, and its
    ``step`` / ``layer_index`` / ``layer_name`` / ``where`` set."""
    if located is None:
        return TrainingDiverged(message)
    step, found, previous = located
    if found is None:
        return TrainingDiverged(message, step=step)
    before = f"; the loss was {previous:.3g} the step before" if previous is not None else ""
    advice = f": {found.advice}" if found.advice else ""
    return TrainingDiverged(f"{message}. Where: step {step}: {found.message}{before}{advice}", step=step,
                            layer_index=found.layer_index, layer_name=found.layer_name, where=found.where,
                            path=found.path)
