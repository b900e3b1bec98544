"""What both directions of the PyTorch bridge share: the optional import, the error, the layouts
(channels-first against channels-last) and moving tensors between the two without a silent cast."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.host import on_device

INSTALL = "pip install 'fnnet[interop]'"


class ConversionError(ValueError):
    """A model that cannot be converted: the message names the module or layer and its position."""


def import_torch():
    try:
        import torch  # optional dependency: the interop extra
    except ImportError as error:
        raise ImportError(f"fnnet.interop needs PyTorch: {INSTALL}") from error
    return torch


# --- layouts ----------------------------------------------------------------------------------


def flatten_order(shape: tuple) -> np.ndarray:
    """``order[i]``: the torch (channels-first) flat index of fnnet's (channels-last) flat index
    ``i``, for one example of fnnet shape ``(spatial..., C)``."""
    channels_first = np.arange(math.prod(shape)).reshape((shape[-1],) + tuple(shape[:-1]))
    return np.moveaxis(channels_first, 0, -1).reshape(-1)


class Walk:
    """Where a conversion stands: fnnet's example shape, whether torch holds it channels-first
    (``"image"``), as a pooled ``(C, 1, 1)`` that fnnet holds as ``(C,)`` (``"pooled"``: after a
    ``GlobalAvgPool``, until a Flatten or a ``Reshape((1, 1, C))``) or as features last
    (``"features"``), and the feature order a Flatten left for the next mixing layer."""

    def __init__(self, shape, layout, rank=2):
        self.shape, self.layout, self.order, self.rank = tuple(shape), layout, None, rank
        self.module = None  # the torch module being converted, for messages


def host_array(tensor, what: str) -> np.ndarray:
    """A torch tensor's values as a NumPy array of the same dtype (bfloat16 as ml_dtypes'; otherwise
    a view of the tensor's memory, which :func:`jax_array` and :func:`fnnet.host.on_device` copy when
    they move it), for rearranging on the host first: a transpose of a JAX array outside ``jit``
    compiles a program per shape. ``what``
    (``"module 0: weight"``) names it in the error for float64 while JAX's x64 mode is off (never a
    silent cast)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == import_torch().bfloat16:  # numpy has no bfloat16: through float32, exact both ways
        return tensor.float().numpy().astype(jnp.bfloat16)
    value = tensor.numpy()
    if value.dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ConversionError(f"{what} is float64 but JAX's x64 mode is off: enable it "
                              f"(jax.config.update('jax_enable_x64', True)) or convert module.float() first")
    return value


def jax_array(tensor, what: str):
    """A torch tensor's values as a JAX array of the same dtype (:func:`host_array`, on the device)."""
    return on_device(host_array(tensor, what))


def tensor(torch, value):
    array = np.array(value)
    if array.dtype == jnp.bfloat16:  # torch reads no numpy bfloat16: through float32, exact both ways
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(array)


def inverse(order):
    """Index that takes fnnet's feature order back to torch's (everything, when there is no order)."""
    if order is None:
        return slice(None)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return inverse


def torch_dtype(torch, array):
    return {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32,
            np.dtype(np.float16): torch.float16, np.dtype(jnp.bfloat16): torch.bfloat16}.get(
        np.asarray(array).dtype, torch.float32)
