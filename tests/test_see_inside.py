"""See inside: fnnet.trace against a tutorial's published numbers, explain checked against the trace,
NaNs located to the layer by fit, the per-layer monitor's warnings, and fnnet.doctor's checklist."""

import json
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, train
from fnnet.app import cli, recipes

XOR_X = np.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]])
XOR_Y = np.array([[0.], [1.], [1.], [0.]])


def _tutorial_trace():
    with jax.enable_x64(True):
        model, params, loss, x, y = recipes.tutorial_xor()
        return fnnet.trace(model, loss, params, x, y)


def test_trace_reproduces_the_tutorials_xor_tables():
    """The seed tutorial's 2-3-1 XOR network (W1, W2 as published, zero biases, ReLU then sigmoid)
    prints these Z1 rows, Z2 and Ŷ; fnnet.trace keeps the same numbers, and its tables print them."""
    trace = _tutorial_trace()
    assert [layer.name for layer in trace.layers] == ["Dense(3)", "Relu", "Dense(1)", "Sigmoid"]
    z1, z2, y_hat = trace.layers[0].y, trace.layers[2].y, trace.layers[3].y
    np.testing.assert_allclose(z1[1], [0.12694881, -0.21593684, 0.41265087], atol=1e-8)   # input [0, 1]
    np.testing.assert_allclose(z1[3], [0.26501425, 0.3927106, 0.70330959], atol=1e-8)     # input [1, 1]
    np.testing.assert_allclose(z2[:, 0], [0, 0.51875506, 1.03125078, 1.31072593], atol=2e-8)
    np.testing.assert_allclose(y_hat[:, 0], [0.5, 0.62685661, 0.73715831, 0.78763461], atol=1e-8)
    tables = trace.tables()
    for number in ("0.12694881", "-0.21593684", "0.26501425", "0.39271060", "1.31072593", "0.62685661",
                   "0.78763461"):
        assert number in tables
    # the tutorials' deltas: δ at the output is (ŷ − y) / N for a sigmoid and cross-entropy
    np.testing.assert_allclose(trace.layers[2].dy, (y_hat - XOR_Y) / 4, rtol=1e-12)
    np.testing.assert_allclose(trace.layers[2].dparams["w"], trace.layers[2].x.T @ trace.layers[2].dy, rtol=1e-12)
    assert "dW = xᵀ·δ" in tables and "δ = ∂L/∂z" in tables and trace.passed


def test_trace_walks_into_combinators_and_matches_the_gradients(x64):
    model = fnnet.serial(fnnet.Dense(6), fnnet.Tanh, fnnet.Residual(fnnet.serial(fnnet.Dense(6), fnnet.Relu)),
                         fnnet.LayerNorm(), fnnet.Dense(3))
    x = draws.normal(jax.random.PRNGKey(0), (5, 4))
    y = jnp.array([0, 2, 1, 1, 0])
    _, params = model.init(jax.random.PRNGKey(1), (4,))
    loss = fnnet.losses.softmax_cross_entropy
    trace = fnnet.trace(model, loss, params, x, y)
    paths = [layer.path for layer in trace.layers]
    assert paths == ["0", "1", "2/0", "2/1/0/0", "2/1/0/1", "2/1/1", "2/2", "3", "4"]
    assert [layer.index for layer in trace.layers] == list(range(9))
    value, grads = jax.jit(fnnet.value_and_grad(model, loss))(params, x, y)
    assert trace.loss == pytest.approx(float(value), rel=1e-12)
    chex.assert_trees_all_close(trace.layer("2/1/0/0").dparams, grads[2][1][0][0], rtol=1e-12)
    chex.assert_trees_all_close(trace.layers[0].dparams, grads[0], rtol=1e-12)
    # along the chain, what a layer passes back is what reached the layer before it
    np.testing.assert_allclose(trace.layers[1].dx, trace.layers[0].dy, rtol=1e-12)
    np.testing.assert_allclose(trace.layers[-1].dy, trace.dpred, rtol=1e-12)
    assert trace.passed and all(layer.vjp_error < 1e-9 for layer in trace.layers)
    relu = trace.layer("2/1/0/1")
    assert relu.stats["zeros"] == pytest.approx(float(np.mean(relu.y == 0)))
    assert 0.0 <= relu.stats["dead"] <= 1.0 and "saturated" in trace.layers[1].stats
    record = json.loads(json.dumps(trace.to_dict(arrays=True)))
    assert record["layers"][3]["path"] == "2/1/0/0" and record["layers"][3]["vjp"] == "OK"
    text = str(trace)
    assert text.count("OK (") == 2 * 9 and "NOT OK" not in text and "LayerNorm" in text  # forward, vjp


def test_trace_says_not_ok_for_a_wrong_backward():
    def init(key, shape):
        return tuple(shape), ()
    wrong = fnnet.Layer(init, lambda p, z: jnp.tanh(z), lambda p, z: (jnp.tanh(z), z),
                        lambda p, z, dy: ((), dy * (1 - jnp.tanh(z)))),  # forgot the square
    model = fnnet.serial(fnnet.Dense(3), wrong[0], fnnet.Dense(1))
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    trace = fnnet.trace(model, fnnet.losses.mse, params, XOR_X, XOR_Y)
    assert [layer.passed for layer in trace.layers] == [True, False, True]
    assert trace.layers[1].vjp_error > 1e-3 and not trace.passed
    assert "NOT OK" in str(trace) and "layer 1" in str(trace).splitlines()[0]


def test_trace_of_a_model_with_state_in_train_mode():
    model = fnnet.serial(fnnet.Dense(8), fnnet.BatchNorm(), fnnet.Relu, fnnet.Dropout(0.5), fnnet.Dense(2))
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (3,))
    x = draws.normal(jax.random.PRNGKey(1), (6, 3))
    trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, jnp.arange(6) % 2, state=state,
                        key=jax.random.PRNGKey(2), train=True)
    assert trace.passed and trace.train
    dropped = trace.layers[3]
    assert dropped.stats["zeros"] > 0.2  # the dropout mask was applied


def _number_after(pattern, text):
    match = re.search(pattern + r".*= (-?[0-9.e+-]+)\s", text + " ")
    assert match, (pattern, text)
    return float(match.group(1))


def test_explain_tells_the_chain_rule_with_the_traced_numbers():
    trace = _tutorial_trace()
    text = fnnet.explain(trace, 0, 2, example=1)
    assert "relu'(z=0.4127) = 1" in text and "Σ_k δ[2][1,k]·W[2][2,k]" in text
    delta = trace.layers[0].dy[1, 2]
    assert _number_after(r"δ\[0\]\[1,2\] = relu'", text) == pytest.approx(delta, rel=1e-5)
    for i in range(2):
        assert _number_after(rf"dW\[0\]\[{i},2\] = Σ_n", text) == pytest.approx(trace.layers[0].dparams["w"][i, 2],
                                                                                rel=1e-5)
    assert _number_after(r"db\[0\]\[2\] = Σ_n", text) == pytest.approx(trace.layers[0].dparams["b"][2], rel=1e-5)
    # the output layer: the loss's grad times the sigmoid's derivative
    out = fnnet.explain(trace, 2, 0, example=3)
    assert "σ'(z=1.311)" in out and "binary_cross_entropy" in out
    assert _number_after(r"δ\[2\]\[3,0\] = σ'", out) == pytest.approx(trace.layers[2].dy[3, 0], rel=1e-5)
    with pytest.raises(ValueError, match="unit 3 is out of range for layer 0"):
        fnnet.explain(trace, 0, 3)


def test_explain_says_when_units_mix():
    model = fnnet.serial(fnnet.Dense(4), fnnet.LayerNorm(), fnnet.Dense(2))
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    trace = fnnet.trace(model, fnnet.losses.mse, params, XOR_X, np.tile(XOR_Y, 2))
    text = fnnet.explain(trace, 1, 0)
    assert "no per-unit chain rule here: each output of this layer depends on many" in text
    assert "LayerNorm" in text and "‖dy‖" in text


def _injected_inf():
    def init(key, shape):
        return tuple(shape), ()
    return fnnet.Layer(init, lambda p, x: x, lambda p, x: (x, None), lambda p, r, dy: ((), dy * jnp.inf),
                       name="InfBackward")


def test_fit_names_the_layer_whose_backward_returned_inf():
    model = fnnet.serial(fnnet.Dense(8), fnnet.Relu, _injected_inf(), fnnet.Dense(3))
    x = draws.normal(jax.random.PRNGKey(0), (64, 4))
    with pytest.raises(train.TrainingDiverged) as caught:
        train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(0.1), (x, jnp.arange(64) % 3), epochs=2,
                  batch_size=16, key=jax.random.PRNGKey(0), verbose=False)
    error = caught.value
    assert (error.step, error.layer_index, error.layer_name, error.where) == (1, 2, "InfBackward", "backward")
    assert "layer 2 (InfBackward) backward: dx has" in str(error) and "gradcheck" in str(error)


def test_fit_locates_a_too_high_learning_rate():
    model = fnnet.serial(fnnet.Dense(32), fnnet.Relu, fnnet.Dense(3))
    x = draws.normal(jax.random.PRNGKey(0), (64, 4))
    with pytest.raises(train.TrainingDiverged) as caught:
        train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(1e8), (x, jnp.arange(64) % 3), epochs=5,
                  batch_size=16, key=jax.random.PRNGKey(0), verbose=False)
    error = caught.value
    assert error.step is not None and error.where in ("forward", "backward", "loss", "update")
    assert "the step before" in str(error) and "lower the learning rate" in str(error)


def test_fit_language_model_names_the_layer():
    model = fnnet.serial(fnnet.Embedding(7, 8), _injected_inf(), fnnet.Dense(7))
    tokens = np.arange(200) % 7
    with pytest.raises(train.TrainingDiverged) as caught:
        train.fit_language_model(model, optax.adam(1e-2), tokens, tokens, block_size=8, batch_size=4, steps=6,
                                 eval_interval=3, eval_batches=1, key=jax.random.PRNGKey(0), verbose=False)
    assert (caught.value.layer_name, caught.value.where, caught.value.step) == ("InfBackward", "backward", 1)


def test_debug_nans_on_demand():
    model = fnnet.serial(fnnet.Dense(3), fnnet.Relu, fnnet.Dense(1))
    _, params = model.init(jax.random.PRNGKey(0), (2,))
    assert fnnet.debug_nans(model, fnnet.losses.mse, params, XOR_X, XOR_Y) is None
    found = fnnet.debug_nans(model, fnnet.losses.mse, params, XOR_X * np.array([np.nan, 1.0]), XOR_Y)
    assert (found.where, found.layer_index) == ("forward", 0) and "nan" in found.message


def _fit(model, optimizer, monitor, epochs=3, n=128, batch_size=32):
    x = draws.normal(jax.random.PRNGKey(0), (n, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(jnp.int32)
    return train.fit(model, fnnet.losses.softmax_cross_entropy, optimizer, (x, y), epochs=epochs,
                     batch_size=batch_size, key=jax.random.PRNGKey(1), verbose=False, monitor=monitor)


def test_monitor_flags_a_dead_relu_layer_and_changes_nothing_else(tmp_path):
    dead = fnnet.serial(fnnet.Dense(16, b_init=lambda key, shape, dtype=jnp.float32: jnp.full(shape, -100.0, dtype)),
                        fnnet.Relu, fnnet.Dense(2))
    state, history = _fit(dead, optax.adam(1e-3), monitor=2)
    assert history.health_steps == [2, 4, 6, 8, 10, 12]
    assert history.layers["layer 1 (Relu)"]["dead"] == [1.0] * 6
    messages = [w["message"] for w in history.warnings]
    assert "layer 1 (Relu): 100% dead units since step 2" in messages
    healthy = fnnet.serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(2))
    watched, watched_history = _fit(healthy, optax.adam(1e-3), monitor=2)
    plain, plain_history = _fit(healthy, optax.adam(1e-3), monitor=None)
    assert watched_history.train_loss == plain_history.train_loss  # the monitor only reads
    # the same arithmetic in two differently fused programs: at most a last-bit rounding apart (one value
    # of 16 by 1 ulp under the suite's quick-compile flags; equal bit for bit under XLA's defaults)
    chex.assert_trees_all_close(watched.params, plain.params, rtol=1e-6, atol=0)
    assert watched_history.warnings == [] and set(watched_history.layers["layer 0 (Dense(16))"]) == \
        {"grad_norm", "param_norm", "update_ratio"}
    json.dumps(watched_history.to_dict())
    assert watched_history.plot_health(tmp_path / "health.png").stat().st_size > 10_000


def test_monitor_flags_a_too_high_learning_rate():
    model = fnnet.serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(2))
    _, history = _fit(model, optax.sgd(3.0), monitor=1, epochs=2)
    assert any("update/weight ratio" in w["message"] and "learning rate may be too high" in w["message"]
               for w in history.warnings)
    ratios = history.layers["layer 0 (Dense(16))"]["update_ratio"]
    assert len(ratios) == len(history.health_steps) == 8 and min(ratios) > 1e-2


def test_monitor_names_gradients_vanishing_across_depth():
    layers = []
    for _ in range(10):
        layers += [fnnet.Dense(16), fnnet.Sigmoid]   # σ' ≤ 1/4 per layer: 10 layers, ~1e-6
    _, history = _fit(fnnet.serial(*layers, fnnet.Dense(2)), optax.sgd(0.1), monitor=4, epochs=1)
    vanishing = [w["message"] for w in history.warnings if w["key"] == "depth|vanishing"]
    assert len(vanishing) == 1 and "at layer 0 (Dense(16)) but" in vanishing[0] and "layer 20 (Dense(2))" in vanishing[0]


def test_monitor_steps_count_within_each_epoch():
    """7 steps per epoch (the last one padded), monitor=3: steps 3 and 6 of each epoch are observed."""
    model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(2))
    _, history = _fit(model, optax.sgd(0.1), monitor=3, epochs=2, n=100, batch_size=16)
    assert history.health_steps == [3, 6, 10, 13]
    assert set(history.layers["layer 1 (Tanh)"]) == {"mean", "std", "saturated"}
    with pytest.raises(ValueError, match="needs grad='manual'"):
        train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(0.1), (np.ones((4, 6)), np.zeros(4, np.int32)),
                  epochs=1, batch_size=2, key=jax.random.PRNGKey(0), grad="autodiff", monitor=3, verbose=False)


def test_doctor_passes_a_healthy_model_and_names_what_is_wrong():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    loss = fnnet.losses.softmax_cross_entropy
    healthy = fnnet.serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(2))
    _, params = healthy.init(jax.random.PRNGKey(0), (5,))
    report = fnnet.doctor(healthy, loss, params, (x, y))
    assert report.passed and [c.passed for c in report.checks] == [True] * 5
    assert "log 2" in str(report) and "✓" in str(report)

    def init(key, shape):
        return tuple(shape), ()
    centre = fnnet.Layer(init, lambda p, v: v - jnp.mean(v, axis=0, keepdims=True),   # mixes a batch's examples
                         lambda p, v: (v - jnp.mean(v, axis=0, keepdims=True), None),
                         lambda p, r, dy: ((), dy - jnp.mean(dy, axis=0, keepdims=True)), name="BatchCentre")
    broken = fnnet.serial(fnnet.Dense(16), centre,
                          fnnet.Dense(16, b_init=lambda k, s, d=jnp.float32: jnp.full(s, -100.0, d)), fnnet.Relu,
                          fnnet.Dense(2, w_init=lambda k, s, d=jnp.float32: 300 * draws.normal(k, s, d)))
    _, params = broken.init(jax.random.PRNGKey(0), (5,))
    report = fnnet.doctor(broken, loss, params, (x, y), overfit_steps=20)
    by_name = {c.name: c for c in report.checks}
    assert not report.passed and by_name["gradcheck at these parameters"].passed  # its backward is right
    assert by_name["dead or saturated units at init"].passed is False
    assert "layer 3 (Relu): 100% dead units" in by_name["dead or saturated units at init"].detail
    assert by_name["overfit one batch"].passed is False
    assert by_name["examples independent"].passed is None  # every unit dead: no input gradient at all
    # the same batch-centring layer in a model that passes gradient: the mixing is found
    mixing = fnnet.serial(fnnet.Dense(8), centre, fnnet.Dense(2))
    _, params = mixing.init(jax.random.PRNGKey(0), (5,))
    independence = fnnet.doctor(mixing, loss, params, (x, y), overfit_steps=10).checks[2]
    assert independence.name == "examples independent" and independence.passed is False
    assert "mixes the examples" in independence.detail


# -- the command line: fnnet trace, --monitor, fnnet doctor ------------------------------------------------

def test_cli_trace_xor_prints_the_tutorials_tables(capsys):
    assert cli.main(["trace", "xor"]) == 0
    out = capsys.readouterr().out
    assert "every backward agrees with jax.vjp" in out
    for text in ("== layer 0 (Dense(3)) ==", "z = x·W + b (4, 3):", "0.41265087", "a = σ(z) (4, 1):", "0.73715831",
                 "dW = xᵀ·δ", "∂L/∂ŷ"):
        assert text in out
    assert cli.main(["trace", "xor", "--layer", "0", "--explain", "2"]) == 0
    assert "δ[0][0,2] = relu'(z=0) = 0" in capsys.readouterr().out


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    """A small MLP trained by the CLI with the monitor on (the CNN and GPT runs are traced in
    test_cnn.py and test_gpt.py, with the runs those modules train anyway)."""
    out = tmp_path_factory.mktemp("see-inside") / "mlp"
    assert cli.main(["train", "breast-cancer", "--epochs", "3", "--monitor", "5", "--out", str(out), "--quiet"]) == 0
    return out


def trace_rows(capsys, run_dir, *extra):
    """Runs ``fnnet trace RUN_DIR --examples 3 *extra``; returns (its one-row-per-layer lines, all output)."""
    assert cli.main(["trace", str(run_dir), "--examples", "3", *extra]) == 0
    out = capsys.readouterr().out
    assert "every backward agrees with jax.vjp" in out
    return [line for line in out.splitlines() if re.match(r"^\d+\s", line)], out


def test_cli_trace_of_a_trained_mlp(watched_run, capsys):
    rows, out = trace_rows(capsys, watched_run, "--layer", "1", "--explain", "0")
    assert len(rows) == 3 and "Dense(30)" in rows[0] and all(line.rstrip().endswith(")") for line in rows)
    assert "== layer 1 (Relu) ==" in out and "relu'" in out


def test_cli_monitor_writes_health(watched_run):
    metrics = json.loads((watched_run / "metrics.json").read_text())
    assert metrics["history"]["health_steps"][:2] == [5, 10]
    assert set(metrics["history"]["layers"]) == {"layer 0 (Dense(30))", "layer 1 (Relu)", "layer 2 (Dense(1))"}
    assert (watched_run / "health.png").stat().st_size > 10_000


def test_cli_doctor(watched_run, capsys):
    assert cli.main(["doctor", "breast-cancer"]) == 0
    out = capsys.readouterr().out
    assert "✓ loss at initialisation" in out and "✓ examples independent" in out and "every check passed" in out
    assert cli.main(["doctor", str(watched_run)]) == 0
    assert "the trained run (breast-cancer)" in capsys.readouterr().out
    assert cli.main(["doctor", str(watched_run), "--hidden", "8"]) == 2
    assert "model flags are for 'fnnet doctor DATASET'" in capsys.readouterr().err


def test_cli_output_into_a_closed_pipe_stops_quietly():
    """`fnnet trace xor | head -3`: the reader goes away; no BrokenPipeError traceback. The pipe is
    closed before fnnet writes (it is still importing), so every write meets it closed; a reader
    that leaves after fnnet has written everything into the pipe sees exit 0, not 141."""
    proc = subprocess.Popen([sys.executable, "-m", "fnnet", "trace", "xor"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
