"""Every layer: hand-written VJP == jax.vjp, finite differences, shapes, dtypes, jit and vmap."""

import chex
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

import fnnet
from helpers import LAYER_IDS, LAYERS, init_with_input, random_like

NEEDS_BATCH_AXIS = {"Flatten", "serial-flatten"}  # Flatten keeps exactly one leading batch axis


@pytest.mark.parametrize("name,layer,in_shape", LAYERS, ids=LAYER_IDS)
def test_backward_equals_autodiff_vjp(x64, name, layer, in_shape):
    params, x = init_with_input(layer, in_shape)
    y, residuals = layer.forward(params, x)
    chex.assert_trees_all_close(y, layer.apply(params, x), rtol=1e-12, atol=0)
    cotangent = jax.random.normal(jax.random.PRNGKey(7), y.shape, y.dtype)
    dparams, dx = layer.backward(params, residuals, cotangent)
    _, vjp = jax.vjp(layer.apply, params, x)
    ref_dparams, ref_dx = vjp(cotangent)
    chex.assert_trees_all_close((dparams, dx), (ref_dparams, ref_dx), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,layer,in_shape", LAYERS, ids=LAYER_IDS)
def test_backward_passes_finite_differences(x64, name, layer, in_shape):
    params, x = init_with_input(layer, in_shape, seed=1)

    def hand_written_vjp(p, inputs):
        y, residuals = layer.forward(p, inputs)
        return y, lambda dy: layer.backward(p, residuals, dy)

    # jax.test_util compares <dy, f(θ+εv) - f(θ-εv)>/2ε with <vjp(dy), v> for random v, dy.
    jax.test_util.check_vjp(layer.apply, hand_written_vjp, (params, x), atol=1e-6, rtol=1e-6,
                            eps=1e-5)


@pytest.mark.parametrize("name,layer,in_shape", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_gradients_have_params_structure_shapes_and_dtypes(x64, name, layer, in_shape, dtype):
    params, x = init_with_input(layer, in_shape, dtype=dtype)
    y, residuals = layer.forward(params, x)
    dparams, dx = layer.backward(params, residuals, jnp.ones_like(y))
    assert jax.tree.structure(dparams) == jax.tree.structure(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(dparams, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(dx, x)


@pytest.mark.parametrize("name,layer,in_shape", LAYERS, ids=LAYER_IDS)
def test_declared_out_shape_is_apply_shape(name, layer, in_shape):
    out_shape, params = layer.init(jax.random.PRNGKey(0), in_shape)
    x = jax.ShapeDtypeStruct((3,) + tuple(in_shape), jnp.float32)
    assert jax.eval_shape(layer.apply, params, x).shape == (3,) + tuple(out_shape)
    if name not in NEEDS_BATCH_AXIS:  # one example, no batch axis; and two batch axes
        one = jax.ShapeDtypeStruct(tuple(in_shape), jnp.float32)
        assert jax.eval_shape(layer.apply, params, one).shape == tuple(out_shape)
        two = jax.ShapeDtypeStruct((2, 3) + tuple(in_shape), jnp.float32)
        assert jax.eval_shape(layer.apply, params, two).shape == (2, 3) + tuple(out_shape)


@pytest.mark.parametrize("name,layer,in_shape", LAYERS, ids=LAYER_IDS)
def test_jit_matches_eager(name, layer, in_shape):
    params, x = init_with_input(layer, in_shape)
    y, residuals = layer.forward(params, x)
    dy = random_like(jax.random.PRNGKey(3), y)
    eager = layer.backward(params, residuals, dy)

    @jax.jit
    def compiled(p, inputs, cotangent):
        out, res = layer.forward(p, inputs)
        return out, layer.backward(p, res, cotangent)

    y_jit, grads_jit = compiled(params, x, dy)
    chex.assert_trees_all_close((y_jit, grads_jit), (y, eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,layer,in_shape", LAYERS, ids=LAYER_IDS)
def test_vmap_per_example_vjp_equals_autodiff(x64, name, layer, in_shape):
    params, x = init_with_input(layer, in_shape)
    dy = random_like(jax.random.PRNGKey(5), layer.apply(params, x))
    add_axis = name in NEEDS_BATCH_AXIS

    def manual(x_i, dy_i):
        if add_axis:
            x_i, dy_i = x_i[None], dy_i[None]
        _, residuals = layer.forward(params, x_i)
        return layer.backward(params, residuals, dy_i)

    def autodiff(x_i, dy_i):
        if add_axis:
            x_i, dy_i = x_i[None], dy_i[None]
        return jax.vjp(layer.apply, params, x_i)[1](dy_i)

    per_example = jax.vmap(manual)(x, dy)
    chex.assert_trees_all_close(per_example, jax.vmap(autodiff)(x, dy), rtol=1e-10, atol=1e-14)
    # per-example parameter gradients add up to the batch gradient
    _, residuals = layer.forward(params, x)
    batch_dparams, batch_dx = layer.backward(params, residuals, dy)
    summed = jax.tree.map(lambda g: g.sum(0), per_example[0])
    chex.assert_trees_all_close(summed, batch_dparams, rtol=1e-10, atol=1e-12)


def test_relu_derivative_at_zero_is_zero():
    x = jnp.array([-1.0, 0.0, 2.0])
    _, residual = fnnet.Relu.forward((), x)
    _, dx = fnnet.Relu.backward((), residual, jnp.ones(3))
    np.testing.assert_array_equal(dx, [0.0, 0.0, 1.0])
    # and the autodiff reference agrees (jax.nn.relu, not jnp.maximum, whose derivative is 0.5 at 0)
    np.testing.assert_array_equal(jax.grad(lambda v: fnnet.Relu.apply((), v).sum())(x), [0, 0, 1])


def test_leaky_relu_slope_and_kink():
    layer = fnnet.LeakyRelu(0.1)
    x = jnp.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(layer.apply((), x), [-0.2, 0.0, 3.0])
    _, residual = layer.forward((), x)
    np.testing.assert_allclose(layer.backward((), residual, jnp.ones(3))[1], [0.1, 1.0, 1.0])


def test_dense_computes_x_w_plus_b_with_glorot_default():
    out_shape, params = fnnet.Dense(3).init(jax.random.PRNGKey(0), (1000,))
    assert out_shape == (3,)
    limit = np.sqrt(6 / 1003)
    assert float(jnp.abs(params["w"]).max()) <= limit
    assert float(jnp.abs(params["w"]).max()) > 0.9 * limit  # really uniform over the whole range
    np.testing.assert_array_equal(params["b"], np.zeros(3))
    x = jnp.arange(2000.0).reshape(2, 1000) / 1000
    np.testing.assert_allclose(fnnet.Dense(3).apply(params, x), np.asarray(x) @ np.asarray(params["w"]) + np.asarray(params["b"]),
                               rtol=1e-5, atol=1e-5)


def test_softmax_rows_sum_to_one():
    y = fnnet.Softmax.apply((), jnp.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]]))
    chex.assert_tree_all_finite(y)
    np.testing.assert_allclose(y.sum(-1), [1.0, 1.0], rtol=1e-6)


def test_serial_params_are_one_entry_per_layer_and_nest():
    inner = fnnet.serial(fnnet.Dense(3), fnnet.Relu)
    model = fnnet.serial(inner, fnnet.Dense(2))
    out_shape, params = model.init(jax.random.PRNGKey(0), (4,))
    assert out_shape == (2,)
    assert len(params) == 2 and len(params[0]) == 2 and params[0][1] == ()
    assert params[0][0]["w"].shape == (4, 3) and params[1]["w"].shape == (3, 2)


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match="argument 1 is not a fnnet.Layer.*Dense"):
        fnnet.serial(fnnet.Dense(2), fnnet.Dense)


def test_wrong_input_width_names_layer_and_shapes():
    model = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(ValueError, match=r"layer 0 \(Dense\(4\)\).*\(\.\.\., 3\).*\(5, 7\)"):
        model.apply(params, jnp.ones((5, 7)))
    with pytest.raises(ValueError, match=r"layer 0 \(Dense\(4\)\)"):
        model.forward(params, jnp.ones((5, 7)))
    with pytest.raises(ValueError, match=r"layer 0 \(Dense\(4\)\)"):
        jax.jit(model.apply)(params, jnp.ones((5, 7)))  # before XLA sees it


def test_wrong_params_name_layer_and_shapes():
    model = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    _, other = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(5)).init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(2\)\).*\(n_in, 2\).*\(4, 5\)"):
        model.apply(other, jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="expected params with 3 entries.*got 2"):
        model.apply(params[:2], jnp.ones((1, 3)))
    nested = fnnet.serial(fnnet.serial(fnnet.Dense(4)), fnnet.Dense(2))
    _, nested_params = nested.init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(ValueError, match=r"layer 0 \(serial\): layer 0 \(Dense\(4\)\).*\(2, 9\)"):
        nested.apply(nested_params, jnp.ones((2, 9)))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="positive int"):
        fnnet.Dense(0)
    with pytest.raises(ValueError, match="in_shape"):
        fnnet.Dense(3).init(jax.random.PRNGKey(0), "abc")


def test_summary_lists_layers_shapes_and_counts():
    model = fnnet.serial(fnnet.Flatten, fnnet.Dense(512), fnnet.Relu, fnnet.Dense(10))
    table = fnnet.summary(model, (28, 28))
    assert [row[1] for row in table.rows] == ["Flatten", "Dense(512)", "Relu", "Dense(10)"]
    assert [row[2] for row in table.rows] == [(784,), (512,), (512,), (10,)]
    assert table.total_params == 784 * 512 + 512 + 512 * 10 + 10
    text = str(table)
    assert "Dense(512)" in text and "401,920" in text and "total parameters: 407,050" in text


@pytest.mark.parametrize("init_fn,check", [
    (fnnet.initializers.glorot_uniform, lambda w: abs(w.std() - np.sqrt(2 / 800)) < 0.05 * np.sqrt(2 / 800)),
    (fnnet.initializers.glorot_normal, lambda w: abs(w.std() - np.sqrt(2 / 800)) < 0.05 * np.sqrt(2 / 800)),
    (fnnet.initializers.he_uniform, lambda w: abs(w.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)),
    (fnnet.initializers.he_normal, lambda w: abs(w.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)),
    (fnnet.initializers.normal(0.3), lambda w: abs(w.std() - 0.3) < 0.015),
    (fnnet.initializers.uniform(0.5), lambda w: w.min() >= -0.5 and w.max() <= 0.5 and w.max() > 0.49),
    (fnnet.initializers.zeros, lambda w: not w.any()),
])
def test_initializer_statistics(init_fn, check):
    w = np.asarray(init_fn(jax.random.PRNGKey(0), (400, 400), jnp.float32))
    assert w.shape == (400, 400) and w.dtype == np.float32
    assert check(w)
