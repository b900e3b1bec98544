"""Doors in and out of fnnet: PyTorch models in and out, nanoGPT checkpoints in; each conversion
exact layer by layer.

* :func:`from_torch` ``(module, in_shape) -> (model, params, model_state)``: an ``nn.Sequential``
  (nested ones too) of the modules listed in :mod:`fnnet.interop.pytorch` as an fnnet model;
* :func:`to_torch` ``(model, params, model_state=None) -> nn.Sequential``: the inverse;
  ``SequenceOutput`` and ``LastHidden``, two small torch modules made on first use, pick from a
  recurrent module's ``(output, h_n)`` in a Sequential (:mod:`fnnet.interop.recurrent_torch`);
* :func:`from_nanogpt` ``(checkpoint) -> (model, params, config)``: nanoGPT's ``ckpt.pt`` as an
  fnnet GPT (:mod:`fnnet.interop.nanogpt`; ``fnnet convert nanogpt`` makes it a run folder);
* :func:`to_onnx` ``(model, params, in_shape, path, *, model_state=None, opset=None)``: the model in
  evaluation mode as an ONNX graph (:mod:`fnnet.interop.onnx`; ``fnnet export RUN_DIR model.onnx``),
  and :func:`check_onnx`, onnxruntime's outputs against fnnet's.

Each layer knows its kind and its arguments (:attr:`fnnet.Layer.spec`) and its parameters'
layout, so a conversion is a rearrangement of the same numbers: outputs agree to rounding,
and so do the gradients (fnnet's hand-written backward against torch's autograd). PyTorch, onnx
and onnxruntime are optional dependencies: ``pip install 'fnnet[interop]'``. The conventions (NCHW against NHWC,
BatchNorm's running variance and momentum, the two GELU forms, tied embeddings) are in
``docs/interop.md``.
"""

from fnnet.interop import recurrent_torch
from fnnet.interop.nanogpt import from_nanogpt
from fnnet.interop.onnx import check_onnx, to_onnx
from fnnet.interop.pytorch import ConversionError, from_torch, to_torch

__all__ = ["ConversionError", "check_onnx", "from_nanogpt", "from_torch", "to_onnx", "to_torch"]


def __getattr__(name):
    """``SequenceOutput`` and ``LastHidden``, the torch modules that pick from a recurrent module's
    ``(output, h_n)`` (:mod:`fnnet.interop.recurrent_torch`): made, and torch imported, on first use."""
    if name in recurrent_torch.PICKERS:
        return getattr(recurrent_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
