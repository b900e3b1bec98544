"""PyTorch's nn.RNN (tanh, relu), nn.LSTM and nn.GRU ↔ fnnet, and the recurrent layers to ONNX
(fnnet/interop/recurrent_torch.py, onnx_recurrent.py).

torch → fnnet → torch in float64, for every option (num_layers 1 and 2 with dropout, bidirectional,
batch_first True and False, bias=False, the output or the last hidden state picked): fnnet's
outputs equal torch's, and so do the gradients of one loss for every parameter (fnnet's
hand-written backward against autograd, named tensor by tensor) and for the input; the torch
module that comes back holds the same tensors under the same names and gives the same output,
h_n and gradients; fnnet → torch → fnnet is the identity. A pairwise-covering set of the options
runs for each kind in every run, all 32 combinations in the slow one. Then onnxruntime against
fnnet for each kind, one and two directions, both output modes; and each refusal named.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet.layer import forward_with_state, layer_children

torch = pytest.importorskip("torch", reason="the interop extra: pip install 'fnnet[interop]'")
from fnnet.interop import ConversionError, LastHidden, SequenceOutput, from_torch, to_torch  # noqa: E402

nn = torch.nn
B, T, F, H = 3, 4, 3, 5
KINDS = ("RNN", "RNN relu", "LSTM", "GRU")
OPTIONS = ("two layers", "bidirectional", "time first", "no bias", "last hidden")
# pairwise covering: any two options appear in each of their four on/off combinations
COVERING = [(0, 0, 0, 0, 0), (1, 1, 0, 0, 1), (1, 0, 1, 0, 1), (1, 0, 0, 1, 0), (0, 1, 1, 1, 1), (0, 1, 1, 1, 0)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """torch on one thread for these tiny tensors: its thread pool against XLA's compiling threads
    on a small machine made each LSTM call ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config_id(flags):
    return ", ".join(name for name, on in zip(OPTIONS, flags) if on) or "one layer"


def _module(kind, flags, dropout=0.25):
    """The torch module of ``kind`` with the options ``flags`` (float64, seeded), and its picker."""
    layers, bidirectional, time_first, no_bias, last = flags
    torch.manual_seed(len(kind) + 2 * sum(flags))
    cls = getattr(nn, kind.split()[0])
    options = {"nonlinearity": "relu"} if kind == "RNN relu" else {}
    module = cls(F, H, num_layers=1 + layers, bias=not no_bias, batch_first=not time_first,
                 dropout=dropout if layers else 0.0, bidirectional=bool(bidirectional), **options).double()
    return module, LastHidden() if last else SequenceOutput()


def _torch_pass(module, picker, x, r, time_first):
    """``(picked output (batch first), (output, h_n), {name: gradient}, dx)`` of ``loss = Σ picked·r``."""
    module.zero_grad()
    xt = torch.tensor(x.transpose(1, 0, 2) if time_first else x, requires_grad=True)
    result = module(xt)
    picked = picker(result)
    if time_first and picked.dim() == 3:
        picked = picked.transpose(0, 1)
    (picked * torch.tensor(r)).sum().backward()
    dx = xt.grad.numpy()
    grads = {name: p.grad.numpy().copy() for name, p in module.named_parameters()}
    return picked.detach().numpy(), result, grads, dx.transpose(1, 0, 2) if time_first else dx


def _specs(layer):
    return (layer.spec, tuple(_specs(c) for c in layer_children(layer)))


def _round_trip(kind, flags):
    """Long: one config end to end, each comparison named."""
    name = f"{kind}, {_config_id(flags)}"
    module, picker = _module(kind, flags)
    module.eval()   # dropout between layers off, as fnnet's evaluation mode
    model, params, state = from_torch(nn.Sequential(module, picker), (T, F))
    rng = np.random.default_rng(sum(flags))
    x = rng.normal(size=(B, T, F))
    width = H * (2 if flags[1] else 1)
    r = rng.normal(size=(B, width) if flags[4] else (B, T, width))
    want_y, want_result, want_grads, want_dx = _torch_pass(module, picker, x, r, flags[2])

    @jax.jit
    def hand(params, x, r):
        y, residuals, _ = forward_with_state(model, params, state, x, train=False)
        return y, model.backward(params, residuals, r)

    y, (grads, dx) = hand(params, x, r)
    assert y.dtype == jnp.float64 and jax.tree.structure(grads) == jax.tree.structure(params), name
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12, err_msg=f"{name}: output")
    np.testing.assert_allclose(dx, want_dx, rtol=1e-9, atol=1e-11, err_msg=f"{name}: dx")
    named = dict(to_torch(model, jax.tree.map(np.asarray, grads), state)[0].named_parameters())
    assert set(named) == set(want_grads), name
    for tensor, want in want_grads.items():   # llm.c's check_tensor: each named gradient, or its name
        np.testing.assert_allclose(named[tensor].detach().numpy(), want, rtol=1e-9, atol=1e-11,
                                   err_msg=f"{name}: {tensor} NOT OK")

    # back to torch: the same tensors under the same names; the same output, h_n and gradients
    back = to_torch(model, params, state)
    assert [type(m) for m in back] == [type(module), type(picker)], name
    assert back[0].num_layers == module.num_layers and back[0].dropout == module.dropout and back[0].batch_first
    for (key, theirs), (key_back, ours) in zip(module.state_dict().items(), back[0].state_dict().items()):
        assert key == key_back and ours.dtype == theirs.dtype and torch.equal(ours, theirs), (name, key)
    got_y, got_result, got_grads, got_dx = _torch_pass(back[0], back[1], x, r, False)
    time_axis = (lambda t: t.transpose(0, 1)) if flags[2] else (lambda t: t)
    np.testing.assert_allclose(got_result[0].detach().numpy(), time_axis(want_result[0]).detach().numpy(),
                               rtol=1e-12, atol=1e-14, err_msg=f"{name}: output back in torch")
    for got, want in zip(jax.tree.leaves(got_result[1]), jax.tree.leaves(want_result[1])):
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=f"{name}: h_n (and c_n) back in torch")
    np.testing.assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-14, err_msg=f"{name}: picked back in torch")
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-12, atol=1e-14, err_msg=f"{name}: dx back in torch")
    for tensor, want in want_grads.items():
        np.testing.assert_allclose(got_grads[tensor], want, rtol=1e-12, atol=1e-14, err_msg=f"{name}: {tensor} back")

    # and fnnet → torch → fnnet is the identity
    again, params_again, state_again = from_torch(back, (T, F))
    assert _specs(again) == _specs(model), name
    chex.assert_trees_all_equal(params_again, params)


def _fast(kind):
    """The configs that run every time: the covering set; for the relu RNN, which differs from the tanh
    one in its activation alone, everything off and everything on."""
    return [COVERING[0], (1, 1, 1, 1, 1)] if kind == "RNN relu" else COVERING


@pytest.mark.parametrize("kind,flags", [(kind, flags) for kind in KINDS for flags in _fast(kind)],
                         ids=[f"{kind}: {_config_id(flags)}" for kind in KINDS for flags in _fast(kind)])
def test_torch_to_fnnet_to_torch_in_float64(x64, kind, flags):
    _round_trip(kind, flags)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_torch_to_fnnet_to_torch_in_float64_every_combination(x64, kind):
    for flags in itertools.product((0, 1), repeat=len(OPTIONS)):
        if flags not in _fast(kind):
            _round_trip(kind, flags)


def test_the_covering_set_covers_every_pair_of_options():
    for i, j in itertools.combinations(range(len(OPTIONS)), 2):
        assert {(row[i], row[j]) for row in COVERING} == {(0, 0), (0, 1), (1, 0), (1, 1)}, (OPTIONS[i], OPTIONS[j])


def test_what_from_torch_makes_of_each_option(x64):
    """The layers: one per torch layer, Dropout(p) between, Bidirectional, the picker's mode, relu,
    bias=False; a bare module (or one last in a Sequential) converts as its output."""
    module = nn.GRU(F, H, num_layers=3, dropout=0.5, bidirectional=True, bias=False).double()
    model, params, _ = from_torch(nn.Sequential(nn.Linear(F, F).double(), module, LastHidden()), (T, F))
    assert [c.name for c in model.children] == [
        "Dense(3)", "Bidirectional(GRU(5, no bias))", "Dropout(0.5)", "Bidirectional(GRU(5, no bias))",
        "Dropout(0.5)", "Bidirectional(GRU(5, last step, no bias))"]
    assert sorted(params[1]["reverse"]) == ["w_hh", "w_ih"]
    np.testing.assert_array_equal(params[5]["reverse"]["w_hh"], module.weight_hh_l2_reverse.detach().numpy().T)
    rnn = nn.RNN(F, H, nonlinearity="relu", batch_first=True).double()
    for given in (rnn, nn.Sequential(rnn), nn.Sequential(nn.Sequential(rnn), SequenceOutput())):
        model, params, state = from_torch(given, (T, F))
        leaves = [model]
        while layer_children(leaves[0]):
            leaves = layer_children(leaves[0])
        assert [c.spec for c in leaves] == [fnnet.RNN(H, "relu").spec]
        x = torch.randn(2, T, F, dtype=torch.float64)
        y, _ = fnnet.apply_with_state(model, params, state, x.numpy())
        np.testing.assert_allclose(y, rnn(x)[0].detach().numpy(), rtol=1e-12)


def test_a_token_model_round_trips_and_to_torch_stacks_layers_that_fit(x64):
    """Embedding → LSTM stack → Linear, built in fnnet: layers that fit become one module, the others
    one each; the torch twin computes what fnnet computes."""
    model = fnnet.serial(fnnet.Embedding(11, F), fnnet.LSTM(H), fnnet.Dropout(0.1), fnnet.LSTM(H),
                         fnnet.Dropout(0.2), fnnet.LSTM(H), fnnet.GRU(H), fnnet.GRU(H, return_sequences=False),
                         fnnet.Dense(2))
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (T,))
    params = jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
    net = to_torch(model, params, state)
    assert [type(m).__name__ for m in net] == ["Embedding", "LSTM", "SequenceOutput", "Dropout", "LSTM",
                                               "SequenceOutput", "GRU", "LastHidden", "Linear"]
    assert (net[1].num_layers, net[1].dropout, net[4].num_layers, net[6].num_layers) == (2, 0.1, 1, 2)
    ids = np.random.default_rng(0).integers(0, 11, (B, T))
    y, _ = fnnet.apply_with_state(model, params, state, ids)
    np.testing.assert_allclose(net(torch.tensor(ids)).detach().numpy(), y, rtol=1e-10, atol=1e-12)
    again, params_again, _ = from_torch(net, (T,))
    assert _specs(again) == _specs(model)
    chex.assert_trees_all_equal(params_again, params)


def test_dtypes_are_kept_and_float64_needs_x64():
    module = nn.LSTM(F, H, bidirectional=True, batch_first=True)
    model, params, state = from_torch(module, (T, F))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    x = torch.randn(B, T, F)
    y, _ = fnnet.apply_with_state(model, params, state, x.numpy())
    np.testing.assert_allclose(y, module(x)[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    _, params16, _ = from_torch(module.to(torch.bfloat16), (T, F))   # bfloat16 → float32 is exact: both ways
    assert {leaf.dtype for leaf in jax.tree.leaves(params16)} == {jnp.dtype(jnp.bfloat16)}
    back = to_torch(model, params16, state)[0]
    for (key, theirs), (_, ours) in zip(module.state_dict().items(), back.state_dict().items()):
        assert ours.dtype == torch.bfloat16 and torch.equal(ours, theirs), key
    with pytest.raises(ConversionError, match=r"module 0: weight_ih_l0 is float64 but JAX's x64 mode is off"):
        from_torch(nn.GRU(F, H).double(), (T, F))


def test_what_cannot_convert_is_named():
    with pytest.raises(ConversionError, match=r"module 0 \(LSTM\): proj_size=2 .* has no fnnet twin"):
        from_torch(nn.LSTM(F, H, proj_size=2), (T, F))
    with pytest.raises(ConversionError, match=r"module 0 \(GRU\) returns \(output, h_n\), which module Linear after "
                                              r"it cannot take: put fnnet.interop.SequenceOutput\(\) or LastHidden"):
        from_torch(nn.Sequential(nn.GRU(F, H), nn.Linear(H, 2)), (T, F))
    with pytest.raises(ConversionError, match=r"module 1 \(LastHidden\) picks from .* and none comes before it"):
        from_torch(nn.Sequential(nn.Linear(F, F), LastHidden()), (T, F))
    with pytest.raises(ConversionError, match=r"module 1 \(LastHidden\) must follow the recurrent module"):
        from_torch(nn.Sequential(nn.Sequential(nn.RNN(F, H)), LastHidden()), (T, F))
    with pytest.raises(ConversionError, match=r"module 1 \(Linear\) receives a recurrent module's \(output, h_n\)"):
        from_torch(nn.Sequential(nn.Sequential(nn.RNN(F, H)), nn.Linear(H, 2)), (T, F))
    with pytest.raises(ConversionError, match=r"mixes batch_first=True and batch_first=False"):
        from_torch(nn.Sequential(nn.RNN(F, H), SequenceOutput(), nn.RNN(H, H, batch_first=True)), (T, F))
    with pytest.raises(ConversionError, match=r"module 2 \(Flatten\) in a time-major model"):
        from_torch(nn.Sequential(nn.RNN(F, H), SequenceOutput(), nn.Flatten()), (T, F))
    with pytest.raises(ConversionError, match=r"module 0 \(LSTM\) needs sequences of features, one example \(T, F\)"):
        from_torch(nn.LSTM(F, H, batch_first=True), (F,))
    with pytest.raises(ConversionError, match=r"module 0 \(LSTM\): input_size=3, but the examples have 4 features"):
        from_torch(nn.LSTM(F, H, batch_first=True), (T, 4))
    model = fnnet.serial(fnnet.Conv1D(3, 2), fnnet.LSTM(H))
    _, params = model.init(jax.random.PRNGKey(0), (T, F))
    with pytest.raises(ConversionError, match=r"layer 1 \(LSTM\(5\)\) reads sequences \(N, T, F\); here PyTorch holds "
                                              r"channels-first"):
        to_torch(model, params)


def test_the_pickers_are_torch_modules_made_on_first_use():
    import pickle

    import fnnet.interop.recurrent_torch as recurrent_torch

    assert issubclass(SequenceOutput, nn.Module) and recurrent_torch.LastHidden is LastHidden
    assert pickle.loads(pickle.dumps(LastHidden())).__class__ is LastHidden
    output, h_n = torch.randn(2, T, 2 * H), torch.randn(4, 2, H)   # 2 layers, 2 directions
    np.testing.assert_array_equal(LastHidden()((output, (h_n, h_n))).numpy(),
                                  torch.cat([h_n[2], h_n[3]], -1).numpy())
    with pytest.raises(AttributeError):
        recurrent_torch.Nothing  # noqa: B018


def test_module_docstrings_run():
    import doctest

    import fnnet.interop.recurrent_torch as recurrent_torch

    result = doctest.testmod(recurrent_torch, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0


# -- ONNX out ------------------------------------------------------------------------------------------

onnx = pytest.importorskip("onnx", reason="the interop extra: pip install 'fnnet[interop]'")
pytest.importorskip("onnxruntime", reason="the interop extra: pip install 'fnnet[interop]'")
from fnnet.interop import check_onnx, to_onnx  # noqa: E402
from onnx_checks import TOLERANCE  # noqa: E402

MAKERS = {"RNN": lambda **k: fnnet.RNN(H, **k), "RNN relu": lambda **k: fnnet.RNN(H, "relu", **k),
          "LSTM": lambda **k: fnnet.LSTM(H, **k), "GRU": lambda **k: fnnet.GRU(H, **k)}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one direction", "bidirectional"])
@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_agrees_for_each_kind_both_directions_and_output_modes(tmp_path, kind, bidirectional):
    """One graph per kind and direction: a layer in sequence mode (ONNX's Y), a Dropout, one without
    biases in last-step mode (Y_h), on examples with a leading axis (folded into the batch). (Each
    kind's sequence mode as the graph's output: the catalogue's cases in test_onnx.py.)"""
    wrap = fnnet.Bidirectional if bidirectional else (lambda layer: layer)
    model = fnnet.serial(wrap(MAKERS[kind]()), fnnet.Dropout(0.3),
                         wrap(MAKERS[kind](return_sequences=False, use_bias=False)), fnnet.Dense(2))
    in_shape = (2, T, F)
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), in_shape)
    path = to_onnx(model, params, in_shape, tmp_path / "m.onnx", model_state=state)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count(kind.split()[0]) == 2 and "Loop" not in ops and "Scan" not in ops
    x = np.random.default_rng(len(kind)).normal(size=(3,) + in_shape).astype(np.float32)
    assert check_onnx(path, model, params, x, model_state=state) <= TOLERANCE


def test_onnx_gate_orders_and_attributes(tmp_path):
    """LSTM's gates go i, o, f, c and GRU's z, r, h, with linear_before_reset=1 (PyTorch's GRU)."""
    for layer, op, order in [(fnnet.LSTM(2), "LSTM", (0, 3, 1, 2)), (fnnet.Bidirectional(fnnet.GRU(2)), "GRU", (1, 0, 2))]:
        _, params = layer.init(jax.random.PRNGKey(0), (T, F))
        graph = onnx.load(str(to_onnx(layer, params, (T, F), tmp_path / f"{op}.onnx"))).graph
        node = next(n for n in graph.node if n.op_type == op)
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        first = params["forward"] if "forward" in params else params
        blocks = np.asarray(first["w_ih"]).T.reshape(len(order), 2, F)
        np.testing.assert_array_equal(weights[node.input[1]][0], blocks[list(order)].reshape(-1, F))
        if op == "GRU":
            assert attributes["linear_before_reset"] == 1 and attributes["direction"] == b"bidirectional"


def test_padded_sequences_are_not_exported(tmp_path):
    layer = fnnet.GRU(H)
    _, params = layer.init(jax.random.PRNGKey(0), (T, F))
    batch = fnnet.Sequences(np.zeros((2, T, F), np.float32), np.array([T, 2]))
    with pytest.raises(ConversionError, match=r"to_onnx: in_shape is a padded fnnet.Sequences .* one array"):
        to_onnx(layer, params, batch, tmp_path / "m.onnx")
    path = to_onnx(layer, params, (T, F), tmp_path / "m.onnx")
    with pytest.raises(ConversionError, match=r"check_onnx: x is a padded fnnet.Sequences"):
        check_onnx(path, layer, params, batch)
