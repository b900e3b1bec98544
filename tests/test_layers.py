"""Layer values and contracts one by one (ReLU at its kink, Dense's formula, serial's params, errors).

The per-layer gradient, shape, dtype and vmap checks run over the one catalogue:
test_catalogue.py and test_batch_axes.py."""

import chex
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws


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
    with pytest.raises(ValueError, match=r"layer 0/0 \(Dense\(4\)\): .*\(2, 9\)"):
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


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_draws_are_jax_randoms_own_numbers_from_one_program_per_size_class(dtype, monkeypatch, caplog):
    """fnnet.draws (what the initialisers and the gradient-check cases draw with) gives exactly
    jax.random's numbers, scaled in the draw's dtype as ``scale * jax.random.normal`` is, eagerly,
    under jit, past LARGEST and with threefry's partitionable counting off; and a new shape in a
    size class compiles nothing new."""
    from fnnet import draws

    key = jax.random.PRNGKey(7)
    shapes = [(), (1,), (0, 3), (5, 7), (3, 3, 4, 16), (784, 128), (4097,)]

    def same(shape):
        chex.assert_trees_all_equal(draws.normal(key, shape, dtype), jax.random.normal(key, shape, dtype))
        chex.assert_trees_all_equal(draws.normal(key, shape, dtype, scale=0.05),
                                    0.05 * jax.random.normal(key, shape, dtype))
        chex.assert_trees_all_equal(draws.uniform(key, shape, dtype, -0.3, 0.3),
                                    jax.random.uniform(key, shape, dtype, -0.3, 0.3))

    for shape in shapes:
        same(shape)
    chex.assert_trees_all_equal(jax.jit(lambda k: draws.normal(k, (5, 7), dtype, scale=2.0))(key),
                                2.0 * jax.random.normal(key, (5, 7), dtype))
    on_device = jax.device_put(key, jax.devices()[-1])      # a committed key: drawn where jax.random draws
    assert draws.normal(on_device, (5, 7), dtype).devices() == jax.random.normal(on_device, (5, 7), dtype).devices()
    assert draws.normal(on_device, (5, 7), dtype).committed
    monkeypatch.setattr(draws, "LARGEST", 16)
    same((5, 7))
    with jax.threefry_partitionable(False):
        same((5, 7))
    monkeypatch.undo()
    draws.normal(key, (9, 11), dtype)              # this size class's program, compiled
    caplog.clear()
    with jax.log_compiles():
        draws.normal(key, (13, 17), dtype)
    assert "Compiling" not in caplog.text, caplog.text
    with jax.log_compiles():                        # while jax.random compiles for each new shape
        jax.random.normal(key, (3, 1, 37), dtype)
    assert "Compiling" in caplog.text


def test_host_arrays_equal_jax_numpys_own_and_compile_nothing(caplog):
    """fnnet.host (what the initialisers, checkpoints, conversions and TrainState copies use) gives
    jnp's arrays (values, canonical dtypes) without compiling a program per shape; the caller's NumPy
    array is never aliased, and owned_copy gives new buffers."""
    from fnnet import host

    for shape, dtype, value in (((), jnp.int32, 0), ((3,), jnp.bfloat16, 1.0), ((2, 5), jnp.float16, 0.5),
                                ((4, 3), None, 0.0)):
        chex.assert_trees_all_equal(host.filled(shape, dtype, value), jnp.full(shape, value, dtype))
    assert host.filled((2,), jnp.float64).dtype == jnp.float32                    # as jnp gives it without x64
    with jax.enable_x64(True):
        assert host.filled((2,), None).dtype == jnp.float64 and host.on_device(np.ones(2)).dtype == jnp.float64
    values = np.arange(6.0).reshape(2, 3)
    on_device = host.on_device(values)
    chex.assert_trees_all_equal(on_device, jnp.asarray(values))
    values[0, 0] = 100.0                                           # the caller's array changes later
    assert float(on_device[0, 0]) == 0.0
    assert host.on_device(on_device) is on_device and host.on_device([1, 2]).dtype == jnp.int32
    tree = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    copied = host.owned_copy(tree)
    chex.assert_trees_all_equal(copied, tree)
    assert copied["w"].unsafe_buffer_pointer() != tree["w"].unsafe_buffer_pointer()
    fresh = jax.device_put(np.arange(31.0))
    caplog.clear()
    with jax.log_compiles():                                       # new shapes: nothing compiles
        host.filled((17, 19), jnp.float32, 0.25), host.on_device(np.ones((23, 29))), host.owned_copy(fresh)
    assert "Compiling" not in caplog.text, caplog.text


def test_a_layer_of_your_own_named_serial_is_a_leaf_everywhere():
    """One notion of a layer's kind (fnnet.layer.layer_kind, from its Spec): a user's layer that
    happens to be called "serial" is not mistaken for the serial combinator."""
    from fnnet.layer import is_combinator_kind, layer_kind, make_layer

    square = make_layer("serial", lambda key, shape: (tuple(shape), ()), lambda p, x: x * x,
                        lambda p, x: (x * x, x), lambda p, x, dy: ((), 2 * x * dy))
    assert layer_kind(square) == "serial" and not is_combinator_kind(square, "serial")
    assert layer_kind(fnnet.Dense(3)) == "Dense" and is_combinator_kind(fnnet.serial(fnnet.Relu), "serial")
    model = fnnet.serial(fnnet.Dense(3), square, fnnet.Residual(square), fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (4,))
    x, y = draws.normal(jax.random.PRNGKey(1), (5, 4)), jnp.array([0, 1, 0, 1, 1])
    table = str(fnnet.summary(model, (4,)))
    assert "1  serial" in table and "Residual(serial)" in table
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    assert [layer.path for layer in trace.layers] == ["0", "1", "2/0", "2/1/0", "2/1/1", "2/2", "3"]
    assert trace.passed and trace.layer("1").kind == "serial" and trace.layer("2/1/0").name == "serial"
    with jax.enable_x64(True):
        report = fnnet.gradcheck.check_model(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    assert report.passed


def test_one_path_notation_everywhere(tmp_path):
    """A layer deep in a model is "layer 2/1/0 (Name)" in shape errors, gradient reports, the
    first-failing-layer culprit, the trace's verdict, the monitor's keys and ONNX's refusal."""
    from fnnet.layer import make_layer

    def broken_backward(p, x, dy):
        return (), 3 * x * dy    # d(x·x)/dx is 2x

    square = make_layer("Square", lambda key, shape: (tuple(shape), ()), lambda p, x: x * x,
                        lambda p, x: (x * x, x), broken_backward)
    model = fnnet.serial(fnnet.Dense(3), fnnet.Tanh, fnnet.Residual(square), fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (4,))
    x, y = draws.normal(jax.random.PRNGKey(1), (6, 4)), jnp.arange(6) % 2
    loss = fnnet.losses.softmax_cross_entropy

    nested = fnnet.serial(fnnet.Dense(3), fnnet.Residual(fnnet.serial(fnnet.Relu, fnnet.Dense(3))))
    _, nested_params = nested.init(jax.random.PRNGKey(0), (4,))
    bad = (nested_params[0], (nested_params[1][0], (((), {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}), ()),
                              nested_params[1][2]))
    with pytest.raises(ValueError, match=r"^layer 1/1/0/1 \(Dense\(3\)\): expected input of shape \(\.\.\., 2\), got \(6, 3\)"):
        nested.apply(bad, x)

    with jax.enable_x64(True):
        report = fnnet.gradcheck.check_model(model, loss, params, x, y, raise_on_failure=False)
    assert not report.passed and report.culprit.startswith("layer 2/1/0 (Square): dx disagrees"), report.culprit
    assert report.culprit_path == "2/1/0"
    assert {row.layer for row in report.rows} >= {"layer 0 (Dense(3))", "layer 3 (Dense(2))"}
    trace = fnnet.trace(model, loss, params, x, y)
    assert "NOT OK: layer 2/1/0 (Square): " in str(trace) and trace.layer("2/1/0").label == "layer 2/1/0 (Square)"

    fixed = fnnet.serial(fnnet.Dense(3), fnnet.Tanh, fnnet.Residual(fnnet.serial(fnnet.Dense(3), fnnet.Relu)),
                         fnnet.Dense(2))
    _, history = fnnet.train.fit(fixed, loss, optax.sgd(0.1), (x, y), epochs=1, batch_size=3,
                                 key=jax.random.PRNGKey(0), monitor=1, verbose=False)
    assert set(history.layers) == {"layer 0 (Dense(3))", "layer 1 (Tanh)", "layer 2/1/0/0 (Dense(3))",
                                   "layer 2/1/0/1 (Relu)", "layer 3 (Dense(2))"}, set(history.layers)

    pytest.importorskip("onnx")
    from fnnet.interop import ConversionError, to_onnx
    with pytest.raises(ConversionError, match=r"layer 2/1/0 \(Square\) has no spec"):
        to_onnx(model, params, (4,), tmp_path / "model.onnx")
