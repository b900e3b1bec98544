"""The training engine: manual == autodiff, masking, compile-once, determinism, NaN stop, resume."""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import checkpoint, draws, losses, train


def _blobs(n=300, d=6, classes=3, seed=0):
    kx, kw = jax.random.split(jax.random.PRNGKey(seed))
    x = draws.normal(kx, (n, d))
    y = jnp.argmax(x @ draws.normal(kw, (d, classes)), -1)
    return x, y


MLP = fnnet.serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(16), fnnet.Tanh, fnnet.Dense(3))


@pytest.mark.parametrize("optimizer", [optax.sgd(0.1, momentum=0.9), optax.adam(1e-2)],
                         ids=["momentum", "adam"])
def test_manual_and_autodiff_steps_agree_after_100_steps(optimizer):
    x, y = _blobs()
    state0 = train.init_state(MLP, optimizer, jax.random.PRNGKey(1), (6,))
    finals = {}
    for grad in ("manual", "autodiff"):
        step = train.make_train_step(MLP, losses.softmax_cross_entropy, optimizer, grad=grad)

        @jax.jit
        def run(state):
            def body(state, i):
                batch = jax.lax.dynamic_slice_in_dim(x, (i % 10) * 30, 30)
                labels = jax.lax.dynamic_slice_in_dim(y, (i % 10) * 30, 30)
                return step(state, batch, labels)
            return jax.lax.scan(body, state, jnp.arange(100))

        with jax.default_matmul_precision("highest"):
            finals[grad], metrics = run(state0)
        assert int(finals[grad].step) == 100
        assert float(metrics["loss"][-1]) < float(metrics["loss"][0])
    chex.assert_trees_all_close(finals["manual"].params, finals["autodiff"].params, rtol=1e-4, atol=1e-5)


@contextlib.contextmanager
def _compiles():
    """The ``(program, thread)`` of every compilation inside the block, from JAX's compile log."""
    compiles = []

    class Record(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling jit("):
                compiles.append((message.split(")")[0][len("Compiling jit("):], record.threadName))

    handler = Record()
    logging.getLogger("jax").addHandler(handler)
    jax.config.update("jax_log_compiles", True)  # globally: the flag's context manager holds for one thread
    try:
        yield compiles
    finally:
        jax.config.update("jax_log_compiles", False)
        logging.getLogger("jax").removeHandler(handler)


def test_fit_compiles_its_epoch_and_evaluation_once_while_the_model_initialises():
    """The epoch and evaluation programs compile on fit's background thread, for the shapes
    ``init_state`` is about to give; the first epoch then runs them without compiling again."""
    model = fnnet.serial(fnnet.Dense(7), fnnet.Tanh, fnnet.Dense(3))  # a model of its own: nothing cached
    x, y = _blobs(50)
    with _compiles() as compiles:
        _, history = train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=2,
                               batch_size=16, key=jax.random.PRNGKey(0), eval_data=(x[:20], y[:20]),
                               verbose=False)
    assert history.traces == 1 and len(history) == 2
    assert [c for c in compiles if c[0] in ("counted", "run")] == \
        [("counted", "fnnet-compile-ahead"), ("run", "fnnet-compile-ahead")], compiles
    # inside a thread-local setting, which a new thread would not see, fit compiles on its own thread
    with _compiles() as compiles, jax.default_matmul_precision("highest"):
        _, history = train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=1,
                               batch_size=16, key=jax.random.PRNGKey(0), verbose=False)
    assert history.traces == 1 and [c for c in compiles if c[0] == "counted"] == [("counted", "MainThread")]


def test_fit_checks_the_data_before_anything_compiles_and_names_eval_data():
    model = fnnet.serial(fnnet.Dense(5), fnnet.Relu, fnnet.Dense(3))
    x, y = _blobs(40)
    with _compiles() as compiles, pytest.raises(ValueError, match=r"fit: .*label"):
        train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y.at[3].set(7)), epochs=1, batch_size=8,
                  key=jax.random.PRNGKey(0), verbose=False)
    assert [c for c in compiles if c[0] in ("counted", "run")] == []  # refused before the epoch compiled
    with pytest.raises(ValueError, match=r"fit \(eval_data\): .*Dense\(5\).*\(10, 4\)"):  # the user's shape
        train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=1, batch_size=8,
                  key=jax.random.PRNGKey(0), eval_data=(x[:10, :4], y[:10]), verbose=False)
    with pytest.raises(ValueError, match="eval_batch_size must be a positive int, got 0"):
        train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=1, batch_size=8,
                  key=jax.random.PRNGKey(0), eval_data=(x, y), eval_batch_size=0, verbose=False)


def test_padded_batch_equals_batch_of_valid_examples():
    x, y = _blobs(40)
    optimizer = optax.sgd(0.1)
    state = train.init_state(MLP, optimizer, jax.random.PRNGKey(0), (6,))
    for grad in ("manual", "autodiff"):
        step = jax.jit(train.make_train_step(MLP, losses.softmax_cross_entropy, optimizer, grad=grad))
        valid, _ = step(state, x[:25], y[:25])
        padded_x = jnp.concatenate([x[:25], jnp.full((15, 6), 1e3)])   # junk in the padding
        padded_y = jnp.concatenate([y[:25], jnp.zeros(15, y.dtype)])
        weights = (jnp.arange(40) < 25).astype(jnp.float32)
        masked, metrics = step(state, padded_x, padded_y, weights)
        chex.assert_trees_all_close(masked.params, valid.params, rtol=1e-5, atol=1e-6)
        ref = jax.jit(lambda p: losses.softmax_cross_entropy.value(MLP.apply(p, x[:25]), y[:25]))(state.params)
        np.testing.assert_allclose(metrics["loss"], ref, rtol=1e-5)


def test_fit_covers_every_example_and_compiles_once():
    x, y = _blobs(1000)
    state, history = train.fit(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3,
                               batch_size=128, key=jax.random.PRNGKey(0), verbose=False)
    assert history.traces == 1                  # one compilation for three epochs, partial batch included
    assert int(state.step) == 3 * 8             # 7 full batches + 1 of 104 per epoch
    assert len(history) == 3 and history.train_loss[2] < history.train_loss[0]
    epoch = train.make_epoch(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), n=1000, batch_size=128)
    _, metrics = jax.jit(epoch)(state, x, y)
    assert float(metrics["count"].sum()) == 1000 and metrics["count"].tolist()[-1] == 104


def test_user_jitted_step_does_not_retrace():
    x, y = _blobs(64)
    optimizer = optax.adam(1e-3)
    step = jax.jit(chex.assert_max_traces(train.make_train_step(MLP, losses.softmax_cross_entropy,
                                                               optimizer), n=1))
    state = train.init_state(MLP, optimizer, jax.random.PRNGKey(0), (6,))
    for _ in range(5):
        state, _ = step(state, x, y)


def test_same_seed_gives_bitwise_identical_parameters():
    x, y = _blobs(500)
    runs = [train.fit(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=2,
                      batch_size=64, key=jax.random.PRNGKey(5), verbose=False)[0] for _ in range(2)]
    chex.assert_trees_all_equal(runs[0].params, runs[1].params)
    other = train.fit(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=2,
                      batch_size=64, key=jax.random.PRNGKey(6), verbose=False)[0]
    assert not np.array_equal(other.params[0]["w"], runs[0].params[0]["w"])


def test_fit_learns_with_eval_history_and_plot(tmp_path):
    x, y = _blobs(600)
    state, history = train.fit(MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x[:500], y[:500]),
                               epochs=8, batch_size=50, key=jax.random.PRNGKey(0),
                               eval_data=(x[500:], y[500:]), verbose=False)
    assert history.eval_accuracy[-1] > 0.85 and history.train_accuracy[-1] > 0.85
    result = train.evaluate(MLP, losses.softmax_cross_entropy, state.params, (x[500:], y[500:]), batch_size=7)
    np.testing.assert_allclose(result["accuracy"], history.eval_accuracy[-1], rtol=1e-6)
    full = jax.jit(lambda p: losses.softmax_cross_entropy.value(MLP.apply(p, x[500:]), y[500:]))(state.params)
    np.testing.assert_allclose(result["loss"], full, rtol=1e-5)
    probs = train.predict_proba(MLP, state.params, x[500:], losses.softmax_cross_entropy, batch_size=33)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert float(jnp.mean(jnp.argmax(probs, -1) == y[500:])) == pytest.approx(result["accuracy"])
    png = history.plot(tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert train.History.from_dict(history.to_dict()) == history


def test_binary_accuracy_thresholds():
    logits = jnp.array([[2.0], [-1.0], [0.5]])
    y = jnp.array([[1.0], [1.0], [0.0]])
    model = fnnet.Identity
    acc = train.evaluate(model, losses.sigmoid_binary_cross_entropy, (), (logits, y))["accuracy"]
    assert acc == pytest.approx(1 / 3)       # logits thresholded at 0
    probs = jnp.array([[0.9], [0.4], [0.6]])
    acc = train.evaluate(model, losses.binary_cross_entropy, (), (probs, y))["accuracy"]
    assert acc == pytest.approx(1 / 3)       # probabilities at 0.5
    assert train.evaluate(model, losses.mse, (), (probs, y))["accuracy"] is None
    assert train.evaluate(model, losses.mse, (), (probs, y), task="binary")["accuracy"] == pytest.approx(1 / 3)


def test_weight_decay_through_optax_mask():
    _, params = MLP.init(jax.random.PRNGKey(0), (6,))
    mask = train.weight_decay_mask(params)
    assert mask[0] == {"w": True, "b": False} and mask[1] == ()
    optimizer = optax.chain(optax.add_decayed_weights(0.5, mask=mask), optax.sgd(1.0))
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zero, optimizer.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new[0]["w"], 0.5 * params[0]["w"], rtol=1e-6)   # w -= lr * λ w
    np.testing.assert_array_equal(new[0]["b"], params[0]["b"])


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    x = draws.normal(jax.random.PRNGKey(0), (64, 4))
    y = x @ jnp.ones((4, 1)) * 10
    model = fnnet.serial(fnnet.Dense(1))
    with pytest.raises(train.TrainingDiverged, match=r"at epoch (\d+), step (\d+).*last good checkpoint") as info:
        train.fit(model, losses.mse, optax.sgd(3.0), (x, y), epochs=50, batch_size=16,
                  key=jax.random.PRNGKey(0), checkpoint_dir=tmp_path, verbose=False)
    import re
    epoch, step = map(int, re.search(r"epoch (\d+), step (\d+)", str(info.value)).groups())
    assert epoch > 1 and (epoch - 1) * 4 < step <= epoch * 4
    path = tmp_path / train.CHECKPOINT_NAME
    assert checkpoint.read_metadata(path)["epoch"] == epoch - 1
    saved = checkpoint.load(path)
    chex.assert_tree_all_finite(saved)


def test_bad_arguments_are_clear():
    x, y = _blobs(10)
    with pytest.raises(ValueError, match="grad must be 'manual'"):
        train.fit(MLP, losses.mse, optax.sgd(0.1), (x, y), epochs=1, batch_size=2, key=jax.random.PRNGKey(0), grad="x")
    with pytest.raises(ValueError, match=r"same number of examples.*\(10, 6\).*\(9,\)"):
        train.fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y[:9]), epochs=1, batch_size=2,
                  key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        train.fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=1, batch_size=0,
                  key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"layer 0 \(Dense\(16\)\), param 'w' expected shape \(6, 16\)"):
        train.fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=1, batch_size=2,
                  key=jax.random.PRNGKey(0), params=MLP.init(jax.random.PRNGKey(0), (5,))[1])


def test_one_plain_line_per_epoch_when_not_a_terminal(capfd):
    x, y = _blobs(50)
    train.fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=2, batch_size=10,
              key=jax.random.PRNGKey(0), verbose=True, eval_data=(x, y))
    captured = capfd.readouterr()
    lines = captured.out.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]], captured.out
    assert "eval_accuracy" in lines[0] and "\r" not in captured.out + captured.err  # no progress bar
    train.fit(MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=2, batch_size=10,
              key=jax.random.PRNGKey(0), verbose=False)
    assert capfd.readouterr().out == ""


def test_ensemble_equals_independent_fits():
    x = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = jnp.array([[0.0], [1.0], [1.0], [0.0]])
    model = fnnet.serial(fnnet.Dense(3), fnnet.Tanh, fnnet.Dense(1))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states, metrics = train.fit_ensemble(model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.5),
                                         (x, y), keys=keys, epochs=30)
    assert metrics["loss"].shape == (3, 30) and metrics["accuracy"].shape == (3,)
    for i in range(3):
        single, history = train.fit(model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.5), (x, y),
                                    epochs=30, batch_size=4, key=keys[i], verbose=False)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], states.params), single.params,
                                    rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["loss"][i], history.train_loss, rtol=1e-5)


RESUME_SCRIPT = textwrap.dedent("""
    import os, pathlib, sys, time
    import jax, jax.numpy as jnp, numpy as np, optax, fnnet
    from fnnet import train
    out_dir, result = sys.argv[1], sys.argv[2]
    stop_after = int(os.environ.get("STOP_AFTER", "0"))  # the victim: wait there to be killed

    def on_epoch_end(epoch, state, history):
        if epoch == stop_after:  # its checkpoint is written: say so, and wait for the kill
            pathlib.Path(out_dir, "ready").write_text(str(epoch))
            time.sleep(600)

    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (500, 8)); y = jnp.argmax(x @ jax.random.normal(kw, (8, 4)), -1)
    model = fnnet.serial(fnnet.Dense(32), fnnet.Relu, fnnet.Dense(4))
    optimizer = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-2))
    state, history = train.fit(model, fnnet.losses.softmax_cross_entropy, optimizer, (x, y),
                               epochs=12, batch_size=48, key=jax.random.PRNGKey(3), verbose=False,
                               checkpoint_dir=out_dir, resume=True, on_epoch_end=on_epoch_end)
    fnnet.save(result, state, metadata={"epochs": history.epoch})
""")


def test_killed_run_resumes_to_identical_parameters(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    clean = subprocess.run([sys.executable, str(script), str(tmp_path / "clean"), str(tmp_path / "clean.st")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    victim = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed"), str(tmp_path / "k.st")],
                              env=dict(env, STOP_AFTER="3"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt, ready = tmp_path / "killed" / train.CHECKPOINT_NAME, tmp_path / "killed" / "ready"
    deadline = time.time() + 240
    while not ready.exists():   # no race: the victim waits after epoch 3's checkpoint until killed
        assert time.time() < deadline and victim.poll() is None, victim.stderr.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert checkpoint.read_metadata(ckpt)["epoch"] == 3
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), str(tmp_path / "k.st")],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    reference = checkpoint.load(tmp_path / "clean.st")
    result = checkpoint.load(tmp_path / "k.st")
    chex.assert_trees_all_equal(result, reference)     # bitwise, optimizer state and key included
    assert checkpoint.read_metadata(tmp_path / "k.st")["epochs"] == list(range(1, 13))


def test_shuffle_is_a_fresh_permutation_every_epoch():
    from fnnet import shuffle

    key = jax.random.PRNGKey(3)
    permutation = jax.jit(shuffle.permutation, static_argnums=2)                     # as fit runs it: compiled
    orders = [np.asarray(permutation(key, epoch, 1000)) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(1000))
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    np.testing.assert_array_equal(orders[0], permutation(key, 0, 1000))                # deterministic
    assert not np.array_equal(orders[0], permutation(jax.random.PRNGKey(4), 0, 1000))
    # roughly uniform: where example 0 lands over many epochs
    many = jax.jit(jax.vmap(lambda epoch: shuffle.permutation(key, epoch, 8)))(jnp.arange(4000))
    first = np.argmax(np.asarray(many) == 0, axis=1)
    assert np.bincount(first, minlength=8).min() > 4000 / 8 * 0.8
    assert np.corrcoef(np.arange(1000), orders[0])[0, 1] < 0.1                       # no leftover order


# Nothing the user holds is destroyed, nothing wrong goes through silently (issue 9) ----------

SMALL_MLP = fnnet.serial(fnnet.Dense(8), fnnet.Relu, fnnet.Dense(3))


def _small_blobs(n=64, d=4, classes=3, seed=0):
    kx, kw = jax.random.split(jax.random.PRNGKey(seed))
    x = draws.normal(kx, (n, d))
    return x, jnp.argmax(x @ draws.normal(kw, (d, classes)), -1)


def _fit(*args, **kwargs):
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("batch_size", 16)
    kwargs.setdefault("key", jax.random.PRNGKey(0))
    kwargs.setdefault("verbose", False)
    return train.fit(*args, **kwargs)


def test_fit_never_consumes_the_callers_params():
    x, y = _small_blobs()
    _, p0 = SMALL_MLP.init(jax.random.PRNGKey(1), (4,))
    before = jax.tree.map(np.asarray, p0)
    finals = {grad: _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), params=p0,
                         grad=grad)[0] for grad in ("manual", "autodiff")}
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, p0), before)   # still alive, unchanged
    chex.assert_trees_all_close(finals["manual"].params, finals["autodiff"].params, rtol=1e-5, atol=1e-6)


def test_states_kept_in_on_epoch_end_stay_valid():
    x, y = _small_blobs()
    kept = []
    state, _ = _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3,
                    on_epoch_end=lambda epoch, state, history: kept.append(state))
    assert [int(s.step) for s in kept] == [4, 8, 12]
    for s in kept:  # earlier states were not donated by the later epochs
        assert np.isfinite(np.asarray(s.params[0]["w"])).all()
    chex.assert_trees_all_equal(kept[-1].params, state.params)


def test_labels_outside_the_classes_are_refused_before_training():
    x, y = _small_blobs()
    bad = y.at[5].set(3)
    for run in (lambda: _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, bad)),
                lambda: train.evaluate(SMALL_MLP, losses.softmax_cross_entropy,
                                       SMALL_MLP.init(jax.random.PRNGKey(0), (4,))[1], (x, bad)),
                lambda: _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), eval_data=(x, bad))):
        with pytest.raises(ValueError, match=r"labels in \[0, 3\).*has 3 at index 5"):
            run()
    with pytest.raises(ValueError, match=r"has -1 at index 0"):
        _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y.at[0].set(-1)))


def test_logits_given_to_the_probability_loss_are_refused():
    x, y = _small_blobs()
    bits = (y == 0).astype(jnp.float32)[:, None]
    logits_model = fnnet.serial(fnnet.Dense(8), fnnet.Relu, fnnet.Dense(1))
    with pytest.raises(ValueError, match="takes probabilities in \\[0, 1\\].*sigmoid_binary_cross_entropy"):
        _fit(logits_model, losses.binary_cross_entropy, optax.sgd(0.1), (x, bits))
    prob_model = fnnet.serial(logits_model, fnnet.Sigmoid)
    _fit(prob_model, losses.binary_cross_entropy, optax.sgd(0.1), (x, bits))       # fine
    with pytest.raises(ValueError, match=r"needs targets in \[0, 1\]"):
        _fit(prob_model, losses.binary_cross_entropy, optax.sgd(0.1), (x, 2 * bits - 1))
    with pytest.raises(ValueError, match=r"needs targets in \[0, 1\]"):
        _fit(logits_model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.1), (x, 2 * bits - 1))


def test_nan_or_inf_in_data_is_refused():
    x, y = _small_blobs()
    with pytest.raises(ValueError, match=r"fit \(eval_data\): x has 1 NaN or infinite value\(s\), the first "
                                         r"at index \(3, 1\)"):
        _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), eval_data=(x.at[3, 1].set(jnp.nan), y))
    with pytest.raises(ValueError, match="fit: x has 1 NaN"):
        _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.sgd(0.1), (np.asarray(x.at[0, 0].set(jnp.inf)), y))
    with pytest.raises(ValueError, match="evaluate: y has"):
        train.evaluate(fnnet.Dense(1), losses.mse, fnnet.Dense(1).init(jax.random.PRNGKey(0), (4,))[1],
                       (x, jnp.full((64, 1), jnp.nan)))


def test_params_made_with_the_batch_axis_are_explained():
    model = fnnet.serial(fnnet.Flatten, fnnet.Dense(3))
    x = draws.normal(jax.random.PRNGKey(0), (32, 2, 5))
    y = jnp.zeros(32, jnp.int32)
    _, wrong = model.init(jax.random.PRNGKey(0), x.shape)          # the batch axis included
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(3\)\), param 'w' expected shape \(10, 3\).*"
                                         r"batch axis in in_shape"):
        _fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), params=wrong)


def test_a_loss_says_what_its_output_means():
    x, y = _small_blobs()
    mine = fnnet.Loss(losses.softmax_cross_entropy.value, losses.softmax_cross_entropy.grad,
                      kind="multiclass_logits", name="my_ce")
    state, history = _fit(SMALL_MLP, mine, optax.adam(1e-2), (x, y), eval_data=(x, y))
    assert 0 < history.train_accuracy[-1] <= 1                 # the kind makes fit count accuracy
    assert history.eval_accuracy[-1] == train.evaluate(SMALL_MLP, mine, state.params, (x, y))["accuracy"]
    _, params = SMALL_MLP.init(jax.random.PRNGKey(0), (4,))
    np.testing.assert_allclose(np.sum(train.predict_proba(SMALL_MLP, params, x, mine), -1), 1, rtol=1e-5)
    plain = fnnet.Loss(losses.mse.value, losses.mse.grad)       # no kind: regression, said so
    assert plain.kind == "regression" and train.resolve_task(plain, None) is None
    with pytest.raises(ValueError, match="kind must be one of"):
        train.resolve_task(fnnet.Loss(losses.mse.value, losses.mse.grad, kind="multiclass"), None)


def test_predicting_again_compiles_nothing(caplog):
    """predict and predict_proba keep one compiled program per model (a loop of predictions, a CLI
    command's several calls), not a new one at every call."""
    x, _ = _small_blobs()
    _, params = SMALL_MLP.init(jax.random.PRNGKey(0), (4,))
    first = train.predict_proba(SMALL_MLP, params, x, losses.softmax_cross_entropy, batch_size=40)
    caplog.clear()
    with jax.log_compiles():
        again = train.predict_proba(SMALL_MLP, params, np.asarray(x), losses.softmax_cross_entropy, batch_size=40)
    assert "Compiling" not in caplog.text, caplog.text
    np.testing.assert_array_equal(again, first)


def test_gradients_have_their_parameters_dtype():
    x, y = _small_blobs()
    _, params = SMALL_MLP.init(jax.random.PRNGKey(0), (4,))
    bf16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    for grad_fn in (fnnet.value_and_grad, fnnet.autodiff_value_and_grad):
        _, grads = jax.jit(grad_fn(SMALL_MLP, losses.softmax_cross_entropy))(bf16, x, y)   # float32 data
        chex.assert_trees_all_equal_shapes_and_dtypes(grads, bf16)
    state, history = _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), params=bf16)
    chex.assert_trees_all_equal_shapes_and_dtypes(state.params, bf16)
    assert np.isfinite(history.train_loss).all()


def test_mixed_precision_keeps_float32_master_params():
    x, y = _small_blobs(256)
    runs = {dtype: _fit(SMALL_MLP, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=5,
                        compute_dtype=dtype) for dtype in (None, jnp.bfloat16)}
    state, history = runs[jnp.bfloat16]
    chex.assert_trees_all_equal_shapes_and_dtypes(state.params, runs[None][0].params)  # float32
    assert history.train_loss[-1] < 0.6 * history.train_loss[0]
    assert abs(history.train_loss[-1] - runs[None][1].train_loss[-1]) < 0.05


def test_cnn_trains_with_bf16_params_on_float32_images_and_int_compute_dtype_is_refused():
    model = fnnet.serial(fnnet.Conv(4, 3), fnnet.Relu, fnnet.Flatten, fnnet.Dense(2))
    x = draws.uniform(jax.random.PRNGKey(0), (16, 6, 6, 1))
    y = (x.mean((1, 2, 3)) > 0.5).astype(jnp.int32)
    _, params = model.init(jax.random.PRNGKey(1), (6, 6, 1))
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    state, _ = train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=1, batch_size=8,
                         key=jax.random.PRNGKey(2), params=params, verbose=False)
    assert jax.tree.leaves(state.params)[0].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="compute_dtype must be a floating dtype .* got int32"):
        train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=1, batch_size=8,
                  key=jax.random.PRNGKey(2), compute_dtype=jnp.int32, verbose=False)
    with pytest.raises(ValueError, match="compute_dtype"):
        train.make_train_step(model, losses.softmax_cross_entropy, optax.adam(1e-2), compute_dtype=jnp.int32)


# zero examples give zero predictions -----------------------------------------------------------

def test_zero_examples_give_zero_predictions_for_every_model():
    for model, in_shape in ((fnnet.serial(fnnet.Conv(2, 3), fnnet.BatchNorm(), fnnet.MaxPool(2), fnnet.Flatten,
                                          fnnet.Dense(3)), (6, 6, 1)),
                            (fnnet.serial(fnnet.Flatten, fnnet.Dense(3)), (4, 4))):
        _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), in_shape)
        out = train.predict(model, params, np.zeros((0,) + in_shape, np.float32), model_state=state)
        assert out.shape == (0, 3)


# fit stops early ------------------------------------------------------------

def test_on_epoch_end_returning_true_stops_fit():
    x, y = fnnet.datasets.xor()
    model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(1))
    seen = []
    state, history = train.fit(model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.5), (x, y), epochs=10,
                               batch_size=4, key=jax.random.PRNGKey(0), verbose=False,
                               on_epoch_end=lambda epoch, state, history: seen.append(epoch) or epoch == 3)
    assert seen == [1, 2, 3] and len(history) == 3 and int(state.step) == 3


# the progress bar moves inside an epoch ----------------------------------------------------------------

def test_the_terminal_bar_moves_inside_each_epoch(monkeypatch):
    from fnnet.train import fitting

    bars = []
    original = fitting._Progress.__init__

    def on_a_terminal(self, done, epochs, verbose, steps_per_epoch=1):
        monkeypatch.setattr(fitting.sys.stderr, "isatty", lambda: True, raising=False)
        monkeypatch.setattr(fitting.sys.stdout, "isatty", lambda: True, raising=False)
        original(self, done, epochs, verbose, steps_per_epoch)
        bars.append(self)

    monkeypatch.setattr(fitting._Progress, "__init__", on_a_terminal)
    x = draws.normal(jax.random.PRNGKey(0), (200, 3))
    y = (x[:, 0] > 0).astype(jnp.int32)
    train.fit(fnnet.serial(fnnet.Dense(4), fnnet.Dense(2)), losses.softmax_cross_entropy, optax.sgd(0.1),
              (x, y), epochs=2, batch_size=4, key=jax.random.PRNGKey(1))
    jax.effects_barrier()
    (bar,) = bars
    assert bar.bar is not None and bar.inside_updates == 2 * 25    # 50 steps per epoch, reported every 2 (5%)
    assert bar.bar.n == 2
