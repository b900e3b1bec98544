"""The examples really learn (cheap versions here; full runs are marked slow)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def _example(repo_root, name):
    sys.path.insert(0, str(repo_root / "examples"))
    try:
        spec = importlib.util.spec_from_file_location(f"example_{name}", repo_root / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(repo_root / "examples"))


def run_optimised(repo_root, shared_data, module, dataset, **kwargs) -> dict:
    """``examples/MODULE.run(DATASET, datasets.<loader>, **kwargs)`` in a fresh interpreter with XLA's
    default optimisation (the test suite's quick-compile flags would slow a full run several-fold), as
    a user runs it; returns its metrics."""
    loader = dataset.replace("-", "_")
    code = (f"import json, sys; sys.path.insert(0, {str(repo_root / 'examples')!r}); import {module}; "
            f"from fnnet import datasets; metrics = {module}.run({dataset!r}, datasets.{loader}, "
            + ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            + "); print('METRICS ' + json.dumps(metrics))")
    env = dict(os.environ, FNNET_DATA=str(shared_data))
    env.pop("XLA_FLAGS", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("METRICS "))
    return json.loads(line.removeprefix("METRICS "))


def test_single_layer_regression_learns_identity(repo_root):
    result = _example(repo_root, "single_layer_regression").main(verbose=False)
    assert result["initial_mse"] > 0.1 and result["final_mse"] < 1e-8 and result["test_mse"] < 1e-8
    np.testing.assert_allclose(result["w"], np.eye(4), atol=1e-3)


def test_breast_cancer_reaches_95_percent(repo_root):
    result = _example(repo_root, "breast_cancer").main(verbose=False)
    assert result["test_accuracy"] >= 0.95
    assert result["gradcheck_worst_rel_error"] < 1e-10 and result["float32_max_diff"] < 1e-5


def test_ensemble_xor_fractions(repo_root, tmp_path):
    module = _example(repo_root, "ensemble_xor")
    results = module.run(nets=200, steps=3000, verbose=False)
    assert len(results) == 6
    fractions = {key: value[0] for key, value in results.items()}
    assert all(0.0 <= f <= 1.0 for f in fractions.values())
    assert max(fractions.values()) > 0.5          # some settings learn XOR most of the time
    # a tiny uniform init leaves the sigmoid 2-2-1 net on its plateau far more often than Glorot
    assert fractions[("2-2-1 sigmoid, squared error", "Glorot uniform")] > \
        fractions[("2-2-1 sigmoid, squared error", "small uniform U(-0.1, 0.1)")] + 0.3
    assert module.plot(results, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_per_example_clipping_example(repo_root):
    assert _example(repo_root, "per_example_clipping").main(steps=150, verbose=False) > 0.95  # 96.5% measured


def test_min_char_rnn_learns_and_reports_the_held_out_loss(repo_root, shared_data, monkeypatch, capsys):
    """Karpathy's min-char-rnn, 1,500 iterations on Tiny Shakespeare's first 30,000 characters (seconds)."""
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    result = _example(repo_root, "min_char_rnn").main(iters=1500, limit=30_000)
    out = capsys.readouterr().out
    vocab = result["vocab_size"]                                      # 58 characters in this slice
    assert result["gradient_rel_diff"] < 1e-5                        # hand-written BPTT = jax.grad
    assert result["start_loss"] == pytest.approx(25 * np.log(vocab))  # -log(1/vocab)·seq_length
    # the smooth loss keeps 0.999^1500 = 22% of its start; measured 101.5 -> 83.4 (seed 0)
    assert result["smooth_loss"] < result["start_loss"] - 10, result["history"]
    assert "iter 0, loss: " in out and "iter 1400, loss: " in out and out.splitlines().count("----") == 30  # 15 samples
    assert "held-out loss" in out and "from h = 0 instead" in out and "Why they differ" in out
    assert 0 < result["held_out_loss"] < np.log(vocab)               # better than a uniform guess, per character


@pytest.mark.slow
def test_min_char_rnn_reaches_the_readme_figure(repo_root, shared_data, monkeypatch):
    """The README's figures: the default 20,000 iterations on Tiny Shakespeare (~10 s)."""
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    result = _example(repo_root, "min_char_rnn").main(verbose=False)
    assert result["iters"] == 20_000 and result["start_loss"] == pytest.approx(25 * np.log(65))
    # README: 55.2 and 2.27 (XLA's default flags; under the suite's quick-compile flags 51.0 and 2.21)
    assert result["smooth_loss"] < 57 and result["held_out_loss"] < 2.35, result["history"][-5:]
    assert result["held_out_loss_from_zero"] > 0   # from h = 0: 4.50 here, 2.27 with the default flags


def test_mnist_subset_one_epoch_above_90_percent(repo_root, shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    module = _example(repo_root, "image_classifier")
    from fnnet import datasets

    metrics = module.run("mnist", datasets.mnist, epochs=1, limit=10_000, out=str(tmp_path),
                         verbose=False)
    assert metrics["test_accuracy"] > 0.90, metrics
    for figure in metrics["figures"]:
        assert open(figure, "rb").read(4) == b"\x89PNG"


@pytest.mark.slow
def test_full_mnist_mlp_reaches_the_readme_figure(repo_root, shared_data, tmp_path):
    metrics = run_optimised(repo_root, shared_data, "image_classifier", "mnist", epochs=12, out=str(tmp_path),
                            verbose=False)
    assert metrics["test_accuracy"] >= 0.983, metrics     # README: 98.5%


@pytest.mark.slow
def test_full_fashion_mnist_mlp_reaches_the_readme_figure(repo_root, shared_data, tmp_path):
    metrics = run_optimised(repo_root, shared_data, "image_classifier", "fashion-mnist", epochs=15,
                            out=str(tmp_path), verbose=False)
    assert metrics["test_accuracy"] >= 0.895, metrics     # README: 90.2%


def test_see_inside_traces_watches_and_locates(repo_root, tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    result = _example(repo_root, "see_inside").main(verbose=False, limit=3000, epochs=1, out=tmp_path)
    assert result["xor_trace"].passed and "relu'(z=0.4127) = 1" in result["explained"]
    assert any("learning rate may be too high" in message for message in result["warnings"])
    assert result["diverged"] is not None and result["diverged"].layer_name is not None
    assert (tmp_path / "health.png").stat().st_size > 10_000 and result["dataset"] == "mnist"
