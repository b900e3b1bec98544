"""The CNN end to end: the example and `fnnet train --model cnn` learn MNIST; runs reload with their state.

The two training runs are subprocesses with XLA's default optimisation (the test configuration
asks for quick compiles, which make convolution-heavy training several times slower).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fnnet
from fnnet import datasets
from fnnet.app import cli
from onnx_checks import assert_run_exports
from test_examples import run_optimised
from test_see_inside import trace_rows


def _optimised(*args, shared_data, cwd=None):
    env = dict(os.environ, FNNET_DATA=str(shared_data))
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("runs") / "mnist-cnn"
    result = _optimised("-m", "fnnet", "train", "mnist", "--model", "cnn", "--limit", "3000", "--epochs", "1",
                        "--out", str(out), "--quiet", shared_data=shared_data)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_cli_cnn_learns_and_reloads_with_its_state(cnn_run, capsys):
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.80, metrics          # 3,000 images, one epoch: 81.9% measured
    config = json.loads((cnn_run / "config.json").read_text())
    assert config["model"] == "cnn" and config["epochs"] == 1 and config["lr"] == 2e-3
    run = fnnet.load_run(cnn_run)
    assert run.model_state[2]["mean"].shape == (32,)           # layer 2: BatchNorm's running mean
    x, y = datasets.mnist("test")
    labels = run.predict_labels(x[:2000])                    # `fnnet eval` below checks all 10,000 exactly
    assert (labels == y[:2000]).mean() == pytest.approx(run.evaluate((x[:2000], y[:2000]))["accuracy"], abs=1e-9)
    assert cli.main(["eval", str(cnn_run)]) == 0
    assert "matches metrics.json" in capsys.readouterr().out
    np.save(cnn_run / "images.npy", x[:7])
    assert cli.main(["predict", str(cnn_run), str(cnn_run / "images.npy"), "--out", str(cnn_run / "p.npy")]) == 0
    np.testing.assert_array_equal(np.load(cnn_run / "p.npy"), labels[:7])
    np.save(cnn_run / "empty.npy", np.zeros((0, 28, 28), np.float32))   # zero examples: zero predictions
    assert cli.main(["predict", str(cnn_run), str(cnn_run / "empty.npy"), "--out", str(cnn_run / "e.npy")]) == 0
    assert np.load(cnn_run / "e.npy").shape == (0,)


def test_cnn_summary_and_bad_model_choice(capsys):
    assert cli.main(["summary", "mnist", "--model", "cnn"]) == 0
    out = capsys.readouterr().out
    assert "Conv(32, 3x3, no bias)" in out and "BatchNorm" in out and "total state: 192" in out
    assert cli.main(["train", "breast-cancer", "--model", "cnn"]) == 2
    assert "needs an image data set" in capsys.readouterr().err


def test_cnn_example_subset_learns(repo_root, shared_data, tmp_path):
    result = _optimised(str(repo_root / "examples" / "mnist_cnn.py"), "--limit", "6000", "--epochs", "2",
                        "--test-limit", "2000", "--out", str(tmp_path), shared_data=shared_data,
                        cwd=repo_root / "examples")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.90, metrics          # 91.4% measured
    for figure in ("curves.png", "confusion.png", "misclassified.png"):
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("name,epochs,kind,bar", [
    ("mnist", 12, "cnn", 0.993),                 # README: 99.32%
    ("fashion-mnist", 16, "cnn", 0.925),         # README: 92.75%
    ("mnist", 2, "resnet", 0.99),                # 2 of the example's 6 epochs: 99.10% measured
], ids=["mnist-cnn", "fashion-mnist-cnn", "mnist-resnet-2-epochs"])
def test_full_cnn_runs_reach_their_bars(repo_root, shared_data, tmp_path, name, epochs, kind, bar):
    metrics = run_optimised(repo_root, shared_data, "cnn_classifier", name, epochs=epochs, kind=kind,
                            out=str(tmp_path), verbose=False)
    assert metrics["test_accuracy"] >= bar, metrics


def test_cli_export_of_the_cnn_gives_predict_in_onnxruntime(cnn_run, capsys, shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    assert_run_exports(cnn_run, tmp_path / "cnn.onnx", capsys)   # BatchNorm on its running statistics


def test_cli_trace_of_a_trained_cnn(cnn_run, capsys, shared_data, monkeypatch):
    """fnnet trace RUN_DIR on the CNN: one row per layer (BatchNorm in evaluation mode with its running
    statistics), every hand-written backward OK against jax.vjp at the traced point."""
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    rows, out = trace_rows(capsys, cnn_run, "--layer", "2")
    assert len(rows) == 14 and "Reshape" in rows[0] and any("BatchNorm" in row for row in rows)
    assert "== layer 2: BatchNorm" in out
