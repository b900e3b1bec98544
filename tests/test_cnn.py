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
from fnnet.app import arguments, cli, commands, jobs, recipes
from fnnet.app.recipes import RecipeError
from onnx_checks import assert_run_exports
from test_cli import _mnist_subset
from test_examples import run_optimised
from test_see_inside import trace_rows


def _optimised(*args, shared_data, cwd=None):
    env = dict(os.environ, FNNET_DATA=str(shared_data))
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, shared_data):
    """``fnnet train mnist --model cnn`` with its default recipe (fast) on a subset. (The classic recipe's
    network learns in test_cnn_example_subset_learns; BatchNorm's running statistics in a run are checked
    on the ResNet's, test_resnet_trains_from_the_cli_on_a_subset.)"""
    out = tmp_path_factory.mktemp("runs") / "mnist-cnn"
    result = _optimised("-m", "fnnet", "train", "mnist", "--model", "cnn", "--limit", "3000", "--epochs", "2",
                        "--out", str(out), "--quiet", shared_data=shared_data)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_cli_cnn_learns_from_shifted_images_and_reloads(cnn_run, capsys):
    """MNIST's default CNN recipe: the small network, one-cycle Adam (b1 0.7, b2 0.9), images shifted by up to a
    pixel; on 3,000 images for 2 epochs it must pass a real bar; the run reloads and predicts."""
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.93, metrics          # 3,000 images, 2 epochs: 95.7% measured
    config = json.loads((cnn_run / "config.json").read_text())
    assert {k: config[k] for k in ("recipe", "epochs", "batch_size", "lr", "schedule", "betas", "augment")} == \
        {"recipe": "fast", "epochs": 2, "batch_size": 128, "lr": 0.005, "schedule": "onecycle", "betas": [0.7, 0.9],
         "augment": 1}
    run = fnnet.load_run(cnn_run)
    assert [layer.name for layer in run.model.children][:4] == ["Reshape((28, 28, 1))", "Conv(24, 5x5)", "Relu",
                                                                 "MaxPool(2x2)"]
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


def _train_config(*flags):
    return arguments.config_from_args(cli.build_parser().parse_args(["train", *flags]))


def test_cnn_recipes_give_their_settings_and_flags_override_them():
    fast = _train_config("mnist", "--model", "cnn")
    assert (fast["recipe"], fast["epochs"], fast["lr"], fast["batch_size"], fast["schedule"], fast["betas"],
            fast["augment"]) == ("fast", 8, 0.005, 128, "onecycle", [0.7, 0.9], 1)
    classic = _train_config("mnist", "--model", "cnn", "--recipe", "classic")
    assert (classic["epochs"], classic["lr"], classic["batch_size"], classic["schedule"]) == (12, 2e-3, 128, "cosine")
    assert classic["augment"] == 0 and "betas" not in classic
    fashion = _train_config("fashion-mnist", "--model", "cnn")
    assert (fashion["recipe"], fashion["epochs"]) == ("classic", 16)
    mine = _train_config("mnist", "--model", "cnn", "--epochs", "3", "--lr", "0.02", "--augment", "0",
                         "--optimizer", "momentum")
    assert (mine["epochs"], mine["lr"], mine["optimizer"]) == (3, 0.02, "momentum")
    assert mine["augment"] == 0 and "betas" not in mine
    assert _train_config("mnist", "--augment", "2")["augment"] == 2     # an MLP on shifted images
    assert _train_config("mnist")["augment"] == 0 and "augment" not in _train_config("xor")
    for flags, message in [(["mnist", "--recipe", "fast"], "--recipe is for --model cnn"),
                           (["mnist", "--model", "resnet", "--recipe", "classic"], "--recipe is for --model cnn"),
                           (["breast-cancer", "--augment", "1"], "--augment shifts images: breast-cancer has none"),
                           (["xor", "--recipe", "fast"], "--recipe is for --model cnn, which needs an image data "
                                                         "set"),
                           (["mnist", "--augment", "28"], "--augment 28 would shift mnist's 28x28 images out of "
                                                          "the frame"),
                           (["mnist", "--augment", "-1"], "--augment must be >= 0")]:
        with pytest.raises(cli.UsageError, match=message):
            _train_config(*flags)


def test_a_cnn_run_saved_before_recipes_resumes_as_the_classic_recipe(tmp_path):
    """A config.json written before ``recipe`` and ``augment`` were recorded: resumed with ``--recipe classic``
    it has the same settings; with the fast default the change is named, old and new."""
    old = _train_config("mnist", "--model", "cnn", "--recipe", "classic")
    del old["recipe"], old["augment"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    options = dict(resume=True, overwrite=False, saved_defaults=commands._SAVED_DEFAULTS)
    assert jobs.prepare_run_dir(tmp_path, _train_config("mnist", "--model", "cnn", "--recipe", "classic"),
                                **options) == []
    with pytest.raises(RecipeError, match=r"different settings \(.*recipe: 'classic' -> 'fast'"):
        jobs.prepare_run_dir(tmp_path, _train_config("mnist", "--model", "cnn"), **options)


def test_train_prints_how_the_run_trains():
    assert commands._training_line(_train_config("mnist", "--model", "cnn")) == (
        "training: recipe fast, adam (b1 0.7, b2 0.9), lr 0.005 onecycle, batch 128, 8 epochs, images shifted by "
        "up to 1 pixel")
    assert commands._training_line(_train_config("breast-cancer", "--weight-decay", "1e-4")) == (
        "training: adam, lr 0.001 constant, batch 32, 100 epochs, weight decay 0.0001")


def test_cnn_summary_and_bad_model_choice(capsys):
    assert cli.main(["summary", "mnist", "--model", "cnn"]) == 0
    out = capsys.readouterr().out
    assert "Conv(24, 5x5)" in out and "BatchNorm" not in out and "Dense(256)" in out
    assert cli.main(["summary", "mnist", "--model", "cnn", "--recipe", "classic"]) == 0
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
    ("mnist", 12, "cnn", 0.992),                 # the classic recipe; README: 99.29% (99.29-99.34% measured
                                                 # over programs that differ only in rounding: 99.3 was inside that spread)
    ("fashion-mnist", 16, "cnn", 0.925),         # README: 92.72%
    ("mnist", 2, "resnet", 0.99),                # 2 of the example's 6 epochs: 99.09% measured
], ids=["mnist-cnn", "fashion-mnist-cnn", "mnist-resnet-2-epochs"])
def test_full_cnn_runs_reach_their_bars(repo_root, shared_data, tmp_path, name, epochs, kind, bar):
    metrics = run_optimised(repo_root, shared_data, "cnn_classifier", name, epochs=epochs, kind=kind,
                            out=str(tmp_path), verbose=False)
    assert metrics["test_accuracy"] >= bar, metrics


@pytest.mark.slow
def test_fnnet_train_mnist_cnn_defaults_reach_99_4_percent_over_three_seeds(repo_root, shared_data, tmp_path):
    """Issue 20's record, as a user runs it: ``fnnet train mnist --model cnn`` (the fast recipe, 8 epochs), seeds
    0, 1 and 2: mean test accuracy >= 99.4%, none below 99.3%. (Its time, under a minute on 2 cores, is reported
    by ``make bench-e2e``, never asserted.)"""
    accuracies = []
    for seed in (0, 1, 2):
        out = tmp_path / f"seed{seed}"
        result = _optimised("-m", "fnnet", "train", "mnist", "--model", "cnn", "--seed", str(seed), "--out", str(out),
                            "--quiet", shared_data=shared_data)
        assert result.returncode == 0, result.stderr[-3000:]
        accuracies.append(json.loads((out / "metrics.json").read_text())["test_accuracy"])
    assert np.mean(accuracies) >= 0.994 and min(accuracies) >= 0.993, accuracies


def test_cli_export_of_the_cnn_gives_predict_in_onnxruntime(cnn_run, capsys, shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    assert_run_exports(cnn_run, tmp_path / "cnn.onnx", capsys)


def test_cli_trace_of_a_trained_cnn(cnn_run, capsys, shared_data, monkeypatch):
    """fnnet trace RUN_DIR on the CNN: one row per layer, every hand-written backward OK against jax.vjp at the
    traced point."""
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    rows, out = trace_rows(capsys, cnn_run, "--layer", "1")
    assert len(rows) == 11 and "Reshape" in rows[0] and "Conv(24, 5x5)" in rows[1]
    assert "== layer 1 (Conv(24, 5x5)" in out


@pytest.mark.slow  # ~15 s: the doctor's float64 gradcheck and overfit of the CNN
def test_cli_doctor_of_a_trained_cnn_flags_nothing(cnn_run, capsys, shared_data, monkeypatch):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    assert cli.main(["doctor", str(cnn_run)]) == 0
    out = capsys.readouterr().out
    assert "every check passed" in out and "✗" not in out, out


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
    assert "Reshape" in rows[0] and any("BatchNorm" in row for row in rows) and "== layer 2 (BatchNorm" in text
