"""The one catalogue of built-in cases (fnnet.gradcheck.cases, the table `fnnet gradcheck` prints):
every layer, combinator, loss and model passes, in float64, against jax.vjp / jax.grad and finite
differences, with gradients shaped and typed like the params. No data set is needed."""

import chex
import jax
import jax.numpy as jnp
import pytest

import fnnet
from fnnet import gradcheck
from fnnet.gradcheck.cases import LAYER_CASES

CASES = gradcheck.builtin_cases()


@pytest.mark.parametrize("name,run", CASES, ids=[name for name, _ in CASES])
def test_builtin_case_passes_against_autodiff_and_finite_differences(name, run):
    report = run()
    assert report.passed, f"{name}\n{report}"
    assert report.worst_rel_error < 1e-9, f"{name}\n{report}"   # float64: agreement to rounding


def test_catalogue_covers_every_public_layer():
    """A public layer without a catalogue case would be checked nowhere."""
    def leaves(layer):
        children = fnnet.layer.layer_children(layer)
        return [leaf for child in children for leaf in leaves(child)] if children else [layer]

    names = {leaf.name.split("(")[0] for case in LAYER_CASES for leaf in leaves(case.layer)}
    names |= {case.layer.name.split("(")[0] for case in LAYER_CASES}
    public = {name for name in fnnet.__all__ if name[0].isupper() and name not in ("Layer", "Loss", "Run", "Summary")}
    assert public - names == set(), public - names


def test_gradients_have_the_params_structure_shapes_and_dtypes():
    """float32 here; the float64 gradient checks above compare tree structures too."""
    dtype = jnp.float32
    for case in LAYER_CASES:
        _, params, state = case.init(jax.random.PRNGKey(0))
        params = jax.tree.map(lambda p: p.astype(dtype), params)
        x = case.inputs(jax.random.PRNGKey(1), (3,), dtype)

        @jax.jit
        def both(params, state, x):
            y, residuals, _ = fnnet.forward_with_state(case.layer, params, state, x, key=jax.random.PRNGKey(2),
                                                       train=case.train)
            return case.layer.backward(params, residuals, jax.tree.map(jnp.ones_like, y))

        dparams, dx = both(params, state, x)
        assert jax.tree.structure(dparams) == jax.tree.structure(params), case.name
        chex.assert_trees_all_equal_shapes_and_dtypes(dparams, params)
        if not case.vocab:
            chex.assert_trees_all_equal_shapes_and_dtypes(dx, x)
