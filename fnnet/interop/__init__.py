"""Doors in and out of fnnet: PyTorch models in and out, nanoGPT checkpoints in; each conversion
exact layer by layer.

* :func:`from_torch` ``(module, in_shape) -> (model, params, model_state)``: an ``nn.Sequential``
  (nested ones too) of the modules listed in :mod:`fnnet.interop.pytorch` as an fnnet model;
* :func:`to_torch` ``(model, params, model_state=None) -> nn.Sequential``: the inverse;
* :func:`from_nanogpt` ``(checkpoint) -> (model, params, config)``: nanoGPT's ``ckpt.pt`` as an
  fnnet GPT (:mod:`fnnet.interop.nanogpt`; ``fnnet convert nanogpt`` makes it a run folder).

Each layer knows its kind and its arguments (:attr:`fnnet.Layer.spec`) and its parameters'
layout, so a conversion is a rearrangement of the same numbers: outputs agree to rounding,
and so do the gradients (fnnet's hand-written backward against torch's autograd). PyTorch is
an optional dependency: ``pip install 'fnnet[interop]'``. The conventions (NCHW against NHWC,
BatchNorm's running variance and momentum, the two GELU forms, tied embeddings) are in
``docs/interop.md``.
"""

from fnnet.interop.nanogpt import from_nanogpt
from fnnet.interop.pytorch import ConversionError, from_torch, to_torch

__all__ = ["ConversionError", "from_nanogpt", "from_torch", "to_torch"]
