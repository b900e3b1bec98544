"""Flatten and Reshape: each example's shape changed, and the (trivial) backward pass.

Both record one example's shape at ``init`` (their params are a :class:`fnnet.layer.ExampleShape`,
a pytree with no leaves), so they work on any number of leading batch axes and under
``jax.vmap`` on one example, like every other layer. Called without it (``apply((), x)``) they
take exactly one leading batch axis, as stax, Keras and PyTorch do.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from fnnet.layer import ExampleShape, Layer, as_shape, example_shape, make_layer, spec, split_batch


def _lead_axes(name: str, params, x) -> tuple:
    """The batch axes of ``x``: those before the recorded example shape, or (without one) the first."""
    example = example_shape(params)
    if example is not None:
        return split_batch(jnp.shape(x), example, name)
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name}: expected a batch of shape (N, ...), got {jnp.shape(x)}; without the "
                         f"params init returns, {name} takes exactly one leading batch axis: give one "
                         f"example as x[None], or pass the params of {name}.init(key, in_shape)")
    return jnp.shape(x)[:1]


def _flatten_init(key, in_shape):
    del key
    in_shape = as_shape(in_shape, "Flatten")
    return (math.prod(in_shape),), ExampleShape(in_shape)


def _flatten_apply(params, x):
    lead = _lead_axes("Flatten", params, x)
    return jnp.reshape(x, lead + (math.prod(jnp.shape(x)[len(lead):]),))  # no -1: fine with 0 examples


def _flatten_forward(params, x):
    return _flatten_apply(params, x), x  # x itself (no copy) carries its static shape


def _flatten_backward(params, x, dy):
    return params, jnp.reshape(dy, jnp.shape(x))  # dx is dy folded back to the input's shape


Flatten: Layer = make_layer("Flatten", _flatten_init, _flatten_apply, _flatten_forward,
                            _flatten_backward, spec=spec("Flatten"), doc="""Flatten: each example to one axis of features.

``(..., d1, d2, ...) -> (..., d1*d2*...)``; backward reshapes ``dy`` back to the input's shape
(``dx = reshape(dy, x.shape)``: a reshape moves values, it changes none).

``Flatten.init(key, in_shape)`` records the example's shape, so with those params Flatten
works on any number of leading batch axes and under ``jax.vmap``. ``Flatten.apply((), x)``
without them keeps exactly one leading batch axis (stax, Keras, PyTorch): ``(N, ...) -> (N, -1)``.

Example:
  >>> import jax, jax.numpy as jnp, fnnet
  >>> out_shape, params = fnnet.Flatten.init(None, (28, 28, 1))
  >>> out_shape, fnnet.Flatten.apply(params, jnp.ones((2, 3, 28, 28, 1))).shape
  ((784,), (2, 3, 784))
""")


def Reshape(shape) -> Layer:
    """Reshapes each example to ``shape`` (one entry may be ``-1``); backward reshapes ``dy`` back.

    With the params ``init`` returns (the example's shape, recorded) it works on any number of
    leading batch axes and under ``jax.vmap``; ``apply((), x)`` takes one leading batch axis.

    Example:
      >>> import jax.numpy as jnp, fnnet
      >>> layer = fnnet.Reshape((28, 28, 1))
      >>> out_shape, params = layer.init(None, (784,))
      >>> out_shape, layer.apply(params, jnp.ones((5, 784))).shape, layer.apply(params, jnp.ones(784)).shape
      ((28, 28, 1), (5, 28, 28, 1), (28, 28, 1))
    """
    try:
        target = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"Reshape: shape must be a tuple of ints, got {shape!r}") from None
    if target.count(-1) > 1 or any(d < -1 or d == 0 for d in target):
        raise ValueError(f"Reshape: shape must hold positive ints and at most one -1, got {shape!r}")
    name = f"Reshape({target})"

    def resolve(in_shape):
        size, known = math.prod(in_shape), math.prod(d for d in target if d != -1)
        if (-1 in target and size % known) or (-1 not in target and size != known):
            raise ValueError(f"{name}: cannot reshape examples of shape {tuple(in_shape)} "
                             f"({size} values) to {target}")
        return tuple(size // known if d == -1 else d for d in target)

    def init(key, in_shape):
        in_shape = as_shape(in_shape, name)
        return resolve(in_shape), ExampleShape(in_shape)

    def apply(params, x):
        lead = _lead_axes(name, params, x)
        return jnp.reshape(x, lead + resolve(jnp.shape(x)[len(lead):]))

    def backward(params, x, dy):
        return params, jnp.reshape(dy, jnp.shape(x))

    return make_layer(name, init, apply, lambda params, x: (apply(params, x), x), backward,
                      doc=Reshape.__doc__, spec=spec("Reshape", shape=target))
