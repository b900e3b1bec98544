"""ONNX out: every layer of the catalogue, and the CLI's MLP, CNN, ResNet and GPT runs, exported
and run with onnxruntime give fnnet's outputs (float32, <= 1e-5 of the largest output) on batches
of 1, 3 and 8; onnx.checker accepts every graph (to_onnx runs it with shape inference)."""

import jax
import numpy as np
import pytest

import fnnet
from fnnet.gradcheck.cases import LAYER_CASES
from onnx_checks import TOLERANCE

onnx = pytest.importorskip("onnx", reason="the interop extra: pip install 'fnnet[interop]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="the interop extra: pip install 'fnnet[interop]'")
from fnnet.interop import ConversionError, check_onnx, to_onnx  # noqa: E402


# one graph input: the catalogue's cases that take several branches as input are checked inside models
SINGLE_INPUT = [case for case in LAYER_CASES if not (case.in_shape and isinstance(case.in_shape[0], tuple))]


def _numpy_values(tree, rng, low=-1.0, high=1.0):
    """``tree``'s arrays (shapes and dtypes) filled with NumPy draws: no JAX compilation per shape."""
    return jax.tree.map(lambda leaf: rng.uniform(low, high, leaf.shape).astype(leaf.dtype), tree)


def test_every_layer_of_the_catalogue_exports_and_runs_the_same(tmp_path):
    rng, failures = np.random.default_rng(0), []
    for index, case in enumerate(SINGLE_INPUT):
        _, like_params, like_state = fnnet.layer.abstract_init(case.layer, case.in_shape)
        params = _numpy_values(like_params, rng)
        state = _numpy_values(like_state, rng, 0.2, 1.5)   # running statistics away from init's 0 and 1
        path = to_onnx(case.layer, params, case.in_shape, tmp_path / f"{index}.onnx", model_state=state)
        x = rng.integers(0, case.vocab, (3,) + case.in_shape) if case.vocab else \
            rng.normal(size=(3,) + case.in_shape).astype(np.float32)
        difference = check_onnx(path, case.layer, params, x, model_state=state)
        if not difference <= TOLERANCE:
            failures.append((case.name, difference))
    assert not failures, failures
    assert len(SINGLE_INPUT) >= 50


@pytest.mark.parametrize("opset", [17, 18, onnx.defs.onnx_opset_version()])
def test_every_supported_opset_gives_a_valid_graph(tmp_path, opset):
    model = fnnet.serial(fnnet.Conv(4, 3), fnnet.BatchNorm(), fnnet.Gelu, fnnet.MaxPool(2), fnnet.GlobalAvgPool,
                         fnnet.LayerNorm(), fnnet.Dense(3))
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (6, 6, 2))
    path = to_onnx(model, params, (6, 6, 2), tmp_path / "m.onnx", model_state=state, opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32)
    assert check_onnx(path, model, params, x, model_state=state) <= TOLERANCE


def test_a_tied_table_is_stored_once_and_the_graph_has_a_dynamic_batch(tmp_path):
    config = fnnet.gpt.GPTConfig(vocab_size=11, block_size=6, num_layers=1, num_heads=2, features=8,
                                 tie_embeddings=True, bias=False, gelu_approximate=False)
    model = fnnet.gpt.GPT(config)
    _, params = model.init(jax.random.PRNGKey(0), (6,))
    graph = onnx.load(str(to_onnx(model, params, (6,), tmp_path / "tied.onnx")))
    tables = [t for t in graph.graph.initializer if tuple(t.dims) == (11, 8)]
    assert len(tables) == 1
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_what_cannot_be_exported_is_named(tmp_path):
    mine = fnnet.Layer(lambda key, s: (s, ()), lambda p, x: x * 2, lambda p, x: (x * 2, None),
                       lambda p, r, dy: ((), dy * 2), name="Double")
    model = fnnet.serial(fnnet.Dense(3), mine)
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    with pytest.raises(ConversionError, match=r"layer 1 \(Double\) has no spec \(a layer of your own\)"):
        to_onnx(model, params, (2,), tmp_path / "m.onnx")
    bn = fnnet.serial(fnnet.Dense(3), fnnet.BatchNorm())
    _, params, state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (2,))
    with pytest.raises(ConversionError, match=r"has state \(BatchNorm's running statistics\): pass model_state="):
        to_onnx(bn, params, (2,), tmp_path / "bn.onnx")
    with pytest.raises(ConversionError, match="opset 16 is not supported"):
        to_onnx(bn, params, (2,), tmp_path / "bn.onnx", model_state=state, opset=16)
    with pytest.raises(ConversionError, match=r"layer 0 \(Dense\(3\)\), param 'w' has shape \(2, 3\), the model expects \(5, 3\)"):
        to_onnx(bn, params, (5,), tmp_path / "bn.onnx", model_state=state)
    assert not (tmp_path / "bn.onnx").exists()
