"""Trained runs loaded back (fnnet.load_run) and the recipes they are rebuilt from."""

import dataclasses
import importlib.util
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import checkpoint, draws, losses, train
from fnnet.app import cli, recipes
from fnnet.app.runs import Run, load_run

# a tiny run of every data set the command line trains
_QUICK = {
    "xor": ["--epochs", "2"],
    "regression": ["--epochs", "1"],
    "breast-cancer": ["--epochs", "1"],
    "digits": ["--epochs", "1"],
    "mnist": ["--epochs", "1", "--limit", "512"],
    "fashion-mnist": ["--epochs", "1", "--limit", "512"],
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert cli.main(["train", "digits", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("name", list(recipes.DATASETS))
def test_load_run_for_every_data_set(tmp_path, monkeypatch, request, name):
    if name in ("mnist", "fashion-mnist"):
        monkeypatch.setenv("FNNET_DATA", str(request.getfixturevalue("shared_data")))
    out = tmp_path / name
    assert cli.main(["train", name, *_QUICK[name], "--out", str(out), "--quiet"]) == 0
    run = fnnet.load_run(out)
    spec = recipes.DATASETS[name]
    assert isinstance(run, Run) and run.in_shape == spec.in_shape
    assert run.config["dataset"] == name and run.metrics["dataset"] == name
    fresh = run.model.init(jax.random.PRNGKey(0), run.in_shape)[1]
    chex.assert_trees_all_equal_shapes_and_dtypes(run.params, fresh)  # the exact structure: tuples, ()
    x_test, y_test = spec.load(run.config["seed"])[1]
    x = x_test[:7]  # xor has 4
    raw = np.asarray(run.predict(x))
    assert raw.shape == (len(x), spec.out_dim)
    np.testing.assert_allclose(raw, jax.jit(run.model.apply)(run.params, x), rtol=1e-6, atol=1e-6)
    result = run.evaluate((x_test, y_test))  # run.evaluate() loads the same test split itself
    assert result["loss"] == pytest.approx(run.metrics["test_loss"], rel=1e-5)
    if run.task == "regression":
        with pytest.raises(ValueError, match="regression run"):
            run.predict_labels(x)
    else:
        labels = run.predict_labels(x)
        assert labels.dtype == np.int32 and labels.shape == (len(x),)
        proba = np.asarray(run.predict_proba(x))
        assert np.all((proba >= 0) & (proba <= 1))


def test_run_predictions_agree_with_the_model(digits_run):
    run = load_run(digits_run)
    assert run.task == "multiclass" and run.in_shape == (64,)
    assert run.config["in_shape"] == [64] and run.config["out_dim"] == 10   # written by fnnet train
    x, y = recipes.DATASETS["digits"].load(0)[1]
    logits = np.asarray(run.model.apply(run.params, x))
    np.testing.assert_allclose(run.predict(x), logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run.predict_proba(x), jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run.predict_labels(x), np.argmax(logits, axis=-1))
    np.testing.assert_array_equal(run.predict_labels(x.reshape(-1, 8, 8)), run.predict_labels(x))  # reshaped
    assert np.mean(run.predict_labels(x) == y) == pytest.approx(run.metrics["test_accuracy"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.params = None


def test_as_batch_names_expected_and_actual_shapes(digits_run):
    run = load_run(digits_run)
    with pytest.raises(ValueError, match=r"expected examples of shape \(N, 64\) \(64 values each\), got shape \(3, 63\)"):
        run.as_batch(np.zeros((3, 63)))
    with pytest.raises(ValueError, match=r"got shape \(64,\); for one example use x\[None\]"):
        run.as_batch(np.zeros(64))
    with pytest.raises(ValueError, match=r"values run from 0 to 16; digits expects 8x8 images scaled to \[0, 1\]"):
        run.as_batch(np.linspace(0, 16, 128).reshape(2, 64))  # the raw 0-16 scale
    with pytest.raises(ValueError, match="NaN or infinite values"):
        run.as_batch(np.full((2, 64), np.nan))
    assert run.as_batch(np.zeros((2, 8, 8), np.uint8)).dtype == np.float32


def test_old_config_without_shapes_still_loads(digits_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(digits_run, old)
    config = json.loads((old / "config.json").read_text())
    for key in ("in_shape", "out_dim"):
        del config[key]
    (old / "config.json").write_text(json.dumps(config))
    chex.assert_trees_all_equal(load_run(old).params, load_run(digits_run).params)


def test_missing_pieces_are_errors_naming_the_folder(digits_run, tmp_path):
    with pytest.raises(recipes.RecipeError, match=f"{tmp_path / 'nope'}: no such run folder"):
        load_run(tmp_path / "nope")
    with pytest.raises(recipes.RecipeError, match=f"{tmp_path}: no config.json here"):
        load_run(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(digits_run, broken)
    (broken / train.CHECKPOINT_NAME).unlink()
    with pytest.raises(checkpoint.CheckpointError, match=f"{broken}: no checkpoint.safetensors here"):
        load_run(broken)
    (broken / "config.json").write_text('{"dataset": "cifar", "hidden": [], "activation": "relu"}')
    with pytest.raises(recipes.RecipeError, match=r"config.json: unknown data set 'cifar'"):
        load_run(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(recipes.RecipeError, match="config.json: not a readable config"):
        load_run(broken)
    wider = tmp_path / "wider"
    shutil.copytree(digits_run, wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps(dict(config, hidden=[65])))
    with pytest.raises(checkpoint.CheckpointError, match=r"'params/0/b' is float32\[64\], expected float32\[65\]"):
        load_run(wider)
    assert issubclass(recipes.RecipeError, ValueError) and issubclass(checkpoint.CheckpointError, ValueError)


def test_recipes_are_shared_with_the_cli():
    for name in ("ACTIVATIONS", "OPTIMIZERS", "SCHEDULES"):  # the parser's choices are the recipes' own
        assert getattr(cli, name) is getattr(recipes, name), name
    assert cli.DATASETS == tuple(recipes.DATASETS)   # the parser's names (fnnet.app.choices), without loading JAX
    assert not issubclass(recipes.RecipeError, cli.UsageError)
    with pytest.raises(recipes.RecipeError, match="hidden must be comma-separated"):
        recipes.parse_hidden("4,a")
    with pytest.raises(recipes.RecipeError, match="activation must be one of"):
        recipes.build_model((4,), "swish", 1, (2,))
    with pytest.raises(recipes.RecipeError, match="lr must be positive"):
        recipes.build_optimizer("adam", -1.0)
    for name, spec in recipes.DATASETS.items():  # the declared input shape is the loader's
        if name not in ("mnist", "fashion-mnist"):
            assert spec.load(0)[0][0].shape[1:] == spec.in_shape, name


def test_image_classifier_example_builds_its_model_with_recipes(repo_root, monkeypatch):
    spec = importlib.util.spec_from_file_location("example_image_classifier",
                                                  repo_root / "examples" / "image_classifier.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    calls = []
    build = recipes.build_model
    monkeypatch.setattr(recipes, "build_model", lambda *args: calls.append(args) or build(*args))
    rng = np.random.default_rng(0)
    images = {split: (rng.random((32, 28, 28), dtype=np.float32), rng.integers(0, 10, 32).astype(np.int32))
              for split in ("train", "test")}
    metrics = example.run("fake", images.__getitem__, epochs=1, out="unused", verbose=False, figures=False)
    assert calls == [((512, 512), "relu", 10, (784,))]
    correct = metrics["test_accuracy"] * 32                   # a count of the 32 test images, not an average
    assert metrics["epochs"] == 1 and abs(correct - round(correct)) < 1e-9 and np.isfinite(metrics["test_loss"])
    assert fnnet.summary(example.build_model(), (784,)).total_params == 669_706  # 784-512-512-10


# load_run on a fit() folder ---------------------------------------------------------------------------

def test_load_run_reads_any_fit_checkpoint_folder(tmp_path):
    x = draws.normal(jax.random.PRNGKey(0), (40, 5))
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
