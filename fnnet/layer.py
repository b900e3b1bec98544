"""The layer contract: a small record of four pure functions.

A layer in fnnet is what a backprop tutorial writes by hand, made explicit::

    init(key, in_shape)            -> (out_shape, params)   in_shape: one example, no batch axis
    apply(params, x)               -> y                     plain JAX: the autodiff reference
    forward(params, x)             -> (y, residuals)        y and what backward needs
    backward(params, residuals, dy) -> (dparams, dx)        the hand-written vector-Jacobian product

Every formula accepts any number of leading batch axes, so one layer runs on a
batch and, under ``jax.vmap``, on a single example.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple, Sequence

Shape = tuple[int, ...]


class Layer(NamedTuple):
    """A layer: four pure functions ``(init, apply, forward, backward)``.

    A NamedTuple of functions is itself a pytree with no array leaves: close over
    a layer or pass it as a static argument to ``jax.jit``; never trace it.
    """

    init: Callable[..., tuple[Shape, Any]]
    """``(key, in_shape) -> (out_shape, params)``; ``in_shape`` has no batch axis."""
    apply: Callable[[Any, Any], Any]
    """``(params, x) -> y`` in plain JAX: the reference that autodiff differentiates."""
    forward: Callable[[Any, Any], tuple[Any, Any]]
    """``(params, x) -> (y, residuals)``: the output and what ``backward`` needs."""
    backward: Callable[[Any, Any, Any], tuple[Any, Any]]
    """``(params, residuals, dy) -> (dparams, dx)``: the hand-written VJP."""


def make_layer(name: str, init, apply, forward, backward, children: Sequence[Layer] = ()) -> Layer:
    """Builds a :class:`Layer` and records its display ``name`` (and sub-layers) on ``init``.

    The name is what error messages, :func:`fnnet.summary` and :mod:`fnnet.gradcheck`
    print; it lives on the function so that ``Layer`` stays a plain 4-tuple.
    """
    init.fnnet_name = name
    init.fnnet_children = tuple(children)
    return Layer(init, apply, forward, backward)


def layer_name(layer: Layer) -> str:
    """The display name of a layer (``"Dense(4)"``, ``"Relu"``, ``"serial"``...)."""
    name = getattr(layer.init, "fnnet_name", None)
    if name:
        return name
    qualname = getattr(layer.init, "__qualname__", "layer")
    return qualname.split(".<locals>")[0]


def layer_children(layer: Layer) -> tuple[Layer, ...]:
    """The sub-layers of a combinator such as :func:`fnnet.serial`; ``()`` for a leaf layer."""
    return getattr(layer.init, "fnnet_children", ())


def as_shape(in_shape, where: str) -> Shape:
    """Normalises ``in_shape`` (an int or a sequence of ints) to a tuple, or raises ValueError."""
    if isinstance(in_shape, int):
        return (in_shape,)
    try:
        shape = tuple(int(d) for d in in_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: in_shape must be a tuple of ints (one example, no batch axis), "
                         f"got {in_shape!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"{where}: in_shape has a negative dimension: {shape}")
    return shape


@contextlib.contextmanager
def at_layer(index: int, layer: Layer):
    """Re-raises a ValueError from inside ``layer`` prefixed with its index and name."""
    try:
        yield
    except ValueError as error:
        name = layer_name(layer)
        message = str(error).removeprefix(f"{name}: ")
        raise ValueError(f"layer {index} ({name}): {message}") from error
