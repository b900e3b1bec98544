"""fnnet: a functional neural-network library whose backward passes are written by hand and checked.

The public API, at a glance:

* layers (``fnnet.Layer`` = ``(init, apply, forward, backward)``): :func:`Dense`,
  :data:`Relu`, :data:`Sigmoid`, :data:`Tanh`, :data:`Softmax`, :data:`Identity`,
  :func:`LeakyRelu`, :data:`Gelu`, :data:`Flatten`; combinator :func:`serial`;
* :mod:`fnnet.initializers` and :mod:`fnnet.losses` (``fnnet.Loss`` = ``(value, grad)``);
* gradients: :func:`value_and_grad` (hand-written), :func:`autodiff_value_and_grad`
  (reference), :func:`objective` (``jax.custom_vjp``), :func:`per_example_grads`;
* :mod:`fnnet.gradcheck` and :func:`summary`;
* :mod:`fnnet.train` (``fit``, ``evaluate``, ``make_train_step``, ``fit_ensemble``),
  checkpoints :func:`save` / :func:`load`.
"""

from fnnet import checkpoint, datasets, gradcheck, initializers, losses, train
from fnnet.checkpoint import load, save
from fnnet.activations import Gelu, Identity, LeakyRelu, Relu, Sigmoid, Softmax, Tanh
from fnnet.combinators import serial
from fnnet.dense import Dense
from fnnet.gradients import autodiff_value_and_grad, objective, per_example_grads, value_and_grad
from fnnet.layer import Layer, layer_name
from fnnet.losses import Loss
from fnnet.reshape import Flatten
from fnnet.summary import Summary, summary

__version__ = "0.1.0"

__all__ = [
    "Dense", "Flatten", "Gelu", "Identity", "Layer", "LeakyRelu", "Loss", "Relu", "Sigmoid",
    "Softmax", "Summary", "Tanh", "autodiff_value_and_grad", "checkpoint", "datasets", "gradcheck",
    "initializers", "layer_name", "load", "losses", "objective", "per_example_grads", "save",
    "serial", "summary", "train", "value_and_grad",
]
