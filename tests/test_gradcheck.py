"""fnnet.gradcheck catches broken backward passes and names the culprit."""

import jax
import jax.numpy as jnp
import pytest

import fnnet
from fnnet import draws, gradcheck, losses
from fnnet.gradcheck import GradientMismatch


def _broken_dense(out_dim, flaw):
    """A test-only Dense whose backward has a classic tutorial bug."""
    dense = fnnet.Dense(out_dim)

    def backward(params, x, dy):
        grads, dx = dense.backward(params, x, dy)
        if flaw == "missing-bias-sum":      # db = dy[0] instead of Σ dy
            grads = {"w": grads["w"], "b": dy[0]}
        elif flaw == "wrong-sign":
            grads = {"w": -grads["w"], "b": grads["b"]}
        elif flaw == "dx-without-w":         # dx forgets the Wᵀ (shapes happen to fit if square)
            dx = dy
        return grads, dx

    return fnnet.Layer(dense.init, dense.apply, dense.forward, backward)


@pytest.mark.parametrize("flaw,param", [("missing-bias-sum", "b"), ("wrong-sign", "w")])
def test_broken_layer_is_caught_and_named(flaw, param):
    layer = _broken_dense(3, flaw)
    _, params = layer.init(jax.random.PRNGKey(0), (3,))
    x = draws.normal(jax.random.PRNGKey(1), (4, 3))
    with pytest.raises(gradcheck.GradientMismatch, match=f"parameter '{param}'") as info:
        gradcheck.check_layer(layer, params, x)
    assert not info.value.report.passed


def test_broken_layer_inside_model_names_its_index():
    model = fnnet.serial(fnnet.Dense(3), fnnet.Tanh, _broken_dense(3, "dx-without-w"), fnnet.Dense(1))
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    x = draws.normal(jax.random.PRNGKey(1), (5, 2))
    y = draws.normal(jax.random.PRNGKey(2), (5, 1))
    with pytest.raises(GradientMismatch, match=r"first layer whose backward disagrees is layer 2 \(Dense\): dx") as info:
        gradcheck.check_model(model, losses.mse, params, x, y)
    rows = {(row.layer, row.param): row.passed for row in info.value.report.rows}
    assert rows[("layer 3 (Dense(1))", "w")] and not rows[("layer 0 (Dense(3))", "w")]  # upstream of the bug fails
    assert info.value.report.culprit.startswith("layer 2 (Dense): dx disagrees")


def _broken_relu():
    """A parameter-free layer whose backward forgets the ReLU mask (dx = dy)."""
    relu = fnnet.Relu
    return fnnet.Layer(relu.init, relu.apply, relu.forward, lambda params, z, dy: ((), dy), name="LeakyMask")


def test_broken_parameter_free_layer_is_blamed_not_the_dense_before_it():
    model = fnnet.serial(fnnet.Dense(8), _broken_relu(), fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (4,))
    x = draws.normal(jax.random.PRNGKey(1), (16, 4))
    with pytest.raises(GradientMismatch) as info:
        gradcheck.check_model(model, losses.softmax_cross_entropy, params, x, jnp.arange(16) % 2)
    message = str(info.value).splitlines()[0]
    assert "first layer whose backward disagrees is layer 1 (LeakyMask): dx" in message, message
    assert "layer 0 (Dense(8))" not in message


def test_forward_that_differs_from_apply_is_caught_and_named():
    dense = fnnet.Dense(3)
    shifted = fnnet.Layer(dense.init, dense.apply,
                          lambda params, x: (dense.apply(params, x) + 1e-3, x), dense.backward, name="Shifted")
    _, params = shifted.init(jax.random.PRNGKey(0), (2,))
    x = draws.normal(jax.random.PRNGKey(1), (4, 2))
    with pytest.raises(GradientMismatch, match="forward's output differs from apply's"):
        gradcheck.check_layer(shifted, params, x)
    model = fnnet.serial(fnnet.Dense(2), fnnet.Tanh, shifted)
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    with pytest.raises(GradientMismatch, match=r"forward loss .* differs .* first layer that differs is "
                                              r"layer 2 \(Shifted\): forward's output differs"):
        gradcheck.check_model(model, losses.mse, params, x, jnp.zeros((4, 3)))


def _relu_net_on_a_kink():
    """A ReLU net with pre-activations within 1e-9 of the kink: every finite-difference step crosses it."""
    model = fnnet.serial(fnnet.Dense(6), fnnet.Relu, fnnet.Dense(3))
    _, params = model.init(jax.random.PRNGKey(0), (4,))
    x = draws.normal(jax.random.PRNGKey(1), (8, 4))
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        x = x.astype(jnp.float64)
        z = x @ params[0]["w"]
        params[0]["b"] = -z[0] + 1e-9      # example 0 sits on every unit's kink
    return model, params, x, jnp.arange(8) % 3


def test_finite_differences_skip_kinks_instead_of_failing_a_correct_backward():
    model, params, x, y = _relu_net_on_a_kink()
    report = gradcheck.check_model(model, losses.softmax_cross_entropy, params, x, y)
    assert report.passed, str(report)
    assert sum(row.fd_skipped for row in report.rows) > 0       # the kinks were seen and counted
    assert "fd skipped" in str(report)


def test_finite_differences_alone_still_catch_a_wrong_backward():
    model, params, x, y = _relu_net_on_a_kink()
    broken = fnnet.serial(model.children[0], model.children[1], _broken_dense(3, "wrong-sign"))
    with pytest.raises(GradientMismatch) as info:   # autodiff tolerance off: finite differences decide
        gradcheck.check_model(broken, losses.softmax_cross_entropy, params, x, y, rtol=float("inf"))
    rows = {(row.layer, row.param): row for row in info.value.report.rows}
    assert rows[("layer 2 (Dense)", "w")].fd_rel_error > 0.1 and not rows[("layer 2 (Dense)", "w")].passed


def test_broken_loss_is_caught():
    broken = losses.Loss(losses.mse.value, lambda p, t: (p - t) / p.size)  # forgot the factor 2
    with pytest.raises(gradcheck.GradientMismatch, match="pred"):
        gradcheck.check_loss(broken, jnp.ones((3, 2)), jnp.zeros((3, 2)))


def test_report_rows_for_a_correct_model():
    model = fnnet.serial(fnnet.Dense(4), fnnet.Sigmoid, fnnet.serial(fnnet.Dense(2)))
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    x = draws.normal(jax.random.PRNGKey(1), (6, 3))
    report = gradcheck.check_model(model, losses.softmax_cross_entropy, params, x, jnp.arange(6) % 2)
    assert report.passed
    assert {(row.layer, row.param) for row in report.rows} == {
        ("layer 0 (Dense(4))", "w"), ("layer 0 (Dense(4))", "b"), ("layer 2/0 (Dense(2))", "w"),
        ("layer 2/0 (Dense(2))", "b")}
    assert report.worst_rel_error < 1e-12
    assert all(row.fd_rel_error < 1e-6 for row in report.rows)
    assert "layer 0 (Dense(4))" in str(report) and "pass" in str(report)


def test_report_without_raising():
    layer = _broken_dense(2, "wrong-sign")
    _, params = layer.init(jax.random.PRNGKey(0), (3,))
    report = gradcheck.check_layer(layer, params, jnp.ones((2, 3)), raise_on_failure=False)
    assert not report.passed and "FAIL" in str(report)
