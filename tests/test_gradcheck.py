"""fnnet.gradcheck catches broken backward passes and names the culprit."""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import fnnet
from fnnet import gradcheck, losses


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
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    with pytest.raises(gradcheck.GradientMismatch, match=f"parameter '{param}'") as info:
        gradcheck.check_layer(layer, params, x)
    assert not info.value.report.passed


def test_broken_layer_inside_model_names_its_index():
    model = fnnet.serial(fnnet.Dense(3), fnnet.Tanh, _broken_dense(3, "dx-without-w"), fnnet.Dense(1))
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
    y = jax.random.normal(jax.random.PRNGKey(2), (5, 1))
    with pytest.raises(gradcheck.GradientMismatch, match=r"0:Dense\(3\)") as info:
        gradcheck.check_model(model, losses.mse, params, x, y)
    rows = {(row.layer, row.param): row.passed for row in info.value.report.rows}
    assert rows[("3:Dense(1)", "w")] and not rows[("0:Dense(3)", "w")]  # upstream of the bug fails


def test_broken_loss_is_caught():
    broken = losses.Loss(losses.mse.value, lambda p, t: (p - t) / p.size)  # forgot the factor 2
    with pytest.raises(gradcheck.GradientMismatch, match="pred"):
        gradcheck.check_loss(broken, jnp.ones((3, 2)), jnp.zeros((3, 2)))


def test_report_rows_for_a_correct_model():
    model = fnnet.serial(fnnet.Dense(4), fnnet.Sigmoid, fnnet.serial(fnnet.Dense(2)))
    _, params = model.init(jax.random.PRNGKey(0), (3,))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    report = gradcheck.check_model(model, losses.softmax_cross_entropy, params, x, jnp.arange(6) % 2)
    assert report.passed
    assert {(row.layer, row.param) for row in report.rows} == {
        ("0:Dense(4)", "w"), ("0:Dense(4)", "b"), ("2:serial / 0:Dense(2)", "w"),
        ("2:serial / 0:Dense(2)", "b")}
    assert report.worst_rel_error < 1e-12
    assert all(row.fd_rel_error < 1e-6 for row in report.rows)
    assert "0:Dense(4)" in str(report) and "pass" in str(report)


def test_report_without_raising():
    layer = _broken_dense(2, "wrong-sign")
    _, params = layer.init(jax.random.PRNGKey(0), (3,))
    report = gradcheck.check_layer(layer, params, jnp.ones((2, 3)), raise_on_failure=False)
    assert not report.passed and "FAIL" in str(report)


def test_cli_gradcheck_prints_an_all_pass_table():
    out = subprocess.run([sys.executable, "-m", "fnnet", "gradcheck"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout
    for name in ("Dense", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "Gelu", "Identity", "Flatten",
                 "squared_error", "mse", "binary_cross_entropy", "sigmoid_binary_cross_entropy",
                 "softmax_cross_entropy", "serial MLP"):
        assert name in out.stdout, name
    passed, total = map(int, re.search(r"(\d+)/(\d+) gradient leaves pass", out.stdout).groups())
    assert passed == total >= 26
