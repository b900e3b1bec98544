"""Backprop through time, seen (issue 31, section 4): the gradient ``∂L/∂h_t`` that a trace reports for
every step of an RNN, LSTM or GRU, checked against ``jax.grad``; the vanishing-gradient picture (a
tanh RNN's gradient dies within a few steps, an LSTM's does not); its figure and its CLI flag; and the
monitor's warnings through time.

The reference here is independent of the hand-written backward scans and of
:func:`fnnet.through_time.reference`: the layer's own plain-JAX forward, run one step at a time (each
step started from the carry the step before ended with), a zero ``ε_t`` added to ``h_t`` after each
step, and ``jax.grad`` of the loss with respect to the ``ε_t``, in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, train
from fnnet.app import cli
from fnnet.app.inspection import through_time_text
from fnnet.through_time import TIME_VANISHING, through_time

CELLS = {"RNN": fnnet.RNN, "LSTM": fnnet.LSTM, "GRU": fnnet.GRU}
N, T, F, H, CLASSES = 3, 6, 2, 4, 3


def _stepwise_dh(layer, params, x, lengths, loss_of_outputs):
    """``∂L/∂h_t`` ``(N, T, H)`` by ``jax.grad``: ``layer.forward`` on one step at a time, its carry
    handed on (an LSTM's ``(h, c)``), ``h_t + ε_t`` the step's output and the next step's ``h``; past a
    sequence's end the carry stays and the output is zero, as the layer's rules say."""
    lstm = layer.spec.kind == "LSTM"

    def outputs(eps):
        zeros = jnp.zeros((N, H), x.dtype)
        carry, hs = ((zeros, zeros) if lstm else zeros), []
        for t in range(T):
            _, residuals = layer.forward(params, fnnet.Sequences(x[:, t:t + 1], initial=carry))
            new = residuals.carry
            new = (new[0] + eps[:, t], new[1]) if lstm else new + eps[:, t]
            valid = jnp.ones((N, 1), bool) if lengths is None else (t < lengths)[:, None]
            carry = jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, carry)
            hs.append(jnp.where(valid, new[0] if lstm else new, 0))
        return jnp.stack(hs, axis=1)                                        # (N, T, H)

    return jax.jit(jax.grad(lambda eps: loss_of_outputs(outputs(eps))))(jnp.zeros((N, T, H), x.dtype))


def _data(seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = draws.normal(keys[0], (N, T, F))
    y = jax.random.randint(keys[1], (N, T), 0, CLASSES)
    return x, y, keys[2]


@pytest.mark.parametrize("kind", CELLS)
def test_traced_gradient_through_time_equals_jax_grad_at_each_step(kind):
    """``LayerTrace.through_time`` (``‖∂L/∂h_t‖``, t = 1…T) and ``.time.dh`` of a traced model = jax.grad."""
    with jax.enable_x64(True):
        x, y, key = _data()
        model = fnnet.serial(CELLS[kind](H), fnnet.Dense(CLASSES))
        _, params = model.init(key, (T, F))
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        x = x.astype(jnp.float64)
        traced = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
        layer, head = model.children
        expected = _stepwise_dh(layer, params[0], x, None, lambda hs: fnnet.losses.softmax_cross_entropy.value(
            head.apply(params[1], hs), y))
    seen = traced.layers[0]
    assert traced.passed and seen.time.passed and seen.time.error < 1e-10
    np.testing.assert_allclose(seen.time.dh, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(seen.through_time, np.linalg.norm(np.asarray(expected), axis=(0, 2)), rtol=1e-10)
    assert seen.through_time.shape == (T,) and traced.layers[1].time is None   # Dense: nothing through time


@pytest.mark.parametrize("kind", CELLS)
def test_padded_batch_gradient_through_time_is_jax_grads_and_zero_past_each_end(kind):
    lengths = jnp.array([T, 2, 4])
    with jax.enable_x64(True):
        x, _, key = _data(1)
        layer = CELLS[kind](H)
        _, params = layer.init(key, (T, F))
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        x = x.astype(jnp.float64)
        dy = draws.normal(jax.random.PRNGKey(7), (N, T, H), jnp.float64)
        dy = jnp.where((jnp.arange(T)[None, :] < lengths[:, None])[:, :, None], dy, 0)
        seen = through_time(layer, params, fnnet.Sequences(x, lengths), dy)
        expected = _stepwise_dh(layer, params, x, lengths, lambda hs: jnp.sum(hs * dy))
    assert seen.passed
    np.testing.assert_allclose(seen.dh, expected, rtol=1e-10, atol=1e-14)
    for n, length in enumerate(np.asarray(lengths)):
        assert np.all(seen.dh[n, length:] == 0) and np.all(seen.dh_from_last[n, length:] == 0)
        assert np.all(np.linalg.norm(seen.dh[n, :length], axis=-1) > 0)
    # the last output's gradient alone starts at each sequence's own last step
    ends = seen.dh_from_last[np.arange(N), np.asarray(lengths) - 1]
    np.testing.assert_allclose(ends, dy[np.arange(N), lengths - 1], rtol=1e-12)


def test_print_trace_shows_the_first_last_ratio_and_the_plot_is_a_png(tmp_path):
    x, y, key = _data()
    model = fnnet.serial(fnnet.LSTM(H), fnnet.Dense(CLASSES))
    _, params = model.init(key, (T, F))
    traced = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
    ratio = traced.layers[0].time.ratio()
    norms = traced.layers[0].through_time
    assert ratio == pytest.approx(norms[0] / norms[-1])
    text = str(traced)
    assert f"first/last {ratio:.3g}" in text and "backward scan vs jax.grad through ε_t: OK" in text
    figure = traced.plot_through_time(tmp_path / "time.png")
    assert figure.read_bytes()[:4] == b"\x89PNG" and figure.stat().st_size > 10_000
    # what `fnnet trace RUN --through-time` prints before it draws: the norms from t = T back to 1
    printed = through_time_text(traced)
    assert printed.startswith(f"layer 0 (LSTM({H})): ‖∂L/∂h_t‖ over the {N} sequences, t = {T}…1 (first/last")
    assert f"t={T}: {norms[-1]:.2e}" in printed and f"t=1: {norms[0]:.2e}" in printed
    dense = fnnet.serial(fnnet.Dense(CLASSES))
    _, dense_params = dense.init(key, (F,))
    flat = fnnet.trace(dense, fnnet.losses.softmax_cross_entropy, dense_params, x[:, 0], y[:, 0])
    with pytest.raises(ValueError, match="no recurrent layer"):
        flat.plot_through_time(tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_trace_xor_through_time_is_a_usage_error(capsys, tmp_path):
    assert cli.main(["trace", "xor", "--through-time", str(tmp_path / "time.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--through-time: this model has no RNN, LSTM or GRU layer" in captured.err
    assert not (tmp_path / "time.png").exists()


def test_a_tanh_rnn_gradient_dies_within_a_few_steps_and_an_lstm_does_not():
    """The docs figure's task (docs/through_time_figure.py), smaller: the gradient of the last output
    alone (the label is the first step's sign), at initialisation, on the same sequences. The tanh
    RNN's falls by about 0.45 per step back; the LSTM, forget gates biased open, keeps about 0.8 per
    step through its cell path (at the first step back both drop: ‖∂L/∂h_{T-1}‖ comes through W_hh)."""
    steps, hidden, sequences = 20, 16, 16
    x = draws.normal(jax.random.PRNGKey(0), (sequences, steps, 1))
    y = (x[:, 0, 0] > 0).astype(jnp.int32)
    norms = {}
    for name, cell in (("rnn", fnnet.RNN), ("lstm", fnnet.LSTM)):
        model = fnnet.serial(cell(hidden, return_sequences=False), fnnet.Dense(2))
        _, params = model.init(jax.random.PRNGKey(1), (steps, 1))
        if name == "lstm":   # forget gates biased open (Keras's unit_forget_bias): the cell path carries
            params[0]["b_ih"] = params[0]["b_ih"].at[hidden:2 * hidden].add(1.0)
        traced = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
        assert traced.passed
        norms[name] = traced.layers[0].through_time / traced.layers[0].through_time[-1]  # 1 at t = T
    rnn, lstm = norms["rnn"], norms["lstm"]
    assert rnn[-6] < 0.05 and rnn[0] < 1e-5              # measured 2.2e-2 five steps back, 2.9e-7 at t = 1
    assert lstm[0] > 5e-4 and lstm[0] > 1e3 * rnn[0]      # measured 2.0e-3 at t = 1, 6,900x the RNN's

    def per_step(v):   # the average factor per step back, from t = T - 1 to t = 1
        return (v[0] / v[-2]) ** (1 / (len(v) - 2))
    assert per_step(rnn) < 0.55 and per_step(lstm) > 0.7  # measured 0.45 and 0.81

def _monitored(model, steps=10):
    x = draws.normal(jax.random.PRNGKey(0), (64, steps, 2))
    y = (x[:, 0, 0] > 0).astype(jnp.int32)
    _, history = train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(0.01), (x, y), epochs=1,
                           batch_size=16, key=jax.random.PRNGKey(1), verbose=False, monitor=1)
    return history


def test_monitor_warns_of_gradients_vanishing_through_time_and_not_for_a_healthy_lstm():
    small = fnnet.initializers.normal(0.01)   # W_hh ≈ 0: nothing carries from one step to the next
    history = _monitored(fnnet.serial(fnnet.RNN(8, return_sequences=False, recurrent_init=small), fnnet.Dense(2)))
    stats = history.layers["layer 0 (RNN(8, last step))"]
    assert len(stats["time_factor"]) == 4 and max(stats["time_factor"]) < TIME_VANISHING
    warned = [w["message"] for w in history.warnings if w["key"].endswith("|time_vanishing")]
    assert len(warned) == 1 and warned[0].startswith("layer 0 (RNN(8, last step)): gradients vanish through time")
    assert "since step 1; it cannot learn from more than a few steps back" in warned[0]   # ×0.03 per step
    healthy = _monitored(fnnet.serial(fnnet.LSTM(8, return_sequences=False), fnnet.Dense(2)))
    factors = healthy.layers["layer 0 (LSTM(8, last step))"]["time_factor"]
    assert min(factors) > TIME_VANISHING and healthy.warnings == []   # measured ×0.55 per step back
