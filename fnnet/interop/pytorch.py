"""PyTorch ``nn.Sequential`` ↔ fnnet ``serial``, module by module.

Supported, both ways (torch → fnnet):

======================================  =========================================================
``Linear(bias=...)``                    ``Dense(out, use_bias=...)``; ``w = weightᵀ``
``Conv1d`` / ``Conv2d``                 ``Conv1D`` / ``Conv`` (stride, padding, dilation, groups,
                                        bias); ``w = weight`` as (k..., C_in/groups, C_out)
``BatchNorm1d`` / ``BatchNorm2d``       ``BatchNorm(momentum=1 - torch momentum, epsilon=eps)``;
                                        running mean and variance as the model state
``LayerNorm(features, bias=...)``       ``LayerNorm(epsilon=eps, use_bias=...)`` (the last axis)
``RMSNorm(features, eps)``              ``RMSNorm(epsilon=eps, use_scale=elementwise_affine)`` (eps None: the
                                        machine epsilon of its weight's dtype, or torch's default dtype)
``Embedding``                           ``Embedding(vocab, features)``
``Dropout(p)``                          ``Dropout(p)``
``MaxPool2d`` / ``AvgPool2d``           ``MaxPool`` / ``AvgPool`` (padding counted as zeros)
``AdaptiveAvgPool2d(1)`` + ``Flatten``  ``GlobalAvgPool``
``AdaptiveAvgPool2d(1)``                ``GlobalAvgPool``, ``Reshape((1, 1, C))`` (no ``Flatten`` next)
``Flatten``                             ``Flatten``
``ReLU`` ``Tanh`` ``Sigmoid``           ``Relu`` ``Tanh`` ``Sigmoid`` ``Identity`` ``Softmax``
``Identity`` ``Softmax(dim=-1)``
``LeakyReLU(slope)``                    ``LeakyRelu(slope)``
``GELU()`` / ``GELU("tanh")``           ``Gelu(approximate=False)`` / ``Gelu``
``RNN`` / ``LSTM`` / ``GRU``            ``RNN`` (tanh or relu) / ``LSTM`` / ``GRU``, one per layer of
                                        ``num_layers``, ``Dropout(p)`` between where ``dropout=p``;
                                        ``Bidirectional`` of each where ``bidirectional=True``;
                                        ``w_ih = weight_ih_l{k}ᵀ``, ``w_hh = weight_hh_l{k}ᵀ``, biases
                                        (or ``bias=False``); batch first either way; no ``proj_size``
``SequenceOutput`` / ``LastHidden``     (after a recurrent module) ``return_sequences=True`` / ``False``
======================================  =========================================================

Recurrent modules (:mod:`fnnet.interop.recurrent_torch`): torch's return ``(output, h_n)``, so in a
Sequential one of fnnet's two small torch modules, ``fnnet.interop.SequenceOutput()`` (``output``)
or ``fnnet.interop.LastHidden()`` (the last layer's ``h_n``, its directions side by side), must
follow each; a recurrent module passed alone, or last in the Sequential, converts as its
``output``. The converted model is batch-major, ``(N, T, F)``, also for a ``batch_first=False``
module, whose twin is the module with its input's and ``output``'s first two axes swapped.
``to_torch`` writes a stack of recurrent layers that fit (same kind, size, bias and direction,
nothing or the same ``Dropout`` between each two) as one multi-layer module, ``batch_first=True``.

Layout: torch images are channels-first (NCHW), fnnet's channels-last (NHWC). The converted
model takes fnnet's layout; where a ``Flatten`` turns an image into features, the features
come out in a different order (H, W, C against C, H, W), so the first layer that mixes them
(a ``Linear``; a ``BatchNorm1d`` or ``LayerNorm`` on the way has its per-feature parameters
moved too) gets its rows permuted: the outputs are identical. ``AdaptiveAvgPool2d(1)`` gives
torch's ``(C, 1, 1)``: followed by a ``Flatten`` (elementwise modules between them allowed) the
pair is one ``GlobalAvgPool``, giving ``(C,)``; followed by anything else (a 1×1 ``Conv2d``, the
end of the model), a ``Reshape((1, 1, C))`` after the ``GlobalAvgPool`` keeps the two unit axes,
so fnnet's ``(1, 1, C)`` is torch's ``(C, 1, 1)``. ``to_torch`` turns the pair back into the module.

BatchNorm: PyTorch's ``momentum`` is the weight of the *new* batch statistic, fnnet's the
weight of the old running value, so fnnet's is ``1 - momentum``. PyTorch's running variance
averages the *unbiased* batch variances, fnnet's the biased ones; both normalise with the
biased batch variance in training and with the running variance in evaluation, so the
converted running statistics (copied as they are) give identical outputs in both modes; only
how later training steps update the running variance differs, by a factor ``m/(m-1)`` per
batch of ``m`` values per channel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.combinators import serial
from fnnet.host import on_device
from fnnet.interop._torch import INSTALL, ConversionError, Walk, flatten_order, host_array, import_torch, jax_array
from fnnet.interop.pytorch_export import to_torch
from fnnet.interop.recurrent_torch import check_picked, check_time_major, from_recurrent, picker_name, take_picker
from fnnet.layer import Layer, init_with_state, is_stateful, layer_name
from fnnet.layers import (AvgPool, BatchNorm, Conv, Conv1D, Dense, Dropout, Embedding, Flatten, Gelu,
                          GlobalAvgPool, Identity, LayerNorm, LeakyRelu, MaxPool, Relu, Reshape, RMSNorm, Sigmoid,
                          Softmax, Tanh)

__all__ = ["ConversionError", "INSTALL", "from_torch", "import_torch", "jax_array", "to_torch"]


# --- torch → fnnet ----------------------------------------------------------------------------

def from_torch(module, in_shape, *, key=None) -> tuple[Layer, object, object]:
    """``(model, params, model_state)``: the fnnet twin of a PyTorch ``nn.Sequential`` (or of one
    ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU``: its ``output``).

    ``in_shape`` is one example's shape in fnnet's layout: ``(H, W, C)`` for an image model
    (the converted model takes channels-last images), ``(features,)`` for an MLP, ``(T,)`` for
    token ids, ``(T, F)`` for sequences (the converted model is batch-major, ``(N, T, F)``, even
    for a ``batch_first=False`` module; :mod:`fnnet.interop.recurrent_torch`). ``model_state``
    holds BatchNorm's running statistics (``()`` when there is none). ``AdaptiveAvgPool2d(1)`` keeps torch's shape: ``GlobalAvgPool`` then
    ``Reshape((1, 1, C))``, unless a ``Flatten`` follows it. A module that has no fnnet twin is
    a :class:`ConversionError` naming it and its position (``"3.1"`` inside a nested
    Sequential). Parameters keep their dtype (float16 and bfloat16 too; float64 needs JAX's x64
    mode).

    Example:
      >>> import torch, fnnet
      >>> from fnnet.interop import from_torch
      >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
      >>> model, params, state = from_torch(net, (3,))
      >>> x = torch.randn(5, 3)
      >>> y = fnnet.apply_with_state(model, params, state, x.numpy())[0]
      >>> bool(abs(y - net(x).detach().numpy()).max() < 1e-5)
      True
    """
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    in_shape = tuple(int(d) for d in (in_shape if isinstance(in_shape, (tuple, list)) else (in_shape,)))
    check_time_major(torch, module)
    image = len(in_shape) == 3 or (len(in_shape) == 2 and _first_is_conv(torch, module))  # (L, C) or (T, F)
    walk = Walk(in_shape, "image" if image else "features")
    key = jax.random.PRNGKey(0) if key is None else key
    modules = list(module) if isinstance(module, torch.nn.Sequential) else [module]
    return _convert_serial(torch, modules, walk, key, prefix="", end=True)


def _first_is_conv(torch, module) -> bool:
    for child in (module.modules() if isinstance(module, torch.nn.Sequential) else [module]):
        if isinstance(child, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d,
                              torch.nn.BatchNorm2d, torch.nn.AdaptiveAvgPool2d)):
            return True
        if isinstance(child, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Flatten, torch.nn.RNNBase)):
            return False
    return False


def _convert_serial(torch, modules, walk, key, prefix, end=False):
    """``(serial, params, state)`` of a Sequential's modules (nested Sequentials in turn); ``end``:
    they end the model."""
    nn = torch.nn
    converted = []  # (layer, params, state) of each fnnet layer
    for position, module in enumerate(modules):
        where = f"{prefix}{position}"
        if picker_name(module) is not None:  # SequenceOutput / LastHidden: the recurrent module gave its output
            take_picker(walk, module, where)
            continue
        check_picked(walk, module, where)
        if isinstance(module, nn.Flatten) and walk.layout == "pooled":
            _check_flatten(module, where)
            walk.layout = "features"      # (C, 1, 1) → (C,): GlobalAvgPool already gave fnnet's (C,)
            continue
        child_key = jax.random.fold_in(key, position)
        if walk.layout == "pooled" and not isinstance(module, (nn.Sequential, nn.ReLU, nn.Tanh, nn.Sigmoid,
                                                               nn.Identity, nn.LeakyReLU, nn.GELU, nn.Dropout)):
            converted.append(_unpool(walk, child_key, where))  # no Flatten: torch's (C, 1, 1) it is
        if isinstance(module, nn.Sequential):
            converted.append(_convert_serial(torch, list(module), walk, child_key, f"{where}."))
        elif isinstance(module, nn.RNNBase):  # one fnnet layer per torch layer, side by side
            following = modules[position + 1] if position + 1 < len(modules) else None
            converted.extend(from_recurrent(torch, module, walk, child_key, where, following))
        else:
            converted.append(_convert_module(torch, module, walk, child_key, where))
    if end and walk.layout == "pooled":   # the model ends with AdaptiveAvgPool2d(1): (N, C, 1, 1)
        converted.append(_unpool(walk, key, f"{prefix}{len(modules)}"))
    if end and walk.layout == "unpicked":  # the model ends with a recurrent module: its output
        walk.layout = "features"
    layers, params, states = zip(*converted) if converted else ((), (), ())
    model = serial(*layers)
    return model, tuple(params), tuple(states) if is_stateful(model) else ()


def _unpool(walk, key, where):
    """``Reshape((1, 1, C))`` after a ``GlobalAvgPool``: AdaptiveAvgPool2d(1) without a Flatten after
    it leaves torch's ``(C, 1, 1)``, which is fnnet's ``(1, 1, C)``."""
    walk.module = "AdaptiveAvgPool2d(1)"
    result = _fill(Reshape((1, 1) + walk.shape), walk, key, {}, where)
    walk.layout = "image"
    return result


def _fill(layer, walk, key, values: dict, where, state_values=None):
    """The layer's params (and state) from ``init`` at the current shape, with the converted
    ``values`` (NumPy arrays, rearranged on the host) on the device in place of the initial ones
    (each checked against the shape init gives)."""
    what = f"module {where} ({walk.module} → {layer_name(layer)})"
    hint = " (in_shape is one example in fnnet's layout: (H, W, C) for images)" if walk.layout == "image" else ""
    try:
        out_shape, params, state = init_with_state(layer, key, walk.shape)
    except ValueError as error:
        raise ConversionError(f"{what} on examples of shape {walk.shape}: {error}{hint}") from None
    for name, value in values.items():
        if params[name].shape != value.shape:
            raise ConversionError(f"{what}: {name} has shape {value.shape}, the layer expects "
                                  f"{params[name].shape} on examples of shape {walk.shape}{hint}")
        params = dict(params, **{name: on_device(value)})
    if state_values:
        state = dict(state, **{name: on_device(value) for name, value in state_values.items()})
    walk.shape = tuple(out_shape)
    return layer, params, state


def _mixing_order(walk, vector):
    """A per-feature vector in fnnet's feature order after a Flatten of an image."""
    return vector if walk.order is None else vector[walk.order]


def _convert_module(torch, module, walk, key, where):
    """``(layer, params, state)`` of one torch module: the converter of its class in
    :data:`_FROM_TORCH`, an activation, or a :class:`ConversionError` naming the module."""
    nn = torch.nn
    kind = walk.module = type(module).__name__
    for classes, convert in _FROM_TORCH.items():
        if isinstance(module, tuple(getattr(nn, name) for name in classes)):
            return convert(nn, module, walk, key, where, kind)
    activation = _activation(nn, module, walk, where)
    if activation is not None:
        return _fill(activation, walk, key, {}, where)
    raise ConversionError(f"module {where} ({kind}) has no fnnet twin; supported: Linear, Conv1d, Conv2d, "
                          f"BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm, Embedding, Dropout, MaxPool2d, AvgPool2d, "
                          f"AdaptiveAvgPool2d(1), Flatten, ReLU, GELU, Tanh, Sigmoid, LeakyReLU, Softmax, Identity, "
                          f"RNN, LSTM, GRU and nested Sequentials")


# --- one converter per module class: (nn, module, walk, key, where, kind) -> (layer, params, state) ---

def _from_linear(nn, module, walk, key, where, kind):
    """``Linear`` → ``Dense``; ``w = weightᵀ`` (rows in fnnet's order after a Flatten of an image)."""
    if walk.layout != "features":
        raise ConversionError(f"module {where} ({kind}) acts on the last axis of a channels-first image; "
                              f"only a Linear after a Flatten (or on features) converts")
    w = host_array(module.weight, f"module {where}: weight").T
    if walk.order is not None:
        w = w[walk.order]
        walk.order = None
    values = {"w": w}
    if module.bias is not None:
        values["b"] = host_array(module.bias, f"module {where}: bias")
    return _fill(Dense(module.out_features, use_bias=module.bias is not None), walk, key, values, where)


def _from_conv(nn, module, walk, key, where, kind):
    """``Conv1d`` / ``Conv2d`` → ``Conv1D`` / ``Conv``; ``w`` as (k..., C_in/groups, C_out)."""
    rank = 2 if isinstance(module, nn.Conv2d) else 1
    if walk.layout != "image" or len(walk.shape) != rank + 1:
        raise ConversionError(f"module {where} ({kind}) needs channels-first inputs with {rank} spatial "
                              f"axes; fnnet's examples have shape {walk.shape} here (give in_shape as "
                              f"{'(H, W, C)' if rank == 2 else '(L, C)'})")
    if module.padding_mode != "zeros":
        raise ConversionError(f"module {where} ({kind}): padding_mode {module.padding_mode!r} has no fnnet "
                              f"twin (zeros only)")
    padding = module.padding
    if isinstance(padding, str):
        padding = padding.upper()
    elif all(p == 0 for p in padding):
        padding = "VALID"
    else:
        padding = tuple((p, p) for p in padding)
    maker = Conv if rank == 2 else Conv1D
    layer = maker(module.out_channels, tuple(module.kernel_size), strides=tuple(module.stride),
                  padding=padding, dilation=tuple(module.dilation), feature_group_count=module.groups,
                  use_bias=module.bias is not None)
    w = host_array(module.weight, f"module {where}: weight")
    values = {"w": np.transpose(w, tuple(range(2, 2 + rank)) + (1, 0))}
    if module.bias is not None:
        values["b"] = host_array(module.bias, f"module {where}: bias")
    return _fill(layer, walk, key, values, where)


def _from_batch_norm(nn, module, walk, key, where, kind):
    """``BatchNorm1d`` / ``BatchNorm2d`` → ``BatchNorm(momentum=1 - torch momentum)``, running statistics as state."""
    if not module.track_running_stats or module.running_mean is None:
        raise ConversionError(f"module {where} ({kind}): track_running_stats=False (batch statistics in "
                              f"evaluation too) has no fnnet twin")
    if module.momentum is None or not 0 < module.momentum <= 1:
        raise ConversionError(f"module {where} ({kind}): momentum {module.momentum!r} (a cumulative "
                              f"average) has no fnnet twin; fnnet's momentum is 1 - torch's, in [0, 1)")
    if isinstance(module, nn.BatchNorm2d) and walk.layout != "image":
        raise ConversionError(f"module {where} ({kind}) needs images; the examples have shape {walk.shape}")
    features = module.num_features
    mean = host_array(module.running_mean, f"module {where}: running_mean")
    var = host_array(module.running_var, f"module {where}: running_var")
    default = jnp.result_type(float)
    scale = host_array(module.weight, f"module {where}: weight") if module.affine else np.ones(features, default)
    offset = host_array(module.bias, f"module {where}: bias") if module.affine else np.zeros(features, default)
    layer = BatchNorm(momentum=round(1.0 - module.momentum, 12), epsilon=module.eps)
    return _fill(layer, walk, key, {"scale": _mixing_order(walk, scale), "offset": _mixing_order(walk, offset)},
                 where, {"mean": _mixing_order(walk, mean), "var": _mixing_order(walk, var)})


def _from_layer_norm(nn, module, walk, key, where, kind):
    """``LayerNorm`` over the last axis → ``LayerNorm``."""
    if len(module.normalized_shape) != 1 or walk.layout != "features":
        raise ConversionError(f"module {where} ({kind}{tuple(module.normalized_shape)}): only a LayerNorm over "
                              f"the last axis of features converts (fnnet's LayerNorm normalises the last axis)")
    features = module.normalized_shape[0]
    scale = host_array(module.weight, f"module {where}: weight") if module.weight is not None else \
        np.ones(features, jnp.result_type(float))
    values = {"scale": _mixing_order(walk, scale)}
    use_bias = module.bias is not None or module.weight is None  # LayerNorm(bias=False): no offset
    if module.bias is not None:
        values["offset"] = _mixing_order(walk, host_array(module.bias, f"module {where}: bias"))
    elif use_bias:
        values["offset"] = np.zeros(features, scale.dtype)
    return _fill(LayerNorm(epsilon=module.eps, use_bias=use_bias), walk, key, values, where)


def _from_rms_norm(nn, module, walk, key, where, kind):
    """``RMSNorm`` over the last axis → ``RMSNorm`` (PyTorch's ``eps=None`` is its dtype's machine epsilon)."""
    if len(module.normalized_shape) != 1 or walk.layout != "features":
        raise ConversionError(f"module {where} ({kind}{tuple(module.normalized_shape)}): only an RMSNorm over "
                              f"the last axis of features converts (fnnet's RMSNorm normalises the last axis)")
    dtype = module.weight.dtype if module.weight is not None else import_torch().get_default_dtype()
    epsilon = module.eps if module.eps is not None else float(import_torch().finfo(dtype).eps)
    values = {} if module.weight is None else \
        {"scale": _mixing_order(walk, host_array(module.weight, f"module {where}: weight"))}
    return _fill(RMSNorm(epsilon=epsilon, use_scale=module.weight is not None), walk, key, values, where)


def _from_embedding(nn, module, walk, key, where, kind):
    """``Embedding`` → ``Embedding``."""
    if module.padding_idx is not None or module.max_norm is not None or module.scale_grad_by_freq \
            or module.sparse:
        raise ConversionError(f"module {where} ({kind}): padding_idx, max_norm, scale_grad_by_freq and "
                              f"sparse have no fnnet twin")
    return _fill(Embedding(module.num_embeddings, module.embedding_dim), walk, key,
                 {"w": host_array(module.weight, f"module {where}: weight")}, where)


def _from_dropout(nn, module, walk, key, where, kind):
    """``Dropout(p)`` → ``Dropout(p)``."""
    return _fill(Dropout(module.p), walk, key, {}, where)


def _from_pool(nn, module, walk, key, where, kind):
    """``MaxPool2d`` / ``AvgPool2d`` → ``MaxPool`` / ``AvgPool``."""
    return _convert_pool(nn, module, walk, key, where)


def _from_adaptive_pool(nn, module, walk, key, where, kind):
    """``AdaptiveAvgPool2d(1)`` → ``GlobalAvgPool`` (pooled until a Flatten or the next layer)."""
    size = module.output_size
    if size not in (1, (1, 1)) or walk.layout != "image":
        raise ConversionError(f"module {where} ({kind}({size})): only AdaptiveAvgPool2d(1) on images converts "
                              f"(as GlobalAvgPool)")
    result = _fill(GlobalAvgPool, walk, key, {}, where)
    walk.layout = "pooled"
    return result


def _from_flatten(nn, module, walk, key, where, kind):
    """``Flatten`` → ``Flatten``; after an image, the next mixing layer's rows are permuted."""
    _check_flatten(module, where)
    if walk.layout == "image":
        walk.order = flatten_order(walk.shape)
        walk.layout = "features"
    return _fill(Flatten, walk, key, {}, where)


_FROM_TORCH = {
    ("Linear",): _from_linear,
    ("Conv1d", "Conv2d"): _from_conv,
    ("BatchNorm1d", "BatchNorm2d"): _from_batch_norm,
    ("LayerNorm",): _from_layer_norm,
    ("RMSNorm",): _from_rms_norm,
    ("Embedding",): _from_embedding,
    ("Dropout",): _from_dropout,
    ("MaxPool2d", "AvgPool2d"): _from_pool,
    ("AdaptiveAvgPool2d",): _from_adaptive_pool,
    ("Flatten",): _from_flatten,
}
"""torch.nn class names → their converter to an fnnet layer (the activations: :func:`_activation`)."""



def _check_flatten(module, where):
    if module.start_dim != 1 or module.end_dim != -1:
        raise ConversionError(f"module {where} (Flatten(start_dim={module.start_dim}, end_dim={module.end_dim})): "
                              f"only Flatten() over every axis of an example converts")


def _convert_pool(nn, module, walk, key, where):
    kind = type(module).__name__
    if walk.layout != "image" or len(walk.shape) != 3:
        raise ConversionError(f"module {where} ({kind}) needs images; the examples have shape {walk.shape}")
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    window, padding = pair(module.kernel_size), pair(module.padding)
    strides = window if module.stride is None else pair(module.stride)
    if module.ceil_mode:
        raise ConversionError(f"module {where} ({kind}): ceil_mode=True has no fnnet twin")
    if isinstance(module, nn.MaxPool2d) and (pair(module.dilation) != (1, 1) or module.return_indices):
        raise ConversionError(f"module {where} ({kind}): dilation and return_indices have no fnnet twin")
    if isinstance(module, nn.AvgPool2d) and (module.divisor_override is not None or
                                             (any(padding) and not module.count_include_pad)):
        raise ConversionError(f"module {where} ({kind}): fnnet's AvgPool counts padding as zeros "
                              f"(count_include_pad=True) and has no divisor_override")
    fnnet_padding = "VALID" if not any(padding) else tuple((p, p) for p in padding)
    layer = (MaxPool if isinstance(module, nn.MaxPool2d) else AvgPool)(window, strides, padding=fnnet_padding)
    return _fill(layer, walk, key, {}, where)


def _activation(nn, module, walk, where):
    kind = type(module).__name__
    if isinstance(module, nn.ReLU):
        return Relu
    if isinstance(module, nn.Tanh):
        return Tanh
    if isinstance(module, nn.Sigmoid):
        return Sigmoid
    if isinstance(module, nn.Identity):
        return Identity
    if isinstance(module, nn.LeakyReLU):
        return LeakyRelu(module.negative_slope)
    if isinstance(module, nn.GELU):
        return Gelu(approximate=module.approximate == "tanh")
    if isinstance(module, nn.Softmax):
        last = module.dim in (-1, len(walk.shape)) if walk.layout == "features" else False
        if not last:
            raise ConversionError(f"module {where} ({kind}(dim={module.dim})): only a softmax over the last axis "
                                  f"of features converts")
        return Softmax
    return None
