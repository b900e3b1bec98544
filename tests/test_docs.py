"""The runnable examples in the docstrings run (as optax does with its doctests)."""

import doctest
import importlib

import pytest

MODULES = ["fnnet.initializers", "fnnet.layers.dense", "fnnet.layers.activations", "fnnet.layers.conv",
           "fnnet.layers.pooling", "fnnet.layers.normalization", "fnnet.layers.dropout", "fnnet.layers.reshape",
           "fnnet.layer", "fnnet.combinators", "fnnet.app.recipes",
           "fnnet.gradients", "fnnet.gradcheck", "fnnet.summary", "fnnet.checkpoint", "fnnet.train.steps",
           "fnnet.train.compiled", "fnnet.losses",
           "fnnet.datasets", "fnnet.layers.embedding", "fnnet.layers.attention", "fnnet.gpt", "fnnet.tracing",
           "fnnet.explanation", "fnnet.health", "fnnet.tape",
           "fnnet.diagnosis", "fnnet.train.augment"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no runnable example"
