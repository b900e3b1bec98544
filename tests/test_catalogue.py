"""The one catalogue of built-in cases (fnnet.gradcheck.cases, the table `fnnet gradcheck` prints):
every layer, combinator, loss and model passes, in float64, against jax.vjp / jax.grad and finite
differences (gradcheck compares the gradients' tree structure too). No data set is needed. The
float32 shapes and dtypes of every case's gradients are checked in test_batch_axes.py."""

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
    public = {name for name in fnnet._FROM["fnnet.layers"] + fnnet._FROM["fnnet.combinators"] if name[0].isupper()}
    assert public - names == set(), public - names
