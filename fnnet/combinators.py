"""Combinators: :func:`serial`, the one place that walks layers backwards."""

from __future__ import annotations

import jax

from fnnet.layer import Layer, as_shape, at_layer, make_layer


def serial(*layers: Layer) -> Layer:
    """Composes layers in sequence; its params are a tuple with one entry per layer.

    ``forward`` runs each layer's forward and keeps every layer's residuals;
    ``backward`` runs the layers' backwards in reverse, passing ``dx`` of layer
    ``i`` on as ``dy`` of layer ``i - 1`` (the chain rule, written once).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(1), fnnet.Sigmoid)
      >>> out_shape, params = model.init(jax.random.PRNGKey(0), (2,))
      >>> out_shape, len(params), model.apply(params, jnp.ones((3, 2))).shape
      ((1,), 4, (3, 1))

    Errors raised inside a layer are re-raised with the layer's index and name,
    e.g. ``layer 0 (Dense(4)): expected input of shape (..., 2), got (3, 5)``.
    """
    for index, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            hint = " (did you forget to call a layer constructor such as Dense(4)?)" if callable(layer) else ""
            raise TypeError(f"serial: argument {index} is not a fnnet.Layer: {layer!r}{hint}")
    layers = tuple(layers)

    def check(params):
        if not isinstance(params, (tuple, list)) or len(params) != len(layers):
            got = f"{len(params)} entries" if isinstance(params, (tuple, list)) else type(params).__name__
            raise ValueError(f"serial: expected params with {len(layers)} entries (one per layer), got {got}")

    def init(key, in_shape):
        shape = as_shape(in_shape, "serial")
        keys = jax.random.split(key, max(len(layers), 1))
        params = []
        for index, (layer, layer_key) in enumerate(zip(layers, keys)):
            with at_layer(index, layer):
                shape, layer_params = layer.init(layer_key, shape)
            params.append(layer_params)
        return shape, tuple(params)

    def apply(params, x):
        check(params)
        for index, (layer, layer_params) in enumerate(zip(layers, params)):
            with at_layer(index, layer):
                x = layer.apply(layer_params, x)
        return x

    def forward(params, x):
        check(params)
        residuals = []
        for index, (layer, layer_params) in enumerate(zip(layers, params)):
            with at_layer(index, layer):
                x, residual = layer.forward(layer_params, x)
            residuals.append(residual)
        return x, tuple(residuals)

    def backward(params, residuals, dy):
        check(params)
        grads = [None] * len(layers)
        for index in reversed(range(len(layers))):
            with at_layer(index, layers[index]):
                grads[index], dy = layers[index].backward(params[index], residuals[index], dy)
        return tuple(grads), dy

    return make_layer("serial", init, apply, forward, backward, children=layers)
