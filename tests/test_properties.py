"""Property-based: random serial MLPs (widths, depths, batch sizes, activations) backprop exactly."""

import chex
import jax
import jax.numpy as jnp
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import draws, losses

ACTIVATIONS = [fnnet.Relu, fnnet.Sigmoid, fnnet.Tanh, fnnet.Gelu, fnnet.Identity, fnnet.LeakyRelu(0.1)]

mlps = st.fixed_dictionaries({
    "in_dim": st.integers(1, 6),
    "widths": st.lists(st.integers(1, 7), min_size=1, max_size=4),
    "activations": st.lists(st.sampled_from(range(len(ACTIVATIONS))), min_size=4, max_size=4),
    "batch": st.integers(1, 9),
    "seed": st.integers(0, 2 ** 16),
    "loss": st.sampled_from(["mse", "squared_error", "softmax_cross_entropy",
                             "sigmoid_binary_cross_entropy"]),
})


@settings(max_examples=6, deadline=None)
@given(mlps)
def test_random_mlp_manual_equals_autodiff(spec):
    layers = []
    for width, act in zip(spec["widths"], spec["activations"]):
        layers += [fnnet.Dense(width), ACTIVATIONS[act]]
    layers.append(fnnet.Dense(3))
    model = fnnet.serial(*layers)
    loss = losses.ALL[spec["loss"]]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(spec["seed"]), 3)
    with jax.enable_x64(True):
        out_shape, params = model.init(k1, (spec["in_dim"],))
        assert out_shape == (3,)
        x = draws.normal(k2, (spec["batch"], spec["in_dim"]), jnp.float64)
        if spec["loss"] == "softmax_cross_entropy":
            y = jax.random.randint(k3, (spec["batch"],), 0, 3)
        else:
            y = jax.random.bernoulli(k3, 0.5, (spec["batch"], 3)).astype(jnp.float64)
        both = jax.jit(lambda p, x, y: (fnnet.value_and_grad(model, loss)(p, x, y),  # one compilation
                                        fnnet.autodiff_value_and_grad(model, loss)(p, x, y)))
        (value, grads), (ref_value, ref_grads) = both(params, x, y)
        chex.assert_trees_all_close((value, grads), (ref_value, ref_grads), rtol=1e-10, atol=1e-13)
        chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
