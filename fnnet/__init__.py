"""fnnet: a functional neural-network library whose backward passes are written by hand and checked.

The public API, at a glance:

* layers (``fnnet.Layer`` = ``(init, apply, forward, backward)``, :mod:`fnnet.layers`):
  :func:`Dense`, :data:`Relu`, :data:`Sigmoid`, :data:`Tanh`, :data:`Softmax`, :data:`Identity`,
  :func:`LeakyRelu`, :data:`Gelu`, :data:`Flatten`, :func:`Reshape`, :func:`Conv`, :func:`Conv1D`,
  :func:`MaxPool`, :func:`AvgPool`, :data:`GlobalAvgPool`, :func:`LayerNorm`, :func:`Embedding`,
  :func:`PositionalEmbedding`, :func:`Unembed`, :func:`CausalSelfAttention`; with a key and state
  (:func:`init_with_state`, :func:`apply_with_state`): :func:`Dropout`, :func:`BatchNorm`;
  combinators :func:`serial`, :func:`parallel`, :func:`FanOut`, :data:`FanInSum`,
  :func:`FanInConcat`, :func:`Residual`, :func:`Tied` (weight tying);
* :mod:`fnnet.initializers` and :mod:`fnnet.losses` (``fnnet.Loss`` = ``(value, grad)``);
* gradients: :func:`value_and_grad` (hand-written), :func:`autodiff_value_and_grad`
  (reference), :func:`objective` (``jax.custom_vjp``), :func:`per_example_grads`;
* :mod:`fnnet.gradcheck` and :func:`summary`;
* seeing inside (:mod:`fnnet.tracing`, :mod:`fnnet.diagnosis`): :func:`trace` (one step, every
  layer's values and gradients, each backward checked against ``jax.vjp``), :func:`explain` (one
  unit's chain rule with its numbers), :func:`debug_nans` (the first layer that stopped being
  finite), :func:`doctor` (the checks to run before training); ``fit(..., monitor=N)`` watches
  every layer while training;
* :mod:`fnnet.train` (``fit``, ``evaluate``, ``make_train_step``, ``fit_ensemble``),
  checkpoints :func:`save` / :func:`load`;
* :mod:`fnnet.gpt` (``GPT``, ``generate``) with :func:`fnnet.train.fit_language_model` and
  :func:`fnnet.datasets.tiny_shakespeare`: a character-level GPT, every backward by hand;
* the application (:mod:`fnnet.app`): :func:`load_run` / ``Run`` (a trained run folder),
  ``recipes``, the ``fnnet`` command line.

``train``, ``gpt``, ``gradcheck``, ``datasets``, ``distributed``, the see-inside tools and the
application's names are imported on first use, so ``import fnnet.layers`` stays light (no optax, no application).
"""

import importlib

from fnnet import checkpoint, initializers, layers, losses
from fnnet.checkpoint import load, save
from fnnet.combinators import FanInConcat, FanInSum, FanOut, Residual, Tied, parallel, serial
from fnnet.gradients import autodiff_value_and_grad, objective, per_example_grads, value_and_grad
from fnnet.layer import (Layer, Spec, apply_with_state, forward_with_state, init_with_state, is_stateful,
                         layer_name)
from fnnet.layers import (AvgPool, BatchNorm, CausalSelfAttention, Conv, Conv1D, Dense, Dropout, Embedding,
                          Flatten, Gelu, GlobalAvgPool,
                          Identity, LayerNorm, LeakyRelu, MaxPool, PositionalEmbedding, Relu, Reshape, Sigmoid, Softmax, Tanh,
                          Unembed)
from fnnet.losses import Loss
from fnnet.summary import Summary, summary

# Reached on first use (PEP 562): the modules that load optax (training, the GPT, gradient checking),
# the data sets, and the application (run folders, recipes, the command line), so that importing
# fnnet.layers or fnnet.gradients loads neither optax nor fnnet.app.
_LAZY_MODULES = {"train": "fnnet.train", "gpt": "fnnet.gpt", "gradcheck": "fnnet.gradcheck",
                 "datasets": "fnnet.datasets", "distributed": "fnnet.distributed", "app": "fnnet.app",
                 "recipes": "fnnet.app.recipes", "runs": "fnnet.app.runs", "cli": "fnnet.app.cli",
                 "shakespeare": "fnnet.app.shakespeare", "jobs": "fnnet.app.jobs", "tracing": "fnnet.tracing"}
_LAZY_NAMES = {"Run": ("fnnet.app.runs", "Run"), "load_run": ("fnnet.app.runs", "load_run"),
               "trace": ("fnnet.tracing", "trace"), "Trace": ("fnnet.tracing", "Trace"),
               "LayerTrace": ("fnnet.tracing", "LayerTrace"), "explain": ("fnnet.tracing", "explain"),
               "debug_nans": ("fnnet.tracing", "debug_nans"), "doctor": ("fnnet.diagnosis", "doctor"), "Diagnosis": ("fnnet.diagnosis", "Diagnosis")}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY_NAMES:
        module, attribute = _LAZY_NAMES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'fnnet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


__version__ = "0.1.0"

__all__ = [
    "AvgPool", "BatchNorm", "CausalSelfAttention", "Conv", "Conv1D", "Dense", "Dropout", "Embedding", "FanInConcat", "FanInSum", "FanOut",
    "Flatten", "Gelu", "GlobalAvgPool", "Identity", "Layer", "LayerNorm", "LeakyRelu", "Loss", "MaxPool",
    "PositionalEmbedding", "Relu", "Reshape", "Residual", "Run", "Sigmoid", "Softmax", "Spec", "Summary", "Tanh", "Tied", "Trace", "Unembed",
    "apply_with_state",
    "autodiff_value_and_grad", "checkpoint", "datasets", "debug_nans", "doctor", "explain", "forward_with_state", "gpt",
    "gradcheck", "init_with_state",
    "initializers", "is_stateful", "layer_name", "layers", "load", "load_run", "losses", "objective",
    "parallel", "per_example_grads", "save", "serial", "summary", "trace", "train", "value_and_grad",
]
