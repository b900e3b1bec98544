"""The runnable examples in the docstrings run (as optax does with its doctests)."""

import doctest
import importlib
import pydoc

import pytest

import fnnet

MODULES = ["fnnet.initializers", "fnnet.draws", "fnnet.host", "fnnet.layers.dense", "fnnet.layers.activations", "fnnet.layers.conv",
           "fnnet.layers.pooling", "fnnet.layers.normalization", "fnnet.layers.dropout", "fnnet.layers.reshape",
           "fnnet.layer", "fnnet.combinators", "fnnet.app.recipes",
           "fnnet.gradients", "fnnet.gradcheck", "fnnet.gradcheck._checks", "fnnet.summaries", "fnnet.checkpoint", "fnnet.train.steps",
           "fnnet.train.compiled", "fnnet.losses",
           "fnnet.datasets", "fnnet.layers.embedding", "fnnet.layers.attention", "fnnet.gpt", "fnnet.sampling", "fnnet.tracing",
           "fnnet.explanation", "fnnet.health", "fnnet.tape",
           "fnnet.diagnosis", "fnnet.train.augment", "fnnet.layers.recurrent", "fnnet.layers.rnn",
           "fnnet.layers.lstm", "fnnet.layers.gru", "fnnet.tied", "fnnet.through_time", "fnnet.charrnn",
           "fnnet.pages.trace_page", "fnnet.pages.mathml", "fnnet.pages.charts"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no runnable example"


# help() shows each layer's own doc ----------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in fnnet.__all__ if isinstance(getattr(fnnet, n), fnnet.Layer)])
def test_help_on_every_public_layer_shows_its_own_doc(name):
    layer = getattr(fnnet, name)
    doc = pydoc.render_doc(layer)
    assert "A layer: four pure functions" not in doc.split("Methods")[0], doc[:400]
    assert "Example" in (type(layer).__doc__ or ""), name


def test_help_on_built_layers_shows_their_constructor_doc():
    for layer, words in ((fnnet.Dense(4), "dW = xᵀ · dy"), (fnnet.MaxPool(2), "first maximum"),
                         (fnnet.Residual(fnnet.Dense(3)), "x + block(x)"), (fnnet.BatchNorm(), "running")):
        assert words in type(layer).__doc__, layer.name
        assert isinstance(layer, fnnet.Layer)
