"""Paths that never ran before and README claims that had no test: each runs once, small.

--model resnet, --grad autodiff, --optimizer momentum, --weight-decay, fnnet demo, fnnet gradcheck
--all; a language model stopping with TrainingDiverged; generate compiling once; the flaky spots
made deterministic (a read-only --out refused even as root)."""

import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import gpt, gradcheck, train
from fnnet.app import cli, recipes
from fnnet.train import language
from onnx_checks import assert_run_exports
from test_see_inside import trace_rows


def _mnist_subset(train_examples, test_examples):
    """MNIST's recipe with fewer examples: the CLI's own code paths, a short run."""
    spec = recipes.DATASETS["mnist"]

    def load(seed):
        (x, y), (x_test, y_test) = spec.load(seed)
        return (x[:train_examples], y[:train_examples]), (x_test[:test_examples], y_test[:test_examples])
    return dataclasses.replace(spec, load=load)


def test_resnet_trains_from_the_cli_on_a_subset(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    monkeypatch.setitem(recipes.DATASETS, "mnist", _mnist_subset(512, 500))
    out = tmp_path / "resnet"
    assert cli.main(["train", "mnist", "--model", "resnet", "--epochs", "1", "--batch-size", "64",
                     "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.25, metrics    # 512 images, 8 steps: 38% measured (chance: 10%)
    run = fnnet.load_run(out)
    assert any("Residual" in (layer.name or "") for layer in run.model.children)
    assert run.model_state[2]["mean"].shape == (32,)           # layer 2: BatchNorm's running mean
    assert_run_exports(out, tmp_path / "resnet.onnx", capsys)   # ONNX out (BatchNorm on its running statistics)
    # fnnet trace: BatchNorm in evaluation mode with its running statistics, its backward checked there
    rows, text = trace_rows(capsys, out, "--layer", "2")
    assert "Reshape" in rows[0] and any("BatchNorm" in row for row in rows) and "== layer 2: BatchNorm" in text


@pytest.mark.parametrize("flags,at_least", [
    (["--grad", "autodiff"], 0.94),
    (["--optimizer", "momentum", "--lr", "0.01"], 0.94),
    (["--weight-decay", "1e-3"], 0.94),
], ids=["grad-autodiff", "momentum", "weight-decay"])
def test_cli_options_train_breast_cancer(tmp_path, flags, at_least):
    out = tmp_path / "bc"
    assert cli.main(["train", "breast-cancer", "--epochs", "40", *flags, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["test_accuracy"] >= at_least, metrics
    assert config[flags[0][2:].replace("-", "_")] == ({"autodiff": "autodiff", "momentum": "momentum"}.get(
        flags[1]) or float(flags[1]))


def test_grad_autodiff_and_manual_train_to_the_same_parameters(tmp_path):
    for grad in ("manual", "autodiff"):
        assert cli.main(["train", "xor", "--epochs", "50", "--grad", grad, "--out", str(tmp_path / grad), "--quiet"]) == 0
    manual, autodiff = (fnnet.load_run(tmp_path / grad) for grad in ("manual", "autodiff"))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), manual.params, autodiff.params)


def test_fnnet_demo_runs(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    monkeypatch.setitem(recipes.DATASETS, "mnist", _mnist_subset(3000, 1000))  # `make demo`: all of it
    monkeypatch.setitem(recipes.DATASETS, "breast-cancer", dataclasses.replace(recipes.DATASETS["breast-cancer"],
                                                                               epochs=20))
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--mnist-epochs", "2", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "XOR test accuracy: 100%" in out and "mnist" in out
    mnist = json.loads((tmp_path / "demo" / "mnist" / "metrics.json").read_text())
    assert mnist["test_accuracy"] > 0.8, mnist       # 3,000 images, two epochs of the 784-512-512-10 MLP
    # again into the same folders (the demo replaces its own runs), this time without MNIST: breast cancer
    monkeypatch.setenv("FNNET_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("FNNET_CACHE", str(tmp_path / "no-cache"))
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "MNIST not found, training on breast cancer instead" in out
    assert json.loads((tmp_path / "demo" / "breast-cancer" / "metrics.json").read_text())["test_accuracy"] > 0.9


def test_gradcheck_all_checks_every_data_sets_model(shared_data, monkeypatch, capsys):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    cases = gradcheck.builtin_cases()
    monkeypatch.setattr(gradcheck, "builtin_cases", lambda: cases[:2])  # the whole table: test_catalogue.py
    assert cli.main(["gradcheck", "--all"]) == 0
    out = capsys.readouterr().out
    for name in recipes.DATASETS:
        assert f"\n{name}: serial + " in out, name
    assert not re.search(r"\bFAIL\b|: skipped \(", out), out[-2000:]   # every data set found, every leaf passes


def test_a_language_model_stops_with_training_diverged():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=7, block_size=4, num_layers=1, num_heads=1, features=4))
    tokens = jnp.arange(200) % 7
    with pytest.raises(train.TrainingDiverged, match=r"fit_language_model: loss became (nan|inf) at step \d+"):
        language.fit_language_model(model, optax.sgd(1e12), tokens, tokens, block_size=4, batch_size=4, steps=40,
                                    eval_interval=20, key=jax.random.PRNGKey(0), verbose=False)


def test_generate_compiles_once_per_model_and_sizes():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=6, block_size=5, num_layers=1, num_heads=2, features=8))
    _, params = model.init(jax.random.PRNGKey(0), (5,))
    gpt._sample_loop.clear_cache()
    for seed, temperature in ((0, 0.8), (1, 1.3), (2, 0.5)):
        gpt.generate(model, params, jnp.array([1, 2]), 6, block_size=5, key=jax.random.PRNGKey(seed),
                     temperature=temperature)
    assert gpt._sample_loop._cache_size() == 1      # a new key or temperature does not recompile


def test_an_unwritable_out_is_refused_even_as_root(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    assert cli.main(["train", "xor", "--out", str(locked / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{locked} is not writable" in err and err.count("\n") == 1
