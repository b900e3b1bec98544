"""examples/custom_layer.py: a user-written layer is named, gradient-checked, caught when wrong, and learns."""

import jax
import jax.numpy as jnp
import pytest
from test_examples import _example

import fnnet
from fnnet import draws


@pytest.fixture(scope="module")
def example(repo_root):
    return _example(repo_root, "custom_layer")


@pytest.fixture(scope="module")
def result(example):
    return example.main(verbose=False)


def test_summary_shows_the_given_names(result):
    assert result["layer_names"] == ["Dense(64)", "ScaleShift", "Silu", "Dense(10)"]


def test_gradcheck_passes_with_tiny_errors(result):
    assert result["gradcheck_passed"]
    assert result["gradcheck_worst_rel_error"] < 1e-12       # vs jax.vjp / jax.grad, float64
    assert result["gradcheck_worst_fd_rel_error"] < 1e-6     # vs central finite differences


def test_wrong_backward_is_caught_and_named(result):
    assert "WrongSilu" in result["mismatch"]
    assert result["culprit"].startswith("layer 2 (WrongSilu): dx disagrees")


def test_trains_to_95_percent_on_digits(result):
    assert result["test_accuracy"] >= 0.95, result


def test_layers_on_one_example_and_many_batch_axes(example, x64):
    """The backward formulas sum over any leading batch axes, and run on one example under vmap."""
    x = draws.normal(jax.random.PRNGKey(0), (2, 4, 3))
    shift_params = {"gamma": jnp.linspace(-2.0, 2.0, 3), "beta": jnp.linspace(-1.0, 1.0, 3)}
    for layer, params in ((example.Silu, ()), (example.ScaleShift(), shift_params)):
        assert fnnet.gradcheck.check_layer(layer, params, x).passed          # two batch axes
        out_shape, _ = layer.init(jax.random.PRNGKey(0), (3,))                # the shape init declares
        assert jax.eval_shape(layer.apply, params, x).shape == (2, 4) + out_shape

        def one_example(xi):
            y, residuals = layer.forward(params, xi)
            return layer.backward(params, residuals, y)

        dparams, dx = jax.vmap(one_example)(x[0])
        assert dx.shape == (4, 3) and jax.tree.structure(dparams) == jax.tree.structure(params)


def test_wrong_backward_alone_is_named(example):
    with pytest.raises(fnnet.gradcheck.GradientMismatch, match=r"^WrongSilu: hand-written gradient"):
        fnnet.gradcheck.check_layer(example.WrongSilu, (), jnp.linspace(-3.0, 3.0, 12).reshape(4, 3))
