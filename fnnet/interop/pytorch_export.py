"""fnnet ``serial`` → PyTorch ``nn.Sequential``, layer by layer: :func:`to_torch`, the inverse of
:func:`fnnet.interop.from_torch` (the table of twins is in :mod:`fnnet.interop.pytorch`)."""

from __future__ import annotations

import numpy as np

from fnnet.combinators import serial, stateful_names
from fnnet.interop._torch import ConversionError, Walk, flatten_order, import_torch, inverse, tensor, torch_dtype
from fnnet.interop.recurrent_torch import is_recurrent, to_recurrent
from fnnet.layer import Layer, example_shape, is_combinator_kind, is_stateful, layer_children, layer_name


def to_torch(model: Layer, params, model_state=None):
    """``nn.Sequential``: the PyTorch twin of an fnnet model built from the layers
    :func:`from_torch` knows (``serial`` nesting becomes ``Sequential`` nesting).

    The twin takes PyTorch's layout (NCHW images) and holds the same numbers; BatchNorm's
    running statistics come from ``model_state`` (required when the model has a BatchNorm).
    It is returned in evaluation mode (``.eval()``: Dropout off, BatchNorm on its running
    statistics), the mode of ``fnnet.apply_with_state``'s default ``train=False``; call
    ``.train()`` on it to train. Tensors keep the params' dtype (bfloat16 too). ``GlobalAvgPool``
    becomes ``AdaptiveAvgPool2d(1)`` and a ``Flatten``, or no Flatten when a ``Reshape((1, 1, C))``
    follows it. Recurrent layers become ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` (``batch_first=True``;
    a stack of them that fit, one multi-layer module), each followed by
    ``fnnet.interop.SequenceOutput()`` or ``LastHidden()``, which picks from its ``(output, h_n)``.
    A layer without a PyTorch twin (a ``parallel``, an attention layer, a ``Reshape``
    other than that one, "SAME" padding with strides) is a :class:`ConversionError` naming it
    and its position.

    Example:
      >>> import jax, torch, fnnet
      >>> from fnnet.interop import to_torch
      >>> model = fnnet.serial(fnnet.Dense(4), fnnet.Gelu(approximate=False), fnnet.Dense(2))
      >>> _, params = model.init(jax.random.PRNGKey(0), (3,))
      >>> net = to_torch(model, params)
      >>> net
      Sequential(
        (0): Linear(in_features=3, out_features=4, bias=True)
        (1): GELU(approximate='none')
        (2): Linear(in_features=4, out_features=2, bias=True)
      )
    """
    torch = import_torch()
    if is_stateful(model) and model_state is None:
        raise ConversionError(f"to_torch: the model has state ({stateful_names([model])}): pass model_state "
                              f"(BatchNorm's running statistics)")
    if not is_combinator_kind(model, "serial"):
        model, params, model_state = serial(model), (params,), (model_state,) if is_stateful(model) else ()
    walk = Walk((), "image" if _takes_images(model, params) else "features")
    state = model_state if is_stateful(model) else None
    with torch.no_grad():
        net = _sequential(torch, model, params, state, walk, prefix="")
    if walk.layout == "pooled":   # the model ends with GlobalAvgPool: (N, C, 1, 1) → (N, C)
        net.append(torch.nn.Flatten())
    return net.eval()


def _takes_images(model, params) -> bool:
    """Whether the model's first layer takes images (channels-first in PyTorch): a convolution or
    a pool, or a Flatten of (H, W, C) examples."""
    while layer_children(model):
        model, params = layer_children(model)[0], params[0]
    kind = model.spec.kind if model.spec is not None else None
    return kind in ("Conv", "Conv1D", "MaxPool", "AvgPool", "GlobalAvgPool") or \
        (kind == "Flatten" and len(getattr(params, "shape", ())) == 3)


# fnnet layers that act on each value alone: between GlobalAvgPool and what follows it, torch's
# (C, 1, 1) and fnnet's (C,) give them the same numbers
_ELEMENTWISE = ("Relu", "Tanh", "Sigmoid", "Identity", "LeakyRelu", "Gelu", "Dropout")


def _sequential(torch, model, params, state, walk, prefix):
    modules, children, position = [], layer_children(model), 0
    while position < len(children):
        child, where = children[position], f"{prefix}{position}"
        if is_recurrent(child):  # a run of recurrent layers that fit: one module, and what picks its output
            label = f"layer {where} ({layer_name(child)})"
            position, made = to_recurrent(torch, children, params, position, walk, label)
            modules.extend(made)
            continue
        child_state = state[position] if state else None
        spec = child.spec
        if walk.layout == "pooled" and (spec is None or spec.kind not in ("serial",) + _ELEMENTWISE):
            if _unpools(child, params[position]):
                walk.layout, walk.rank = "image", 2   # AdaptiveAvgPool2d(1)'s (C, 1, 1) as it is
                position += 1
                continue
            modules.append(torch.nn.Flatten())        # (C, 1, 1) → GlobalAvgPool's (C,)
            walk.layout = "features"
        if is_combinator_kind(child, "serial"):
            modules.append(_sequential(torch, child, params[position], child_state, walk, f"{where}/"))
        else:
            modules.extend(_to_module(torch, child, params[position], child_state, walk, where))
        position += 1
    return torch.nn.Sequential(*modules)


def _unpools(layer, params) -> bool:
    """Whether the layer is a ``Reshape`` of pooled ``(C,)`` to ``(1, 1, C)``."""
    example = example_shape(params)
    return layer.spec is not None and layer.spec.kind == "Reshape" and example is not None and \
        len(example) == 1 and tuple(layer.init(None, example)[0]) == (1, 1) + example


def _to_module(torch, layer, params, state, walk, where):
    """The PyTorch modules (one, as a list) of one fnnet layer: the converter of its kind in
    :data:`_TO_TORCH`, or a :class:`ConversionError` naming the layer."""
    label = f"layer {where} ({layer_name(layer)})"
    if layer.spec is None:
        raise ConversionError(f"{label} says nothing of what it is (no spec): no PyTorch twin")
    convert = _TO_TORCH.get(layer.spec.kind)
    if convert is None:
        raise ConversionError(f"{label} has no PyTorch twin in an nn.Sequential; supported: Dense, "
                              f"Conv, Conv1D, BatchNorm, LayerNorm, RMSNorm, Embedding, Dropout, MaxPool, AvgPool, "
                              f"GlobalAvgPool, Flatten, the activations, RNN, LSTM, GRU, Bidirectional and "
                              f"nested serial")
    return convert(torch, layer.spec, params, state, walk, label)


# --- one converter per kind: (torch, spec, params, state, walk, label) -> [module] ---------------

def _linear(torch, spec, params, state, walk, label):
    """``Linear``; ``weight = wᵀ``, its rows put back in torch's order after a Flatten of an image."""
    w = np.array(params["w"])
    if walk.order is not None:
        unpermuted = np.empty_like(w)
        unpermuted[walk.order] = w
        w, walk.order = unpermuted, None
    linear = torch.nn.Linear(w.shape[0], w.shape[1], bias=spec["use_bias"], dtype=torch_dtype(torch, w))
    linear.weight.copy_(tensor(torch, w.T))
    if spec["use_bias"]:
        linear.bias.copy_(tensor(torch, params["b"]))
    return [linear]


def _conv(torch, spec, params, state, walk, label):
    """``Conv2d`` / ``Conv1d``; ``weight`` as (C_out, C_in/groups, k...)."""
    rank = 2 if spec.kind == "Conv" else 1
    walk.layout = "image"
    w = np.array(params["w"])
    groups = spec["feature_group_count"]
    padding = spec["padding"]
    if padding == "SAME":
        if set(spec["strides"]) != {1}:
            raise ConversionError(f"{label}: 'SAME' padding with strides has no PyTorch twin "
                                  f"(it may pad one side more); give the padding explicitly")
        padding = "same"
    elif padding == "VALID":
        padding = "valid"
    elif all(lo == hi for lo, hi in padding):
        padding = tuple(lo for lo, _ in padding)
    else:
        raise ConversionError(f"{label}: uneven padding {padding} has no PyTorch twin")
    conv = (torch.nn.Conv2d if rank == 2 else torch.nn.Conv1d)(
        w.shape[-2] * groups, w.shape[-1], spec["kernel_size"], stride=spec["strides"], padding=padding,
        dilation=spec["dilation"], groups=groups, bias=spec["use_bias"], dtype=torch_dtype(torch, w))
    conv.weight.copy_(tensor(torch, np.transpose(w, (rank + 1, rank) + tuple(range(rank)))))
    if spec["use_bias"]:
        conv.bias.copy_(tensor(torch, params["b"]))
    walk.rank = rank
    return [conv]


def _batch_norm(torch, spec, params, state, walk, label):
    """``BatchNorm2d`` on images, ``BatchNorm1d`` on features; torch's momentum is ``1 -`` fnnet's."""
    scale = np.array(params["scale"])
    image2d = walk.layout == "image" and walk.rank == 2
    norm = (torch.nn.BatchNorm2d if image2d else torch.nn.BatchNorm1d)(
        scale.shape[0], eps=spec["epsilon"], momentum=round(1.0 - spec["momentum"], 12), dtype=torch_dtype(torch, scale))
    order = inverse(walk.order)
    norm.weight.copy_(tensor(torch, scale[order]))
    norm.bias.copy_(tensor(torch, np.array(params["offset"])[order]))
    norm.running_mean.copy_(tensor(torch, np.array(state["mean"])[order]))
    norm.running_var.copy_(tensor(torch, np.array(state["var"])[order]))
    return [norm]


def _layer_norm(torch, spec, params, state, walk, label):
    """``LayerNorm`` over the last axis of features."""
    scale = np.array(params["scale"])
    if walk.layout == "image":
        raise ConversionError(f"{label} normalises the channels of an image; PyTorch's "
                              f"LayerNorm on NCHW normalises the last (width) axis: no twin")
    use_bias = spec.get("use_bias", True)
    norm = torch.nn.LayerNorm(scale.shape[0], eps=spec["epsilon"], bias=use_bias, dtype=torch_dtype(torch, scale))
    order = inverse(walk.order)
    norm.weight.copy_(tensor(torch, scale[order]))
    if use_bias:
        norm.bias.copy_(tensor(torch, np.array(params["offset"])[order]))
    return [norm]


def _rms_norm(torch, spec, params, state, walk, label):
    """``RMSNorm`` over the last axis of features: ``nn.RMSNorm(F, eps, elementwise_affine=use_scale)``."""
    if walk.layout == "image":
        raise ConversionError(f"{label} normalises the channels of an image; PyTorch's "
                              f"RMSNorm on NCHW normalises the last (width) axis: no twin")
    if not spec.get("use_scale", True):
        raise ConversionError(f"{label} has no scale, so nothing in it says its width, which nn.RMSNorm needs: "
                              f"use RMSNorm(use_scale=True) (ones) for the export")
    scale = np.array(params["scale"])
    norm = torch.nn.RMSNorm(scale.shape[0], eps=spec["epsilon"], dtype=torch_dtype(torch, scale))
    norm.weight.copy_(tensor(torch, scale[inverse(walk.order)]))
    return [norm]


def _embedding(torch, spec, params, state, walk, label):
    """``Embedding``."""
    w = np.array(params["w"])
    embedding = torch.nn.Embedding(spec["vocab_size"], spec["features"], dtype=torch_dtype(torch, w))
    embedding.weight.copy_(tensor(torch, w))
    return [embedding]


def _dropout(torch, spec, params, state, walk, label):
    """``Dropout``."""
    return [torch.nn.Dropout(spec["rate"])]


def _pool(torch, spec, params, state, walk, label):
    """``MaxPool2d`` / ``AvgPool2d`` (padding counted, as fnnet counts it)."""
    padding = spec["padding"]
    if padding == "VALID":
        padding = 0
    elif padding != "SAME" and all(lo == hi for lo, hi in padding):
        padding = tuple(lo for lo, _ in padding)
    else:
        raise ConversionError(f"{label}: padding {padding!r} has no PyTorch twin")
    if spec.kind == "MaxPool":
        return [torch.nn.MaxPool2d(spec["window"], spec["strides"], padding)]
    return [torch.nn.AvgPool2d(spec["window"], spec["strides"], padding, count_include_pad=True)]


def _global_avg_pool(torch, spec, params, state, walk, label):
    """``AdaptiveAvgPool2d(1)``; the Flatten to (C,) comes with the next layer unless it is ``Reshape((1, 1, C))``."""
    walk.layout = "pooled"   # the Flatten to (C,) comes with the next layer unless it is Reshape((1, 1, C))
    return [torch.nn.AdaptiveAvgPool2d(1)]


def _flatten(torch, spec, params, state, walk, label):
    """``Flatten``; after an image, the next mixing layer's rows follow torch's (C, H, W) order."""
    if walk.layout == "image":
        walk.order = flatten_order(tuple(params.shape))
        walk.layout = "features"
    return [torch.nn.Flatten()]


def _leaky_relu(torch, spec, params, state, walk, label):
    """``LeakyReLU(slope)``."""
    return [torch.nn.LeakyReLU(spec["alpha"])]


def _gelu(torch, spec, params, state, walk, label):
    """``GELU`` (exact or tanh)."""
    return [torch.nn.GELU(approximate="tanh" if spec["approximate"] else "none")]


def _softmax(torch, spec, params, state, walk, label):
    """``Softmax(dim=-1)``."""
    return [torch.nn.Softmax(dim=-1)]


def _elementwise(module_name: str):
    """A converter to the parameter-free ``torch.nn`` module ``module_name``."""
    def convert(torch, spec, params, state, walk, label):
        return [getattr(torch.nn, module_name)()]
    return convert


_TO_TORCH = {
    "Dense": _linear,
    "Conv": _conv,
    "Conv1D": _conv,
    "BatchNorm": _batch_norm,
    "LayerNorm": _layer_norm,
    "RMSNorm": _rms_norm,
    "Embedding": _embedding,
    "Dropout": _dropout,
    "MaxPool": _pool,
    "AvgPool": _pool,
    "GlobalAvgPool": _global_avg_pool,
    "Flatten": _flatten,
    "LeakyRelu": _leaky_relu,
    "Gelu": _gelu,
    "Softmax": _softmax,
    "Relu": _elementwise("ReLU"),
    "Tanh": _elementwise("Tanh"),
    "Sigmoid": _elementwise("Sigmoid"),
    "Identity": _elementwise("Identity"),
}
"""fnnet layer kind → its converter to PyTorch modules. (The recurrent kinds, RNN, LSTM, GRU and
Bidirectional, convert in runs, several layers to one module: :func:`_sequential` hands them to
:func:`fnnet.interop.recurrent_torch.to_recurrent`.)"""
