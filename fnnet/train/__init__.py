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

The package, one idea per file: :mod:`~fnnet.train.state` (``TrainState``),
:mod:`~fnnet.train.steps` (one step), :mod:`~fnnet.train.epochs` (one scanned epoch),
:mod:`~fnnet.train.fitting` (``fit``), :mod:`~fnnet.train.checkpointing` (the checkpoints
``fit`` and ``fit_language_model`` write, and which one a Ctrl-C keeps), :mod:`~fnnet.train.evaluation`,
:mod:`~fnnet.train.history`, :mod:`~fnnet.train.augment` (data augmentation inside the
compiled epoch, ``random_translation``), :mod:`~fnnet.train.compiled` (``fit_compiled``,
``fit_ensemble``), :mod:`~fnnet.train.language` (``fit_language_model``: next-token training on
random windows of one long text, drawn on the device), :mod:`~fnnet.train.inputs` (the host-side data checks) and
:mod:`~fnnet.train.tasks` (what a prediction means).
"""

from fnnet.train.augment import augment_key, random_translation
from fnnet.train.compiled import fit_compiled, fit_ensemble
from fnnet.train.epochs import make_epoch
from fnnet.train.evaluation import evaluate, predict, predict_proba
from fnnet.train.checkpointing import CHECKPOINT_NAME, RunExists, checkpoint_progress
from fnnet.train.fitting import fit
from fnnet.train.history import History
from fnnet.train.language import (LanguageHistory, evaluate_language_model, fit_language_model,
                                  random_windows)
from fnnet.train.state import TrainingDiverged, TrainState, init_state, weight_decay_mask
from fnnet.train.steps import make_train_step
from fnnet.train.tasks import resolve_task

__all__ = [
    "CHECKPOINT_NAME", "History", "LanguageHistory", "RunExists", "TrainState", "TrainingDiverged", "checkpoint_progress", "evaluate",
    "evaluate_language_model", "fit", "fit_compiled", "fit_ensemble", "fit_language_model", "init_state",
    "make_epoch", "make_train_step", "predict", "predict_proba", "random_translation", "random_windows",
    "resolve_task", "augment_key",
    "weight_decay_mask",
]
