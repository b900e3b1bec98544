"""fnnet: a functional neural-network library whose backward passes are written by hand and checked.

The public API, at a glance:

* layers (``fnnet.Layer`` = ``(init, apply, forward, backward)``, :mod:`fnnet.layers`):
  :func:`Dense`, :data:`Relu`, :data:`Sigmoid`, :data:`Tanh`, :data:`Softmax`, :data:`Identity`,
  :func:`LeakyRelu`, :data:`Gelu`, :data:`Flatten`, :func:`Reshape`, :func:`Conv`, :func:`Conv1D`,
  :func:`MaxPool`, :func:`AvgPool`, :data:`GlobalAvgPool`, :func:`LayerNorm`, :func:`RMSNorm`,
  :data:`ReluSquared`, :func:`SoftCap`, :func:`Embedding`,
  :func:`PositionalEmbedding`, :func:`Unembed`, :func:`CausalSelfAttention`, the recurrent
  :func:`RNN`, :func:`LSTM`, :func:`GRU` and :func:`Bidirectional` (on arrays or a
  :class:`Sequences`: padded lengths, an initial carry); with a key and state
  (:func:`init_with_state`, :func:`apply_with_state`): :func:`Dropout`, :func:`BatchNorm`;
  combinators :func:`serial`, :func:`parallel`, :func:`FanOut`, :data:`FanInSum`,
  :func:`FanInConcat`, :func:`Residual`, :func:`Tied` (weight tying);
* :mod:`fnnet.initializers` and :mod:`fnnet.losses` (``fnnet.Loss`` = ``(value, grad)``);
* gradients: :func:`value_and_grad` (hand-written), :func:`autodiff_value_and_grad`
  (reference), :func:`objective` (``jax.custom_vjp``), :func:`per_example_grads`;
* :mod:`fnnet.gradcheck` and :func:`summary`;
* seeing inside: :func:`trace` (:mod:`fnnet.tracing`: one step, every layer's values and
  gradients, each forward checked against its ``apply`` and each backward against ``jax.vjp``),
  :func:`explain` (:mod:`fnnet.explanation`: one unit's chain rule with its numbers),
  :func:`debug_nans` (:mod:`fnnet.nans`: the first layer that stopped being finite),
  :func:`doctor` (:mod:`fnnet.diagnosis`: the checks to run before training), the statistics in
  :mod:`fnnet.health`; ``fit(..., monitor=N)`` watches every layer while training;
* :mod:`fnnet.train` (``fit``, ``evaluate``, ``make_train_step``, ``fit_ensemble``),
  checkpoints :func:`save` / :func:`load`;
* :mod:`fnnet.gpt` (``GPT``, ``generate``) with :func:`fnnet.train.fit_language_model` and
  :func:`fnnet.datasets.tiny_shakespeare`: a character-level GPT, every backward by hand;
* the application (:mod:`fnnet.app`): :func:`load_run` / ``Run`` (a trained run folder),
  ``recipes``, the ``fnnet`` command line.

Every name is imported on first use (``import fnnet`` alone loads nothing, so ``fnnet --help``
answers without JAX), and ``import fnnet.layers`` stays light (no optax, no application).
"""

import importlib

# Every public name is reached on first use (PEP 562): ``import fnnet`` loads nothing else, so that
# ``fnnet --help`` answers without JAX; ``fnnet.Dense`` loads the layers (and JAX) then, and the
# modules that load optax (training, the GPT, gradient checking), the data sets and the application
# (run folders, recipes, the command line) only when they are used: importing fnnet.layers or
# fnnet.gradients loads neither optax nor fnnet.app.
#
# The one table of the public names: the modules (``fnnet.recipes`` is the application's, as its
# examples write it) and, by module, the names taken from them. ``__all__`` is derived from it, and
# fnnet/__init__.pyi declares the same names for type checkers and editors (tests/test_layering.py
# keeps the three equal).
_LAZY_MODULES = {"checkpoint": "fnnet.checkpoint", "initializers": "fnnet.initializers", "layers": "fnnet.layers",
                 "losses": "fnnet.losses", "train": "fnnet.train", "gpt": "fnnet.gpt", "gradcheck": "fnnet.gradcheck",
                 "datasets": "fnnet.datasets", "distributed": "fnnet.distributed", "app": "fnnet.app",
                 "recipes": "fnnet.app.recipes", "tracing": "fnnet.tracing", "interop": "fnnet.interop",
                 "xla_options": "fnnet.xla_options"}
_FROM = {
    "fnnet.checkpoint": ("load", "save"),
    "fnnet.combinators": ("FanInConcat", "FanInSum", "FanOut", "Residual", "parallel", "serial"),
    "fnnet.tied": ("Tied",),
    "fnnet.gradients": ("autodiff_value_and_grad", "objective", "per_example_grads", "value_and_grad"),
    "fnnet.layer": ("Layer", "Spec", "apply_with_state", "forward_with_state", "init_with_state", "is_stateful",
                    "layer_name"),
    "fnnet.layers": ("AvgPool", "BatchNorm", "Bidirectional", "CausalSelfAttention", "Conv", "Conv1D", "Dense",
                     "Dropout", "Embedding", "Flatten", "GRU", "Gelu", "GlobalAvgPool", "Identity", "LSTM", "LayerNorm",
                     "LeakyRelu", "MaxPool", "PositionalEmbedding", "RMSNorm", "RNN", "Relu", "ReluSquared", "Reshape",
                     "Sigmoid", "SoftCap", "Softmax", "Tanh", "Unembed"),
    "fnnet.layers.recurrent": ("Sequences",),  # not a layer: the input of one (the catalogue covers fnnet.layers')
    "fnnet.losses": ("Loss",),
    "fnnet.summaries": ("Summary", "summary"),
    "fnnet.app.runs": ("Run", "load_run"),
    "fnnet.tracing": ("trace", "Trace", "LayerTrace"),
    "fnnet.explanation": ("explain",),
    "fnnet.nans": ("debug_nans", "NonFinite"),
    "fnnet.diagnosis": ("doctor", "Diagnosis"),
}
_LAZY_NAMES = {name: (module, name) for module, names in _FROM.items() for name in names}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY_NAMES:
        module, attribute = _LAZY_NAMES[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # the next use is a plain attribute
        return value
    raise AttributeError(f"module 'fnnet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


__version__ = "0.1.0"

__all__ = sorted(set(_LAZY_MODULES) | set(_LAZY_NAMES))
