"""The fnnet command line: train/eval round trip, gradcheck, summary, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from fnnet import cli


def _fnnet(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "fnnet", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("args,message", [
    (["train", "cifar"], "invalid choice: 'cifar'"),
    (["train", "xor", "--hidden", "4,a"], "--hidden must be comma-separated"),
    (["train", "xor", "--epochs", "zero"], "invalid int value"),
    (["train", "xor", "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "xor", "--lr", "-0.1"], "--lr must be positive"),
    (["train", "xor", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["eval", "/nonexistent/run"], "no config.json"),
    ([], "required: command"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, args, message):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_train_then_eval_matches(tmp_path):
    out = tmp_path / "bc"
    result = _fnnet("train", "breast-cancer", "--epochs", "30", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "epochs", "train_seconds", "examples_per_second", "history"):
        assert key in metrics
    assert metrics["test_accuracy"] >= 0.95 and metrics["epochs"] == 30
    assert len(metrics["history"]["train_loss"]) == 30
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint.safetensors").exists()
    again = _fnnet("eval", str(out))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "matches metrics.json" in again.stdout


def test_resume_continues_to_more_epochs(tmp_path):
    out = tmp_path / "digits"
    assert _fnnet("train", "digits", "--epochs", "2", "--out", str(out), "--quiet").returncode == 0
    resumed = _fnnet("train", "digits", "--epochs", "4", "--out", str(out), "--quiet", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history["epoch"] == [1, 2, 3, 4]
    clash = _fnnet("train", "digits", "--epochs", "4", "--lr", "0.5", "--out", str(out), "--quiet", "--resume")
    assert clash.returncode == 2 and "different settings" in clash.stderr


def test_mnist_subset_via_cli(tmp_path, shared_data):
    out = tmp_path / "m"
    result = _fnnet("train", "mnist", "--limit", "10000", "--epochs", "1", "--out", str(out), "--quiet",
                    env={"FNNET_DATA": str(shared_data)})
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.90


def test_missing_mnist_is_a_clear_error(tmp_path):
    result = _fnnet("train", "mnist", "--out", str(tmp_path / "x"), "--quiet",
                    env={"FNNET_DATA": str(tmp_path), "FNNET_CACHE": str(tmp_path / "c"), "FNNET_OFFLINE": "1"})
    assert result.returncode == 2
    assert "train-images-idx3-ubyte.gz not found" in result.stderr and "Traceback" not in result.stderr


def test_gradcheck_dataset_and_summary():
    result = _fnnet("gradcheck", "breast-cancer")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "breast-cancer" in result.stdout and "FAIL" not in result.stdout
    summary = _fnnet("summary", "mnist")
    assert summary.returncode == 0 and "total parameters: 669,706" in summary.stdout
