"""Trust, round two: no silently wrong answer, one clear line instead of a traceback, nothing lost.

Each test names the item of the issue it pins; every one of them failed on the code before it.
The batch-axes items (GlobalAvgPool, FanInConcat, Reshape, every layer under vmap) are in
test_batch_axes.py.
"""

import json
import os
import pydoc

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import checkpoint, gpt, losses, train
from fnnet.app import cli


def _one_line_error(capsys, *messages):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for message in messages:
        assert message in err, err
    return err


# 1. generate checks its prompt -----------------------------------------------------------------

def test_generate_rejects_ids_outside_the_vocabulary_float_ids_and_an_empty_prompt():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=65, block_size=8, num_layers=1, num_heads=2, features=8))
    _, params = model.init(jax.random.PRNGKey(0), (8,))
    key = jax.random.PRNGKey(0)
    out = gpt.generate(model, params, jnp.array([1, 64]), 3, block_size=8, key=key)
    assert out.shape == (5,) and int(out.max()) < 65
    for prompt, message in (([1, 70], r"token id 70 at index \(1,\) is outside the vocabulary \[0, 65\)"),
                            ([1, -3], r"token id -3 at index \(1,\) is outside"),
                            ([1.0, 2.0], "expects integer token ids, got dtype float"),
                            ([], "non-empty")):
        with pytest.raises(ValueError, match=message):
            gpt.generate(model, params, jnp.array(prompt), 5, block_size=8, key=key)


# 4. a flag that does not apply is a usage error ------------------------------------------------------

def test_mlp_flags_with_a_cnn_are_a_usage_error(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "mnist", "--model", "cnn", "--hidden", "64", "--activation", "tanh",
                     "--out", str(out)]) == 2
    _one_line_error(capsys, "--hidden is for --model mlp")
    assert not out.exists()
    assert cli.main(["summary", "mnist", "--model", "cnn", "--activation", "tanh"]) == 2
    _one_line_error(capsys, "--activation is for --model mlp")


# 5. mixed dtypes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer,in_shape", [
    (fnnet.Conv(3, 3), (6, 6, 2)), (fnnet.Conv1D(2, 3), (7, 2)), (fnnet.MaxPool(2), (4, 4, 2)),
    (fnnet.AvgPool(2), (4, 4, 2)), (fnnet.LayerNorm(), (5,)), (fnnet.Dense(3), (4,)), (fnnet.Sigmoid, (4,)),
    (fnnet.CausalSelfAttention(2), (4, 4)), (fnnet.serial(fnnet.Conv(2, 3), fnnet.BatchNorm(), fnnet.GlobalAvgPool),
                                             (5, 5, 1)),
], ids=["conv", "conv1d", "maxpool", "avgpool", "layernorm", "dense", "sigmoid", "attention", "conv-bn"])
@pytest.mark.parametrize("param_dtype,x_dtype", [
    (jnp.bfloat16, jnp.float32), (jnp.float32, jnp.bfloat16), (jnp.float32, jnp.uint8)])
def test_every_layer_takes_mixed_dtypes_and_returns_grads_in_the_params_dtype(layer, in_shape, param_dtype, x_dtype):
    _, params, state = fnnet.init_with_state(layer, jax.random.PRNGKey(0), in_shape)
    params = jax.tree.map(lambda p: p.astype(param_dtype), params)
    x = (3 * jax.random.uniform(jax.random.PRNGKey(1), (4,) + in_shape)).astype(x_dtype)
    y, residuals, _ = fnnet.forward_with_state(layer, params, state, x, train=True)
    assert jnp.issubdtype(y.dtype, jnp.floating) or not jax.tree.leaves(params)  # max of ints may stay ints
    assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
    dparams, _ = layer.backward(params, residuals, jnp.ones_like(y))
    for g, p in zip(jax.tree.leaves(dparams), jax.tree.leaves(params)):
        assert g.dtype == p.dtype


def test_cnn_trains_with_bf16_params_on_float32_images_and_int_compute_dtype_is_refused():
    model = fnnet.serial(fnnet.Conv(4, 3), fnnet.Relu, fnnet.Flatten, fnnet.Dense(2))
    x = jax.random.uniform(jax.random.PRNGKey(0), (16, 6, 6, 1))
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


# 6. zero examples give zero predictions -----------------------------------------------------------

def test_zero_examples_give_zero_predictions_for_every_model():
    for model, in_shape in ((fnnet.serial(fnnet.Conv(2, 3), fnnet.BatchNorm(), fnnet.MaxPool(2), fnnet.Flatten,
                                          fnnet.Dense(3)), (6, 6, 1)),
                            (fnnet.serial(fnnet.Flatten, fnnet.Dense(3)), (4, 4))):
        _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), in_shape)
        out = train.predict(model, params, np.zeros((0,) + in_shape, np.float32), model_state=state)
        assert out.shape == (0, 3)


# 7, 8, 9, 10, 13: the CLI's training runs -----------------------------------------------------------

def test_divergence_in_the_cli_is_one_line_with_its_own_exit_code(capsys, tmp_path):
    code = cli.main(["train", "regression", "--lr", "1e8", "--epochs", "3", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 3 and cli.EXIT_CODES[3].startswith("training diverged")
    _one_line_error(capsys, "training diverged", "at epoch 1, step", "Try a smaller --lr")


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_which(capsys, tmp_path, monkeypatch):
    out = tmp_path / "bc"
    real_replace, calls = os.replace, []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) > 2:
            raise OSError(27, "File too large")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    assert cli.main(["train", "xor", "--epochs", "5", "--checkpoint-every", "0", "--out", str(out), "--quiet"]) == 4
    _one_line_error(capsys, f"could not write {out / 'checkpoint.safetensors'}: File too large; "
                            f"the previous checkpoint (epoch 2) is kept")
    assert checkpoint.read_metadata(out / "checkpoint.safetensors")["epoch"] == 2


def test_an_existing_run_is_never_silently_replaced(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "xor", "--epochs", "3", "--out", str(out), "--quiet"]) == 0
    (out / "loss.png").write_bytes(b"left by a GPT run")
    before = (out / "checkpoint.safetensors").read_bytes()
    assert cli.main(["train", "xor", "--epochs", "3", "--out", str(out), "--quiet"]) == 2
    _one_line_error(capsys, f"--out {out}: holds a run already", "--resume", "--overwrite")
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert cli.main(["train", "xor", "--epochs", "2", "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert not (out / "loss.png").exists()                       # what the old run wrote is cleared
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    x, y = fnnet.datasets.xor()
    model = fnnet.serial(fnnet.Dense(2), fnnet.Dense(1))
    with pytest.raises(train.RunExists, match="already holds a checkpoint.*resume=True.*overwrite=True"):
        train.fit(model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.1), (x, y), epochs=1, batch_size=4,
                  key=jax.random.PRNGKey(0), checkpoint_dir=out, verbose=False)


def test_resume_names_each_changed_setting_and_keeps_config_and_metrics_in_step(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "xor", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert cli.main(["train", "xor", "--epochs", "3", "--lr", "0.5", "--hidden", "3", "--out", str(out),
                     "--quiet", "--resume"]) == 2
    _one_line_error(capsys, "hidden: [4] -> [3]", "lr: 1.0 -> 0.5")
    assert cli.main(["train", "xor", "--epochs", "1", "--out", str(out), "--quiet", "--resume"]) == 2
    _one_line_error(capsys, "has trained 2 epochs already")
    assert cli.main(["train", "xor", "--epochs", "3", "--out", str(out), "--resume"]) == 0
    assert "(3 epochs, 1 in this session" in capsys.readouterr().out
    config, metrics = (json.loads((out / name).read_text()) for name in ("config.json", "metrics.json"))
    assert config["epochs"] == metrics["epochs"] == 3


def test_on_epoch_end_returning_true_stops_fit():
    x, y = fnnet.datasets.xor()
    model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(1))
    seen = []
    state, history = train.fit(model, losses.sigmoid_binary_cross_entropy, optax.sgd(0.5), (x, y), epochs=10,
                               batch_size=4, key=jax.random.PRNGKey(0), verbose=False,
                               on_epoch_end=lambda epoch, state, history: seen.append(epoch) or epoch == 3)
    assert seen == [1, 2, 3] and len(history) == 3 and int(state.step) == 3


def test_ctrl_c_says_which_checkpoint_is_kept(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.History, "plot", interrupt)  # after the last epoch's checkpoint
    assert cli.main(["train", "xor", "--epochs", "2", "--out", str(out), "--quiet"]) == 130
    _one_line_error(capsys, f"interrupted; the checkpoint of epoch 2 in {out} is kept", "--resume")


# 11. a stateful model without its state ---------------------------------------------------------------

def test_stateful_models_say_what_state_to_pass_and_value_and_grad_takes_it():
    model = fnnet.serial(fnnet.Dense(4), fnnet.BatchNorm(), fnnet.Relu, fnnet.Dropout(0.5), fnnet.Dense(2))
    _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (3,))
    x, y = jax.random.normal(jax.random.PRNGKey(1), (8, 3)), jnp.arange(8) % 2
    with pytest.raises(ValueError, match="with_state=True"):
        fnnet.value_and_grad(model, losses.softmax_cross_entropy)
    with pytest.raises(ValueError, match=r"BatchNorm.*Dropout.*given no state: pass model_state="):
        train.evaluate(model, losses.softmax_cross_entropy, params, (x, y))
    key = jax.random.PRNGKey(2)
    manual = fnnet.value_and_grad(model, losses.softmax_cross_entropy, with_state=True)
    reference = fnnet.autodiff_value_and_grad(model, losses.softmax_cross_entropy, with_state=True)
    (value, new_state), grads = jax.jit(manual)(params, state, x, y, key=key)
    (ref_value, ref_state), ref_grads = reference(params, state, x, y, key=key)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, ref_grads)
    assert not np.allclose(new_state[1]["mean"], state[1]["mean"])      # training mode updated the statistics
    (_, eval_state), _ = manual(params, state, x, y, train=False)
    np.testing.assert_array_equal(eval_state[1]["mean"], state[1]["mean"])


# 12. messages that point the right way ------------------------------------------------------------------

def test_messages_point_the_right_way(tmp_path):
    x, y = fnnet.datasets.xor()
    model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(2))
    with pytest.raises(ValueError, match=r"integer class labels .* pass y.astype\(int\)"):
        train.fit(model, losses.softmax_cross_entropy, optax.sgd(0.1), (x, y[:, 0].astype(np.float32)), epochs=1,
                  batch_size=4, key=jax.random.PRNGKey(0), verbose=False)
    image_model = fnnet.serial(fnnet.Flatten, fnnet.Dense(2))
    images = np.random.RandomState(0).rand(8, 28, 28).astype(np.float32)
    train.fit(image_model, losses.softmax_cross_entropy, optax.sgd(0.1), (images, np.arange(8) % 2), epochs=1,
              batch_size=4, key=jax.random.PRNGKey(0), checkpoint_dir=tmp_path, verbose=False)
    run = fnnet.load_run(tmp_path, model=image_model)
    assert run.predict(jnp.asarray(images, jnp.bfloat16)).shape == (8, 2)
    with pytest.raises(ValueError, match=r"for one example use x\[None\] \(shape \(1, 28, 28\)\)"):
        run.predict(images[0])
    with pytest.raises(ValueError, match="expected an array of numbers"):
        run.predict(np.array([["a"] * 784]))


# 14. help() shows each layer's own doc ----------------------------------------------------------------------

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


# 15. BatchNorm: one image has many values per channel ------------------------------------------------------

def test_batchnorm_trains_on_one_image_but_not_on_one_value_per_channel():
    bn = fnnet.BatchNorm()
    _, params, state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (8, 8, 4))
    y, _ = fnnet.apply_with_state(bn, params, state, jnp.arange(256.0).reshape(1, 8, 8, 4), train=True)
    assert y.shape == (1, 8, 8, 4) and bool(jnp.all(jnp.isfinite(y)))
    _, params, state = fnnet.init_with_state(bn, jax.random.PRNGKey(0), (4,))
    with pytest.raises(ValueError, match="more than one value per channel"):
        fnnet.apply_with_state(bn, params, state, jnp.ones((1, 4)), train=True)
    assert "more than one value per channel" in fnnet.BatchNorm.__doc__


# 16. load_run on a fit() folder ---------------------------------------------------------------------------

def test_load_run_reads_any_fit_checkpoint_folder(tmp_path):
    x = jax.random.normal(jax.random.PRNGKey(0), (40, 5))
    y = (x[:, 0] > 0).astype(jnp.int32)
    model = fnnet.serial(fnnet.Dense(8), fnnet.BatchNorm(), fnnet.Relu, fnnet.Dense(2))
    state, history = train.fit(model, losses.softmax_cross_entropy, optax.adam(1e-2), (x, y), epochs=3,
                               batch_size=8, key=jax.random.PRNGKey(1), checkpoint_dir=tmp_path, verbose=False)
    with pytest.raises(fnnet.app.recipes.RecipeError, match=r"load_run\(path, model=model\)"):
        fnnet.load_run(tmp_path)
    run = fnnet.load_run(tmp_path, model=model)
    jax.tree.map(np.testing.assert_array_equal, run.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, run.model_state, state.model_state)
    assert run.in_shape == (5,) and run.loss is losses.softmax_cross_entropy
    assert run.metrics["history"]["train_loss"] == history.train_loss
    expected = train.evaluate(model, losses.softmax_cross_entropy, state.params, (x, y),
                              model_state=state.model_state)
    assert run.evaluate((x, y)) == expected
    np.testing.assert_array_equal(run.predict_labels(x), np.argmax(train.predict(
        model, state.params, x, model_state=state.model_state), -1))


# 17. every model the CLI trains can be summarised and gradient-checked ----------------------------------

def test_gradcheck_and_summary_take_the_flags_of_train(capsys, shared_data, repo_root):
    """`fnnet gradcheck mnist --model cnn` and `gradcheck shakespeare --layers 1` are README commands:
    test_cli.py runs each and requires every leaf to pass."""
    assert cli.main(["summary", "shakespeare", "--layers", "2", "--features", "32", "--heads", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("CausalSelfAttention") == 2
    assert cli.main(["summary", "mnist", "--model", "resnet"]) == 0
    assert "Residual" in capsys.readouterr().out
    from test_cli import _readme_gradcheck_commands
    commands = _readme_gradcheck_commands(repo_root)
    assert ["gradcheck", "mnist", "--model", "cnn"] in commands and ["gradcheck", "shakespeare", "--layers", "1"] in commands


# 18. the progress bar moves inside an epoch ----------------------------------------------------------------

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
    x = jax.random.normal(jax.random.PRNGKey(0), (200, 3))
    y = (x[:, 0] > 0).astype(jnp.int32)
    train.fit(fnnet.serial(fnnet.Dense(4), fnnet.Dense(2)), losses.softmax_cross_entropy, optax.sgd(0.1),
              (x, y), epochs=2, batch_size=4, key=jax.random.PRNGKey(1))
    jax.effects_barrier()
    (bar,) = bars
    assert bar.bar is not None and bar.inside_updates == 2 * 25    # 50 steps per epoch, reported every 2 (5%)
    assert bar.bar.n == 2
