"""Shared test helpers: the catalogue of built-in layers and random inputs for them."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import fnnet

# (id, layer, in_shape) for every built-in layer; inputs are standard normal, so ReLU kinks
# (z == 0) have probability zero.
LAYERS = [
    ("Dense", fnnet.Dense(4), (3,)),
    ("Dense-3d", fnnet.Dense(2), (5, 3)),
    ("Relu", fnnet.Relu, (6,)),
    ("LeakyRelu", fnnet.LeakyRelu(0.2), (6,)),
    ("Sigmoid", fnnet.Sigmoid, (6,)),
    ("Tanh", fnnet.Tanh, (6,)),
    ("Softmax", fnnet.Softmax, (6,)),
    ("Gelu", fnnet.Gelu, (6,)),
    ("Identity", fnnet.Identity, (6,)),
    ("Flatten", fnnet.Flatten, (2, 3)),
    ("serial-mlp", fnnet.serial(fnnet.Dense(5), fnnet.Tanh, fnnet.Dense(3), fnnet.Softmax), (4,)),
    ("serial-nested", fnnet.serial(fnnet.serial(fnnet.Dense(5), fnnet.Relu), fnnet.Gelu,
                                   fnnet.serial(fnnet.Dense(2), fnnet.Sigmoid)), (3,)),
    ("serial-flatten", fnnet.serial(fnnet.Flatten, fnnet.Dense(3), fnnet.LeakyRelu()), (2, 2)),
]
LAYER_IDS = [case[0] for case in LAYERS]


def init_with_input(layer, in_shape, batch=7, seed=0, dtype=None):
    """(params, x) for ``layer``: params from init, x standard normal with a batch axis."""
    dtype = dtype or jnp.result_type(float)
    init_key, x_key = jax.random.split(jax.random.PRNGKey(seed))
    _, params = layer.init(init_key, in_shape)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    x = jax.random.normal(x_key, (batch,) + tuple(in_shape), dtype)
    return params, x


def random_like(key, tree):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(l), jnp.result_type(l))
                                        for k, l in zip(keys, leaves)])
