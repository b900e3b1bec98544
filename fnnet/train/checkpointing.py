"""A training loop's checkpoints: the run folder's check, when a checkpoint is due, writing it, and
which one a Ctrl-C, a lost output or a divergence keeps.

:func:`fnnet.train.fit` counts epochs, :func:`fnnet.train.fit_language_model` intervals of
``eval_interval`` steps; both hand each finished one to the same :class:`Checkpointer`.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
from typing import Callable

import jax

from fnnet import checkpoint
from fnnet.train.history import Record

CHECKPOINT_NAME = "checkpoint.safetensors"


class RunExists(ValueError):
    """``fit`` was asked to write into a folder that already holds a run's checkpoint, with
    neither ``resume=True`` (continue it) nor ``overwrite=True`` (replace it)."""


def checkpoint_progress(path) -> tuple[str, int] | None:
    """Where the checkpoint at ``path`` stands: ``("epoch", 5)`` (``fit``) or ``("step", 750)``
    (``fit_language_model``); ``None`` when there is none or it cannot be read."""
    try:
        metadata = checkpoint.read_metadata(path)
    except (checkpoint.CheckpointError, OSError):
        return None
    if metadata.get("epoch") is not None:
        return "epoch", int(metadata["epoch"])
    steps = (metadata.get("history") or {}).get("step") or []
    return ("step", int(steps[-1])) if steps else None


def save_checkpoint(path, state, metadata: dict) -> None:
    """Writes a training checkpoint; when that fails (disk full), a CheckpointWriteError
    saying which checkpoint is kept: ``could not write run/checkpoint.safetensors: File too
    large; the previous checkpoint (epoch 5) is kept``."""
    try:
        checkpoint.save(path, state, metadata=metadata)
    except checkpoint.CheckpointWriteError as error:
        kept = checkpoint_progress(path)
        cause = error.__cause__
        reason = getattr(cause, "strerror", None) or str(cause or error)
        tail = f"; the previous checkpoint ({kept[0]} {kept[1]}) is kept" if kept else "; there is no earlier one"
        raise checkpoint.CheckpointWriteError(f"could not write {path}: {reason}{tail}") from cause


def check_checkpoint_dir(checkpoint_dir, resume: bool, overwrite: bool, where: str):
    """``checkpoint_dir / CHECKPOINT_NAME`` (or ``None``); :class:`RunExists` when it already exists
    and neither ``resume`` nor ``overwrite`` says what to do with it."""
    if not checkpoint_dir:
        return None
    path = pathlib.Path(checkpoint_dir) / CHECKPOINT_NAME
    if path.exists() and not resume and not overwrite:
        raise RunExists(f"{where}: {checkpoint_dir} already holds a checkpoint ({path.name}); pass "
                        f"resume=True to continue it or overwrite=True to replace it")
    return path


class Checkpointer:
    """The checkpoints of one training loop, which counts *units* (epochs, or intervals of steps):
    ``done`` below is how many are finished, and ``history`` holds exactly one row per finished unit.

    The loop calls :meth:`finished` once a unit's row is recorded, then :meth:`save_if_due`;
    :meth:`save_unsaved` at an early stop; :meth:`last_good` before raising a divergence; and runs
    inside :meth:`kept_on_interrupt`. With no ``path`` nothing is written. Only process 0 writes
    (multi-host runs).

    Args:
      path: the checkpoint file (:func:`check_checkpoint_dir`), or ``None``.
      history: the loop's :class:`~fnnet.train.history.Record`, saved with each checkpoint.
      state: the state the loop starts from (``len(history)`` units done: a resumed run's).
      metadata: ``metadata(done)``, what else a checkpoint's metadata holds (``{"epoch": done}``).
      every: the seconds that must pass between two checkpoints (``0``: after every unit).
    """

    def __init__(self, path, history: Record, state, metadata: Callable[[int], dict] = lambda done: {},
                 every: float = 0.0):
        self.path, self.history, self.metadata, self.every = path, history, metadata, every
        self.saved, self.at = len(history), time.perf_counter()  # the checkpoint on disk, and when it was written
        self.done, self.state = len(history), state              # the last unit whose state and row are complete

    def finished(self, done: int, state) -> None:
        """Unit ``done`` is complete, its row recorded: from here a Ctrl-C or a lost output keeps it.
        (Also re-points to an equal ``state`` that stays valid when the loop donates its own.)"""
        self.done, self.state = done, state

    def save(self, state, done: int) -> None:
        """Writes the checkpoint of ``state`` after ``done`` units."""
        if self.path is not None and jax.process_index() == 0:  # one writer in multi-host runs
            save_checkpoint(self.path, state, {"history": self.history.to_dict(), **self.metadata(done)})
        self.saved, self.at = done, time.perf_counter()

    def save_if_due(self, state, done: int, last: bool = False) -> None:
        """Writes the checkpoint after the ``last`` unit, or when ``every`` seconds have passed."""
        if self.path is not None and (last or time.perf_counter() - self.at >= self.every):
            self.save(state, done)

    def save_unsaved(self, state, done: int) -> None:
        """Writes the checkpoint of ``state`` after ``done`` units unless the one on disk holds them."""
        if self.path is not None and self.saved < done:
            self.save(state, done)

    def last_good(self, before, done: int) -> str:
        """Before a divergence is raised: writes ``before``, the state after ``done`` units, when it is
        not on disk yet, and returns the message's tail: ``; the last good checkpoint (...) is kept``."""
        self.save_unsaved(before, done)
        return f"; the last good checkpoint ({self.path}) is kept" if self.path and self.path.exists() else ""

    @contextlib.contextmanager
    def kept_on_interrupt(self):
        """Around the loop: on Ctrl-C (``KeyboardInterrupt``) or a lost output (``OSError``: a pipe's
        reader gone, a full disk), writes the last finished unit if it is not on disk, then re-raises."""
        try:
            yield self
        except (KeyboardInterrupt, OSError):
            if self.done == len(self.history) and self.history.complete():  # not in the middle of a row
                self.save_unsaved(self.state, self.done)  # keep the units already trained
            raise
