"""The three gradient paths agree: hand-written, autodiff, and custom_vjp; per-example via vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, losses, train


def _mlp_problem(dtype=jnp.float32, classes=3):
    model = fnnet.serial(fnnet.Dense(8), fnnet.Relu, fnnet.Dense(6), fnnet.Tanh, fnnet.Dense(classes))
    _, params = model.init(jax.random.PRNGKey(0), (5,))
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    x = draws.normal(jax.random.PRNGKey(1), (16, 5), dtype)
    y = jax.random.randint(jax.random.PRNGKey(2), (16,), 0, classes)
    return model, params, x, y


def test_manual_equals_autodiff_float64(x64):
    model, params, x, y = _mlp_problem(jnp.float64)
    loss = losses.softmax_cross_entropy
    value, grads = jax.jit(fnnet.value_and_grad(model, loss))(params, x, y)
    ref_value, ref_grads = jax.jit(fnnet.autodiff_value_and_grad(model, loss))(params, x, y)
    chex.assert_trees_all_close((value, grads), (ref_value, ref_grads), rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)


def test_objective_grad_is_hand_written_and_composes(x64):
    model, params, x, y = _mlp_problem(jnp.float64)
    loss = losses.softmax_cross_entropy
    f = fnnet.objective(model, loss)
    value, grads = jax.jit(jax.value_and_grad(f))(params, x, y)
    ref_value, ref_grads = jax.jit(fnnet.autodiff_value_and_grad(model, loss))(params, x, y)
    chex.assert_trees_all_close((value, grads), (ref_value, ref_grads), rtol=1e-10, atol=1e-14)
    # gradient with respect to the input is the model's hand-written dx
    dx = jax.jit(jax.grad(f, argnums=1))(params, x, y)
    ref_dx = jax.jit(jax.grad(lambda p, v: loss.value(model.apply(p, v), y), argnums=1))(params, x)
    chex.assert_trees_all_close(dx, ref_dx, rtol=1e-10, atol=1e-14)


def test_objective_uses_the_hand_written_backward():
    """A custom_vjp really routes through backward: a layer whose backward is zero gives zero."""
    dense = fnnet.Dense(1)
    silent = fnnet.Layer(dense.init, dense.apply, dense.forward,
                         lambda p, r, dy: (jax.tree.map(jnp.zeros_like, p), jnp.zeros_like(r)))
    _, params = silent.init(jax.random.PRNGKey(0), (2,))
    grads = jax.jit(jax.grad(fnnet.objective(silent, losses.mse)))(params, jnp.ones((3, 2)), jnp.ones((3, 1)))
    assert not any(np.any(g) for g in jax.tree.leaves(grads))


def test_objective_target_cotangent(x64):
    model, params, x, _ = _mlp_problem(jnp.float64)
    y = draws.normal(jax.random.PRNGKey(3), (16, 3), jnp.float64)
    f = fnnet.objective(model, losses.mse)
    dy = jax.jit(jax.grad(f, argnums=2))(params, x, y)
    ref = jax.jit(jax.grad(lambda t: losses.mse.value(model.apply(params, x), t)))(y)
    chex.assert_trees_all_close(dy, ref, rtol=1e-12)


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
def test_per_example_grads_equal_vmapped_autodiff(x64, grad):
    model, params, x, y = _mlp_problem(jnp.float64)
    loss = losses.softmax_cross_entropy
    per_example = jax.jit(fnnet.per_example_grads(model, loss, grad=grad))(params, x, y)
    reference = jax.jit(jax.vmap(lambda xi, yi: jax.grad(lambda p: loss.value(model.apply(p, xi[None]), yi[None]))(params)))(
        x, y)
    chex.assert_trees_all_close(per_example, reference, rtol=1e-10, atol=1e-14)
    # their mean is the batch gradient
    mean = jax.tree.map(lambda g: g.mean(0), per_example)
    chex.assert_trees_all_close(mean, jax.jit(fnnet.value_and_grad(model, loss))(params, x, y)[1], rtol=1e-10,
                                atol=1e-14)


def test_vmap_of_objective_grad_gives_per_example_grads(x64):
    model, params, x, y = _mlp_problem(jnp.float64)
    f = fnnet.objective(model, losses.softmax_cross_entropy)
    per_example = jax.jit(jax.vmap(jax.grad(f), in_axes=(None, 0, 0)))(params, x, y)  # no batch axis at all
    reference = jax.jit(fnnet.per_example_grads(model, losses.softmax_cross_entropy, grad="autodiff"))(params, x, y)
    chex.assert_trees_all_close(per_example, reference, rtol=1e-10, atol=1e-14)


def test_optax_step_through_objective_matches_autodiff():
    model, params, x, y = _mlp_problem()
    optimizer = optax.adam(1e-2)

    @jax.jit
    def update(grads, state, params):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def train(grad_fn, params):
        state = jax.jit(optimizer.init)(params)
        for _ in range(5):
            params, state = update(grad_fn(params, x, y), state, params)
        return params

    with jax.default_matmul_precision("highest"):  # around the computation (GPUs use TF32 otherwise)
        manual = train(jax.jit(jax.grad(fnnet.objective(model, losses.softmax_cross_entropy))), params)
        auto = train(jax.jit(lambda p, a, b: fnnet.autodiff_value_and_grad(model, losses.softmax_cross_entropy)(
            p, a, b)[1]), params)
    chex.assert_trees_all_close(manual, auto, rtol=1e-5, atol=1e-6)


def test_bad_grad_mode():
    model, _, _, _ = _mlp_problem()
    with pytest.raises(ValueError, match="manual' or 'autodiff"):
        fnnet.per_example_grads(model, losses.mse, grad="numeric")


# mixed dtypes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer,in_shape", [
    (fnnet.Conv(3, 3), (6, 6, 2)), (fnnet.Conv1D(2, 3), (7, 2)), (fnnet.MaxPool(2), (4, 4, 2)),
    (fnnet.AvgPool(2), (4, 4, 2)), (fnnet.LayerNorm(), (5,)), (fnnet.Dense(3), (4,)), (fnnet.Sigmoid, (4,)),
    (fnnet.CausalSelfAttention(2), (4, 4)), (fnnet.serial(fnnet.Conv(2, 3), fnnet.BatchNorm(), fnnet.GlobalAvgPool),
                                             (5, 5, 1)),
], ids=["conv", "conv1d", "maxpool", "avgpool", "layernorm", "dense", "sigmoid", "attention", "conv-bn"])
@pytest.mark.parametrize("param_dtype,x_dtype", [
    (jnp.bfloat16, jnp.float32), (jnp.float32, jnp.bfloat16), (jnp.float32, jnp.uint8)])
def test_every_layer_takes_mixed_dtypes_and_returns_grads_in_the_params_dtype(layer, in_shape, param_dtype, x_dtype):
    _, params, state = fnnet.init_with_state(layer, jax.random.PRNGKey(0), in_shape)
    params = jax.tree.map(lambda p: np.asarray(p).astype(param_dtype), params)   # cast on the host: no compile
    x = (3 * np.asarray(draws.uniform(jax.random.PRNGKey(1), (4,) + in_shape))).astype(x_dtype)

    @jax.jit  # forward and backward as one program (eagerly, each operation compiles for its shapes)
    def forward_backward(params, x):
        y, residuals, _ = fnnet.forward_with_state(layer, params, state, x, train=True)
        return y, layer.backward(params, residuals, jnp.ones_like(y))[0]

    y, dparams = forward_backward(params, x)
    assert jnp.issubdtype(y.dtype, jnp.floating) or not jax.tree.leaves(params)  # max of ints may stay ints
    assert np.isfinite(np.asarray(y, np.float32)).all()
    for g, p in zip(jax.tree.leaves(dparams), jax.tree.leaves(params)):
        assert g.dtype == p.dtype


# a stateful model without its state ---------------------------------------------------------------

def test_stateful_models_say_what_state_to_pass_and_value_and_grad_takes_it():
    model = fnnet.serial(fnnet.Dense(4), fnnet.BatchNorm(), fnnet.Relu, fnnet.Dropout(0.5), fnnet.Dense(2))
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (3,))
    x, y = draws.normal(jax.random.PRNGKey(1), (8, 3)), jnp.arange(8) % 2
    with pytest.raises(ValueError, match="with_state=True"):
        fnnet.value_and_grad(model, losses.softmax_cross_entropy)
    with pytest.raises(ValueError, match=r"BatchNorm.*Dropout.*given no state: pass model_state="):
        train.evaluate(model, losses.softmax_cross_entropy, params, (x, y))
    key = jax.random.PRNGKey(2)
    manual = fnnet.value_and_grad(model, losses.softmax_cross_entropy, with_state=True)
    reference = fnnet.autodiff_value_and_grad(model, losses.softmax_cross_entropy, with_state=True)
    (value, new_state), grads = jax.jit(manual)(params, state, x, y, key=key)
    (ref_value, ref_state), ref_grads = jax.jit(reference)(params, state, x, y, key=key)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, ref_grads)
    assert not np.allclose(new_state[1]["mean"], state[1]["mean"])      # training mode updated the statistics
    (_, eval_state), _ = jax.jit(manual, static_argnames="train")(params, state, x, y, train=False)
    np.testing.assert_array_equal(eval_state[1]["mean"], state[1]["mean"])
