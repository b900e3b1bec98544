"""RNN, LSTM, GRU and Bidirectional (fnnet/layers/recurrent.py; rnn.py, lstm.py, gru.py): the
hand-written backprop through time against jax.vjp of apply (float64, batch shapes (), (5,), (2, 3),
vmap == batch, both output modes, padded batches and initial carries; a padded batch equals each
sequence alone), against PyTorch's nn.RNN / nn.LSTM / nn.GRU (outputs and every gradient: 1 and 2
layers, batch_first or not, bidirectional, packed padded sequences), and a min-char-rnn step against
an independent NumPy BPTT written from Karpathy's published equations.

The torch ↔ fnnet mapping, written out here (the interop converters are elsewhere):
``weight_ih_l{k}{sfx} = w_ih.T``, ``weight_hh_l{k}{sfx} = w_hh.T``, ``bias_ih_l{k}{sfx} = b_ih``,
``bias_hh_l{k}{sfx} = b_hh`` for layer ``k`` of a ``serial`` stack, ``sfx`` ``""`` (or the
``"forward"`` params of a Bidirectional) and ``"_reverse"`` (its ``"reverse"`` params)."""

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import Sequences, draws
from fnnet.layer import init_with_state

T, F, H = 5, 3, 4
TOL = dict(rtol=1e-10, atol=1e-12)
KINDS = {"RNN": lambda **k: fnnet.RNN(H, **k), "RNN relu": lambda **k: fnnet.RNN(H, "relu", **k),
         "LSTM": lambda **k: fnnet.LSTM(H, **k), "GRU": lambda **k: fnnet.GRU(H, **k)}


def _params64(layer, in_shape=(T, F), seed=0):
    _, params = layer.init(jax.random.PRNGKey(seed), in_shape)
    return jax.tree.map(lambda a: a.astype(jnp.float64), params)


def _cotangent(key, y):
    """A random cotangent for ``y`` (``float0`` for integer leaves: the lengths of a Sequences)."""
    leaves, treedef = jax.tree.flatten(y)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [
        draws.normal(k, leaf.shape, leaf.dtype) if jnp.issubdtype(leaf.dtype, jnp.inexact)
        else np.zeros(leaf.shape, jax.dtypes.float0) for k, leaf in zip(keys, leaves)])


def _floats(tree):
    return [a for a in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]


def _carry(kind, key, shape):
    """A random initial carry for ``kind``: ``h_0``, or an LSTM's ``(h_0, c_0)``."""
    h = draws.normal(key, shape, jnp.float64)
    return (h, 0.5 * h[..., ::-1]) if kind == "LSTM" else h


# -- 1. the hand-written backward against jax.vjp of apply ---------------------------------------------

def _inputs(kind, batch, bidirectional=False):
    """A Sequences of batch shape ``batch`` with random lengths (the first T, others down to 0) and an
    initial carry (for a Bidirectional, one per direction)."""
    kx, kl, kc = jax.random.split(jax.random.PRNGKey(sum(batch) + 7), 3)
    x = draws.normal(kx, batch + (T, F), jnp.float64)
    lengths = jax.random.randint(kl, batch, 0, T + 1).reshape(-1).at[0].set(T).reshape(batch)
    carry = _carry(kind, kc, batch + (H,))
    return Sequences(x, lengths, (carry, jax.tree.map(lambda a: -a, carry)) if bidirectional else carry)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"] + [pytest.param(k, marks=pytest.mark.slow)
                                                          for k in ("RNN relu", "Bidirectional LSTM")])
def test_hand_backward_equals_vjp_of_apply_on_every_batch_shape_and_vmap(x64, kind):
    """One jit per kind: on arrays of batch shapes () and (2, 3) and on padded Sequences with an
    initial carry of batch shapes (5,) and (2, 3) (the last-step mode on two of them), the
    hand-written (dparams, dx) equal jax.vjp's, and in both modes jax.vmap over the (5,) sequences
    equals the batch. (The catalogue checks (6,) = (2, 3) batches of arrays in both modes,
    tests/test_batch_axes.py.)"""
    bidirectional = kind.startswith("Bidirectional")
    base = kind.split()[-1]
    make = (lambda **k: fnnet.Bidirectional(KINDS[base](**k))) if bidirectional else KINDS[kind]
    layers = [make(), make(return_sequences=False)]
    params = [_params64(layer) for layer in layers]
    x23 = draws.normal(jax.random.PRNGKey(8), (2, 3, T, F), jnp.float64)
    inputs = [x23[0, 0], x23, _inputs(base, (5,), bidirectional), _inputs(base, (2, 3), bidirectional)]
    cases = [(0, x) for x in inputs] + [(1, inputs[0]), (1, inputs[3])]

    @jax.jit
    def everything(params):
        out = []
        for i, x in cases:
            layer, p = layers[i], params[i]
            y, residuals = layer.forward(p, x)
            dy = _cotangent(jax.random.PRNGKey(3), y)
            y_apply, pullback = jax.vjp(layer.apply, p, x)
            out.append((y, y_apply, layer.backward(p, residuals, dy), pullback(dy)))
        vmapped = []
        for i in range(2):  # vmap over sequences == the batch, both modes, on the (5,) Sequences
            layer, p, x = layers[i], params[i], inputs[2]
            y, residuals = layer.forward(p, x)
            dy = _cotangent(jax.random.PRNGKey(4), y)
            each = jax.vmap(lambda v, d: layer.backward(p, layer.forward(p, v)[1], d))(x, dy)
            vmapped.append((jax.vmap(lambda v: layer.apply(p, v))(x), y, each, layer.backward(p, residuals, dy)))
        return out, vmapped

    out, vmapped = jax.device_get(everything(params))   # compared on the host
    for y, y_apply, (dparams, dx), (dparams_ref, dx_ref) in out:
        chex.assert_trees_all_close(_floats(y), _floats(y_apply), **TOL)
        chex.assert_trees_all_equal_shapes_and_dtypes(dparams, dparams_ref)
        chex.assert_trees_all_close(dparams, dparams_ref, **TOL)
        assert jax.tree.structure(dx) == jax.tree.structure(dx_ref)
        chex.assert_trees_all_close(_floats(dx), _floats(dx_ref), **TOL)
        for leaf in jax.tree.leaves(dx):
            assert leaf.dtype in (jnp.float64, jax.dtypes.float0)
    for y_vmap, y, (dparams_each, dx_each), (dparams, dx) in vmapped:
        chex.assert_trees_all_close(_floats(y_vmap), _floats(y), **TOL)
        chex.assert_trees_all_close(jax.tree.map(lambda g: g.sum(0), dparams_each), dparams, **TOL)
        chex.assert_trees_all_close(_floats(dx_each), _floats(dx), **TOL)


def test_init_declares_the_shapes_apply_returns_and_pytorch_initialisation():
    for layer, in_shape, out_shape in [(fnnet.LSTM(8), (5, 3), (5, 8)),
                                       (fnnet.GRU(8, return_sequences=False), (5, 3), (8,)),
                                       (fnnet.Bidirectional(fnnet.RNN(8)), (5, 3), (5, 16)),
                                       (fnnet.Bidirectional(fnnet.GRU(8, return_sequences=False)), (5, 3), (16,))]:
        declared, params = layer.init(jax.random.PRNGKey(0), in_shape)
        assert declared == out_shape, layer.name
        y = jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct((2, 7) + in_shape, jnp.float32))
        assert y.shape == (2, 7) + out_shape, layer.name
    _, params = fnnet.LSTM(100).init(jax.random.PRNGKey(0), (2, 30))
    assert {k: v.shape for k, v in params.items()} == {"w_ih": (30, 400), "w_hh": (100, 400), "b_ih": (400,),
                                                       "b_hh": (400,)}
    for value in params.values():   # PyTorch's U(-1/√H, 1/√H), weights and biases alike
        assert 0.09 < float(jnp.abs(value).max()) <= 0.1
    _, no_bias = fnnet.GRU(4, use_bias=False).init(jax.random.PRNGKey(0), (2, 3))
    assert sorted(no_bias) == ["w_hh", "w_ih"]
    assert fnnet.RNN(4, "relu", return_sequences=False).spec == fnnet.layer.spec(
        "RNN", hidden=4, activation="relu", return_sequences=False, use_bias=True)
    assert fnnet.Bidirectional(fnnet.LSTM(3)).spec["layer"] == fnnet.LSTM(3).spec


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_a_padded_batch_equals_each_sequence_run_alone_and_padding_gets_no_gradient(x64, kind):
    """Outputs past a sequence's end are zero, its last-step output is its last valid step's (the
    initial carry for length 0), and the padding (NaN here) changes neither outputs nor gradients."""
    seq, last = KINDS[kind](), KINDS[kind](return_sequences=False)
    forward, backward, last_apply = jax.jit(seq.forward), jax.jit(seq.backward), jax.jit(last.apply)  # compiled once
    params = _params64(seq)
    lengths = np.array([5, 2, 0, 2])
    kx, kc, kd = jax.random.split(jax.random.PRNGKey(1), 3)
    x = np.array(draws.normal(kx, (4, T, F), jnp.float64))
    initial = _carry(kind, kc, (4, H))
    padded = x.copy()
    for n, length in enumerate(lengths):
        padded[n, length:] = np.nan
    batch = Sequences(jnp.asarray(padded), jnp.asarray(lengths), initial)
    y, residuals = forward(params, batch)
    h_n = last_apply(params, batch)
    dy = np.array(draws.normal(kd, (4, T, H), jnp.float64))
    dy_padded = dy.copy()
    dy_padded[np.arange(T)[None, :] >= lengths[:, None]] = np.nan   # whatever a loss says about the padding
    dparams, dx = backward(params, residuals, Sequences(jnp.asarray(dy_padded), None, None))
    chex.assert_tree_all_finite((y.x, h_n, dparams, dx.x, dx.initial))
    total = jax.tree.map(jnp.zeros_like, params)
    for n, length in enumerate(lengths):
        alone = Sequences(jnp.asarray(x[n:n + 1, :length]), None, jax.tree.map(lambda a: a[n:n + 1], initial))
        first_h = alone.initial[0] if kind == "LSTM" else alone.initial
        np.testing.assert_array_equal(np.asarray(y.x[n, length:]), 0.0)
        if length == 0:
            np.testing.assert_allclose(h_n[n], first_h[0], **TOL)   # no step: the initial carry
            np.testing.assert_array_equal(np.asarray(dx.x[n]), 0.0)
            continue
        y_alone, res_alone = forward(params, alone)
        np.testing.assert_allclose(y.x[n, :length], y_alone[0], **TOL)
        np.testing.assert_allclose(h_n[n], last_apply(params, alone)[0], **TOL)
        g_alone, dx_alone = backward(params, res_alone, jnp.asarray(dy[n:n + 1, :length]))
        total = jax.tree.map(jnp.add, total, g_alone)
        np.testing.assert_allclose(dx.x[n, :length], dx_alone.x[0], **TOL)
        np.testing.assert_array_equal(np.asarray(dx.x[n, length:]), 0.0)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[n], dx.initial),
                                    jax.tree.map(lambda a: a[0], dx_alone.initial), **TOL)
    chex.assert_trees_all_close(dparams, total, **TOL)
    assert dx.lengths.dtype == jax.dtypes.float0 and dx.lengths.shape == (4,)


def test_bidirectional_reverses_each_sequence_within_its_length(x64):
    """The reverse direction of a padded batch is the reverse copy run on each sequence reversed
    alone; outputs are [forward, reverse] per step, zero past the end; h_n is [last valid forward
    step, reverse output at t = 0]."""
    bi, bi_last = fnnet.Bidirectional(fnnet.GRU(H)), fnnet.Bidirectional(fnnet.GRU(H, return_sequences=False))
    params = _params64(bi)
    lengths = jnp.array([5, 3, 1])
    x = draws.normal(jax.random.PRNGKey(2), (3, T, F), jnp.float64)
    y = jax.jit(bi.apply)(params, Sequences(x, lengths)).x
    h_n = jax.jit(bi_last.apply)(params, Sequences(x, lengths))
    gru_apply = jax.jit(fnnet.GRU(H).apply)   # compiled once per length, not op by op
    for n, length in enumerate(lengths.tolist()):
        forward = gru_apply(params["forward"], x[n, :length])
        reverse = gru_apply(params["reverse"], x[n, :length][::-1])[::-1]
        np.testing.assert_allclose(y[n, :length], np.concatenate([forward, reverse], -1), **TOL)
        np.testing.assert_array_equal(np.asarray(y[n, length:]), 0.0)
        np.testing.assert_allclose(h_n[n], np.concatenate([forward[-1], reverse[0]]), **TOL)
    reversed_ = fnnet.layers.recurrent.reverse_sequences(jnp.arange(5.0).reshape(1, 5, 1), jnp.array([3]))
    np.testing.assert_array_equal(reversed_[0, :, 0],
                                  [2, 1, 0, 3, 4])


# -- stacks: serial, with Dropout between layers ------------------------------------------------------

def test_a_stack_with_dropout_between_layers_on_arrays_and_on_padded_sequences(x64):
    key = jax.random.PRNGKey(5)
    x = draws.normal(jax.random.PRNGKey(6), (3, T, F), jnp.float64)
    lengths = jnp.array([5, 2, 4])
    plain = fnnet.serial(fnnet.LSTM(H), fnnet.Dropout(0.3), fnnet.LSTM(H, return_sequences=False))
    _, params, state = init_with_state(plain, jax.random.PRNGKey(0), (T, F))
    report = fnnet.gradcheck.check_layer(plain, params, x, state=state, rng=key, train=True)
    assert report.passed, str(report)
    # on a padded batch Dropout takes the Sequences the LSTM passes on: it drops steps, passes the lengths
    middle = fnnet.serial(fnnet.LSTM(H), fnnet.Dropout(0.3))
    apply = jax.jit(lambda k, train: fnnet.apply_with_state(middle, params[:2], state[:2], Sequences(x, lengths), key=k,
                                                            train=train)[0], static_argnames="train")
    dropped, kept = jax.device_get((apply(key, train=True), apply(None, train=False)))   # compared on the host
    assert isinstance(dropped, Sequences) and dropped.lengths.tolist() == [5, 2, 4]
    assert 0 < float(np.mean(dropped.x == 0)) < 1 and float(np.abs(dropped.x[1, 2:]).max()) == 0.0
    np.testing.assert_allclose(np.where(dropped.x != 0, dropped.x * 0.7, 0), np.where(dropped.x != 0, kept.x, 0),
                               **TOL)
    report = fnnet.gradcheck.check_layer(plain, params, Sequences(x, lengths), state=state, rng=key, train=True)
    assert report.passed, str(report)
    # in evaluation Dropout is the identity: the stack gives what it gives without Dropout
    y_eval, _ = fnnet.apply_with_state(plain, params, state, Sequences(x, lengths), train=False)
    without = fnnet.serial(fnnet.LSTM(H), fnnet.LSTM(H, return_sequences=False))
    np.testing.assert_allclose(y_eval, without.apply((params[0], params[2]), Sequences(x, lengths)), **TOL)


# -- 2. against PyTorch -------------------------------------------------------------------------------

def _torch_module(kind, num_layers, bidirectional, batch_first):
    torch = pytest.importorskip("torch")
    cls = {"RNN": torch.nn.RNN, "RNN relu": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[kind]
    options = {"nonlinearity": "relu"} if kind == "RNN relu" else {}
    return cls(F, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, **options).double()


def _fnnet_model(kind, num_layers, bidirectional, last=False):
    """``serial`` of ``num_layers`` layers (Bidirectional ones when asked), the last one in
    last-step mode when ``last``."""
    layers = []
    for k in range(num_layers):
        layer = KINDS[kind](return_sequences=not (last and k == num_layers - 1))
        layers.append(fnnet.Bidirectional(layer) if bidirectional else layer)
    return fnnet.serial(*layers)


def _torch_names(tree, bidirectional):
    """fnnet params (or gradients) of a serial stack as PyTorch's named tensors, in its layout."""
    named = {}
    for k, layer_params in enumerate(tree):
        directions = [("", layer_params["forward"]), ("_reverse", layer_params["reverse"])] if bidirectional \
            else [("", layer_params)]
        for suffix, p in directions:
            named[f"weight_ih_l{k}{suffix}"] = np.asarray(p["w_ih"]).T
            named[f"weight_hh_l{k}{suffix}"] = np.asarray(p["w_hh"]).T
            named[f"bias_ih_l{k}{suffix}"] = np.asarray(p["b_ih"])
            named[f"bias_hh_l{k}{suffix}"] = np.asarray(p["b_hh"])
    return named


def _load(module, params, bidirectional):
    torch = pytest.importorskip("torch")
    state = {name: torch.tensor(value) for name, value in _torch_names(params, bidirectional).items()}
    assert set(state) == set(dict(module.named_parameters()))
    module.load_state_dict(state)


def _check_named(name, got: dict, want: dict):
    """llm.c's check_tensor: each named tensor agrees, or the assertion names it."""
    assert set(got) == set(want), f"{name}: {sorted(set(got) ^ set(want))}"
    for tensor, value in want.items():
        np.testing.assert_allclose(got[tensor], value, rtol=1e-9, atol=1e-11, err_msg=f"{name}: {tensor} NOT OK")


CONFIGS = {  # (num_layers, bidirectional, batch_first, padded): the first two in every run, all in the slow one
    "1 layer": (1, False, True, False),
    "2 layers, bidirectional, time first, packed": (2, True, False, True),
    "1 layer, time first": (1, False, False, False), "2 layers": (2, False, True, False),
    "1 layer, bidirectional": (1, True, True, False), "2 layers, bidirectional, time first": (2, True, False, False),
    "1 layer, packed": (1, False, True, True), "2 layers, bidirectional, packed": (2, True, True, True)}


@pytest.mark.parametrize("config", [c if i < 2 else pytest.param(c, marks=pytest.mark.slow)
                                    for i, c in enumerate(CONFIGS)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_outputs_h_n_and_every_gradient_equal_pytorchs(x64, kind, config):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # torch: an optional dependency
    B = 3
    x = np.asarray(draws.normal(jax.random.PRNGKey(11), (B, T, F), jnp.float64))
    lengths = np.array([5, 2, 4])
    for num_layers, bidirectional, batch_first, padded in [CONFIGS[config]]:
        name = f"{kind}, {config}"
        model, model_last = (_fnnet_model(kind, num_layers, bidirectional, last) for last in (False, True))
        _, params = model.init(jax.random.PRNGKey(num_layers), (T, F))
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        module = _torch_module(kind, num_layers, bidirectional, batch_first)
        _load(module, params, bidirectional)
        width = H * (2 if bidirectional else 1)
        r = np.array(draws.normal(jax.random.PRNGKey(12), (B, T, width), jnp.float64))  # dL/dy
        s = np.asarray(draws.normal(jax.random.PRNGKey(13), (B, width), jnp.float64))     # dL/dh_n
        if padded:
            r[np.arange(T)[None, :] >= lengths[:, None]] = 0.0   # padding: pad_packed_sequence's zeros
        # PyTorch: loss = Σ out·r + Σ h_n(last layer, both directions)·s
        xt = torch.tensor(x if batch_first else x.transpose(1, 0, 2), requires_grad=True)
        inputs = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False) \
            if padded else xt
        out, h_n = module(inputs)
        h_n = h_n[0] if kind == "LSTM" else h_n
        if padded:
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
        out_b = out if batch_first else out.transpose(0, 1)
        last_h = torch.cat([h_n[-2], h_n[-1]], -1) if bidirectional else h_n[-1]
        loss = (out_b * torch.tensor(r)).sum() + (last_h * torch.tensor(s)).sum()
        loss.backward()
        torch_grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
        torch_dx = xt.grad.numpy() if batch_first else xt.grad.numpy().transpose(1, 0, 2)
        # fnnet: the same loss, by the hand-written backward (batch first; time first is the transpose)
        @jax.jit  # one compilation for both passes of both models
        def hand(params, batch, r, s):
            y, residuals = model.forward(params, batch)
            h, residuals_last = model_last.forward(params, batch)
            dy = Sequences(r, np.zeros(B, jax.dtypes.float0)) if padded else r
            grads, dx = model.backward(params, residuals, dy)
            grads_last, dx_last = model_last.backward(params, residuals_last, s)
            dx = (dx.x + dx_last.x) if padded else dx + dx_last
            return (y.x if padded else y), h, jax.tree.map(jnp.add, grads, grads_last), dx

        batch = Sequences(jnp.asarray(x), jnp.asarray(lengths)) if padded else jnp.asarray(x)
        y, h, grads, dx = hand(params, batch, jnp.asarray(r), jnp.asarray(s))
        np.testing.assert_allclose(y, out_b.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{name}: output")
        np.testing.assert_allclose(h, last_h.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{name}: h_n")
        _check_named(name, _torch_names(grads, bidirectional), torch_grads)
        np.testing.assert_allclose(dx, torch_dx, rtol=1e-9, atol=1e-11, err_msg=f"{name}: dx")


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_the_initial_carry_and_its_gradient_equal_pytorchs_h0(x64, kind):
    torch = pytest.importorskip("torch")
    layer = KINDS[kind]()
    params = _params64(layer, seed=3)
    module = _torch_module(kind, 1, False, True)
    _load(module, [params], False)
    x = np.asarray(draws.normal(jax.random.PRNGKey(14), (2, T, F), jnp.float64))
    initial = jax.tree.map(np.asarray, _carry(kind, jax.random.PRNGKey(15), (2, H)))
    r = np.asarray(draws.normal(jax.random.PRNGKey(16), (2, T, H), jnp.float64))
    h0 = [torch.tensor(a[None], requires_grad=True) for a in jax.tree.leaves(initial)]
    out, _ = module(torch.tensor(x), tuple(h0) if kind == "LSTM" else h0[0])
    (out * torch.tensor(r)).sum().backward()
    @jax.jit  # forward and backward as one program
    def forward_backward(params, x, initial, r):
        y, residuals = layer.forward(params, Sequences(x, None, initial))
        return y, layer.backward(params, residuals, r)[1]

    y, dx = forward_backward(params, x, initial, r)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(jax.tree.leaves(dx.initial), h0):
        np.testing.assert_allclose(got, want.grad.numpy()[0], rtol=1e-9, atol=1e-11)


# -- 3. min-char-rnn against an independent NumPy BPTT ----------------------------------------------

def _min_char_rnn_loss_fun(inputs, targets, hprev, Wxh, Whh, Why, bh, by):
    """Karpathy's min-char-rnn.py lossFun, as published (column vectors, one-hot inputs)."""
    vocab_size = Wxh.shape[1]
    xs, hs, ys, ps = {}, {}, {}, {}
    hs[-1] = np.copy(hprev)
    loss = 0
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
        ys[t] = np.dot(Why, hs[t]) + by
        ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
        loss += -np.log(ps[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1], dhnext


def test_min_char_rnn_step_equals_an_independent_numpy_bptt(x64):
    vocab, hidden, seq_length = 11, 16, 25
    rng = np.random.default_rng(0)
    Wxh, Whh, Why = (0.3 * rng.standard_normal(s) for s in ((hidden, vocab), (hidden, hidden), (vocab, hidden)))
    bh, by = 0.1 * rng.standard_normal((hidden, 1)), 0.1 * rng.standard_normal((vocab, 1))
    hprev = np.tanh(rng.standard_normal((hidden, 1)))
    data = rng.integers(0, vocab, seq_length + 1)
    inputs, targets = data[:-1], data[1:]
    loss, dWxh, dWhh, dWhy, dbh, dby, h_last, dhprev = _min_char_rnn_loss_fun(
        inputs, targets, hprev, Wxh, Whh, Why, bh, by)
    # fnnet: RNN(hidden) then Dense(vocab) on one sequence (no batch axis), the carry from hprev
    model = fnnet.serial(fnnet.RNN(hidden), fnnet.Dense(vocab))
    params = ({"w_ih": jnp.asarray(Wxh.T), "w_hh": jnp.asarray(Whh.T), "b_ih": jnp.asarray(bh[:, 0]),
               "b_hh": jnp.zeros(hidden)}, {"w": jnp.asarray(Why.T), "b": jnp.asarray(by[:, 0])})
    x = Sequences(jax.nn.one_hot(inputs, vocab, dtype=jnp.float64), None, jnp.asarray(hprev[:, 0]))
    xent = fnnet.losses.softmax_cross_entropy

    @jax.jit   # one program, not op by op
    def step(params, x, targets):
        logits, residuals = model.forward(params, x)
        value = seq_length * xent.value(logits, targets)                    # summed over the 25 steps
        dlogits = seq_length * xent.grad(logits, targets)                   # the loss's 1/N undone
        return value, model.backward(params, residuals, dlogits)

    value, ((g_rnn, g_dense), dx) = step(params, x, jnp.asarray(targets))
    np.testing.assert_allclose(value, loss, rtol=1e-12)
    np.testing.assert_allclose(g_rnn["w_ih"].T, dWxh, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g_rnn["w_hh"].T, dWhh, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g_rnn["b_ih"], dbh[:, 0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g_rnn["b_hh"], dbh[:, 0], rtol=1e-10, atol=1e-13)   # b_hh: the same sum
    np.testing.assert_allclose(g_dense["w"].T, dWhy, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g_dense["b"], dby[:, 0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dx.initial, dhprev[:, 0], rtol=1e-10, atol=1e-13)
    # the next call's hprev: the last step's h
    np.testing.assert_allclose(fnnet.RNN(hidden, return_sequences=False).apply(params[0], x), h_last[:, 0], rtol=1e-12)


# -- 4. errors that name the layer and the shapes -------------------------------------------------------

def test_bad_input_is_an_error_naming_the_layer_and_the_shape():
    lstm = fnnet.LSTM(4)
    _, params = lstm.init(jax.random.PRNGKey(0), (5, 3))
    x = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match=r"LSTM\(4\): expected input of shape \(\.\.\., T, 3\).*got \(2, 5, 7\)"):
        lstm.apply(params, jnp.ones((2, 5, 7)))
    with pytest.raises(ValueError, match=r"LSTM\(4\): expected input of shape \(\.\.\., T, 3\).*got \(3,\)"):
        lstm.apply(params, jnp.ones(3))
    with pytest.raises(ValueError, match=r"LSTM\(4\): lengths must have the input's batch shape \(2,\).*"
                                         r"got lengths of shape \(3,\)"):
        lstm.apply(params, Sequences(x, jnp.array([5, 5, 5])))
    with pytest.raises(ValueError, match=r"LSTM\(4\): lengths must be in 0\.\.5 .*got 6 at index \(1,\)"):
        lstm.apply(params, Sequences(x, jnp.array([5, 6])))
    with pytest.raises(ValueError, match=r"LSTM\(4\): lengths must be integers"):
        lstm.apply(params, Sequences(x, jnp.array([5.0, 2.0])))
    with pytest.raises(ValueError, match=r"LSTM\(4\): initial must be the pair \(h_0, c_0\), each of shape \(2, 4\)"):
        lstm.apply(params, Sequences(x, None, jnp.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"GRU\(4\): initial must be h_0 of shape \(2, 4\) .*got \(4,\)"):
        fnnet.GRU(4).apply(fnnet.GRU(4).init(jax.random.PRNGKey(0), (5, 3))[1], Sequences(x, None, jnp.zeros(4)))
    with pytest.raises(ValueError, match=r"layer 1 \(GRU\(2\)\): expected input of shape \(\.\.\., T, 9\) "
                                         r".*got \(2, 5, 4\)"):
        model = fnnet.serial(fnnet.LSTM(4), fnnet.GRU(2))
        _, p = model.init(jax.random.PRNGKey(0), (5, 3))
        model.apply((p[0], fnnet.GRU(2).init(jax.random.PRNGKey(0), (5, 9))[1]), x)
    with pytest.raises(ValueError, match=r"LSTM\(4\): expected in_shape \(T, features\)"):
        lstm.init(jax.random.PRNGKey(0), (3,))
    with pytest.raises(ValueError, match=r"Bidirectional: expected an RNN, LSTM or GRU layer, got Dense\(3\)"):
        fnnet.Bidirectional(fnnet.Dense(3))
    bi = fnnet.Bidirectional(fnnet.GRU(4))
    _, bi_params = bi.init(jax.random.PRNGKey(0), (5, 3))
    with pytest.raises(ValueError, match=r"Bidirectional\(GRU\(4\)\): initial must be the pair "
                                         r"\(forward's, reverse's\)"):
        bi.apply(bi_params, Sequences(x, None, jnp.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"RNN: activation must be 'tanh' or 'relu'"):
        fnnet.RNN(4, "sigmoid")
    with pytest.raises(ValueError, match=r"LSTM\(4\): expected params"):
        lstm.apply({"w": params["w_ih"]}, x)


def test_mixed_dtypes_compute_in_the_wider_one_and_return_grads_in_the_params_dtype():
    for layer, param_dtype, x_dtype in ((fnnet.LSTM(4), jnp.bfloat16, jnp.float32),
                                        (fnnet.Bidirectional(fnnet.GRU(4)), jnp.float32, jnp.bfloat16)):
        _, params = layer.init(jax.random.PRNGKey(0), (5, 3))
        params = jax.tree.map(lambda a: np.asarray(a).astype(param_dtype), params)   # cast on the host
        x = np.asarray(draws.normal(jax.random.PRNGKey(1), (2, 5, 3))).astype(x_dtype)

        @jax.jit  # forward and backward as one program
        def forward_backward(params, x):
            y, residuals = layer.forward(params, x)
            return y, layer.backward(params, residuals, jnp.ones_like(y))

        y, (dparams, dx) = forward_backward(params, x)
        assert y.dtype == jnp.float32 and np.isfinite(np.asarray(y)).all()
        assert all(g.dtype == param_dtype for g in jax.tree.leaves(dparams)) and dx.dtype == x_dtype


# -- 6. da·W_hhᵀ in the reverse loop: one product or one per gate, whichever runs faster here ----------

@pytest.mark.parametrize("form", ["whole", "per_gate"])
def test_both_forms_of_the_reverse_loops_product_give_the_hand_backward_autodiffs_gradients(x64, monkeypatch, form):
    """With FNNET_RECURRENT_PRODUCT forcing each form, the LSTM's and GRU's hand-written backward (padded
    sequences from an initial carry, both output modes) and the gradient seen through time equal
    autodiff's, in float64."""
    monkeypatch.setenv("FNNET_RECURRENT_PRODUCT", form)
    layers = [make(**k) for make in (KINDS["LSTM"], KINDS["GRU"]) for k in ({}, {"return_sequences": False})]
    params = [_params64(layer) for layer in layers]
    inputs = [_inputs(layer.spec.kind, (5,)) for layer in layers]

    @jax.jit   # traced here, under this test's form
    def both(params):
        out = []
        for layer, p, x in zip(layers, params, inputs):
            y, residuals = layer.forward(p, x)
            dy = _cotangent(jax.random.PRNGKey(3), y)
            out.append((layer.backward(p, residuals, dy), jax.vjp(layer.apply, p, x)[1](dy)))
        return out

    for (dparams, dx), (dparams_ref, dx_ref) in jax.device_get(both(params)):
        chex.assert_trees_all_close(dparams, dparams_ref, **TOL)
        chex.assert_trees_all_close(_floats(dx), _floats(dx_ref), **TOL)


def test_the_product_form_is_chosen_by_measurement_once_per_shape_or_by_the_environment(monkeypatch):
    """Small products take the single product without timing; larger ones on the CPU are timed once per
    shape (also while a jit traces the backward) and remembered; FNNET_RECURRENT_PRODUCT decides
    instead, and a wrong value is an error naming it."""
    from fnnet.layers import _recurrent_products as products

    monkeypatch.delenv("FNNET_RECURRENT_PRODUCT", raising=False)
    measured = []
    timed = products._measured
    monkeypatch.setattr(products, "_measured", lambda *shape: measured.append(shape) or timed(*shape))
    assert products.per_gate_is_faster(50, 32, 4, "float32") is False and measured == []   # 50·4·32² < SMALLEST
    assert products.per_gate_is_faster(64, 64, 1, "float32") is False and measured == []   # an RNN: one gate

    @jax.jit
    def traced(w_hh, da):
        return products.gate_product(w_hh, da.shape[0])(jnp.split(da, 4, axis=-1))

    w_hh = draws.normal(jax.random.PRNGKey(0), (64, 256)) / 8
    da = draws.normal(jax.random.PRNGKey(1), (64, 256))
    np.testing.assert_allclose(traced(w_hh, da), da @ w_hh.T, rtol=1e-5, atol=1e-5)
    assert measured == [(64, 64, 4, "float32")]
    assert isinstance(timed(64, 64, 4, "float32"), bool) and timed.cache_info().currsize >= 1

    for form, per_gate in (("whole", False), ("per_gate", True)):
        monkeypatch.setenv("FNNET_RECURRENT_PRODUCT", form)
        assert products.per_gate_is_faster(2, 3, 4, "float64") is per_gate
    monkeypatch.setenv("FNNET_RECURRENT_PRODUCT", "fast")
    with pytest.raises(ValueError, match="FNNET_RECURRENT_PRODUCT must be auto, whole or per_gate, got 'fast'"):
        products.per_gate_is_faster(50, 128, 4, "float32")


# -- 7. the LSTM's two forwards: apply runs the cell alone, forward also writes the backward's factors ---

def _scan_carries(fn, *args):
    """The shapes each ``lax.scan`` in ``fn``'s jaxpr carries from step to step."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                consts, carries = eqn.params["num_consts"], eqn.params["num_carry"]
                found.append([v.aval.shape for v in eqn.invars[consts:consts + carries]])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_lstm_apply_runs_the_cell_alone_and_forward_writes_the_gate_factors_where_a_x_was(x64):
    """``apply`` (what autodiff differentiates) carries only ``(h, c)``; ``forward``'s loop also carries
    the ``(T, N, 4H)`` buffer that holds ``a_x`` and, step by step, the gates' factors in its place (no
    buffer of their own for XLA to zero-fill); both give the same outputs, and the factors are the
    derivatives the LSTM's docstring names, computed here from the gates directly."""
    layer = fnnet.LSTM(H)
    params = _params64(layer)
    x = _inputs("LSTM", (3,))
    assert _scan_carries(layer.apply, params, x) == [[(3, H), (3, H)]]
    assert _scan_carries(layer.forward, params, x)[0] == [(3, H), (3, H), (T, 3, 4 * H)]

    y, residuals = jax.jit(layer.forward)(params, x)
    chex.assert_trees_all_close(y.x, jax.jit(layer.apply)(params, x).x, **TOL)

    plain = Sequences(x.x, None, x.initial)     # every step valid: the factors of every step are defined
    cell = jax.jit(layer.forward)(params, plain)[1].cell
    (h, c), b = x.initial, params["b_ih"] + params["b_hh"]
    for t in range(T):      # the LSTM's equations, step by step
        a = x.x[:, t] @ params["w_ih"] + h @ params["w_hh"] + b[None, :]
        i, f, o = (jax.nn.sigmoid(a[:, k * H:(k + 1) * H]) for k in (0, 1, 3))
        g = jnp.tanh(a[:, 2 * H:3 * H])
        c_prev, c = c, f * c + i * g
        h = o * jnp.tanh(c)
        want = (g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), jnp.tanh(c) * o * (1 - o))
        chex.assert_trees_all_close(cell.gate_factors[t], jnp.concatenate(want, axis=-1), **TOL)
        chex.assert_trees_all_close((cell.dc_per_dh[t], cell.f[t]), (o * (1 - jnp.tanh(c) ** 2), f), **TOL)
