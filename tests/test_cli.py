"""The fnnet command line: train/eval/predict round trips, gradcheck, summary, and one-line errors.

Most tests call ``cli.main([...])`` in this process and share two trained runs (module
fixtures); a single test runs ``python -m fnnet`` in a subprocess to check the entry point.
"""

import dataclasses
import gc
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import fnnet
from fnnet import gradcheck, losses, train
from fnnet.app import cli, recipes
from onnx_checks import assert_run_exports


def _fnnet(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "fnnet", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def _one_line_error(capsys, *messages):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for message in messages:
        assert message in err, err
    return err


def _mnist_subset(train_examples, test_examples):
    """MNIST's recipe with fewer examples: the CLI's own code paths, a short run."""
    spec = recipes.DATASETS["mnist"]

    def load(seed):
        (x, y), (x_test, y_test) = spec.load(seed)
        return (x[:train_examples], y[:train_examples]), (x_test[:test_examples], y_test[:test_examples])
    return dataclasses.replace(spec, load=load)


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    """breast-cancer, 30 epochs, trained once for this module."""
    out = tmp_path_factory.mktemp("runs") / "bc"
    assert cli.main(["train", "breast-cancer", "--epochs", "30", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, shared_data):
    """MNIST, one epoch on 10,000 images, trained once for this module."""
    out = tmp_path_factory.mktemp("runs") / "mnist"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FNNET_DATA", str(shared_data))
        assert cli.main(["train", "mnist", "--limit", "10000", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_export_of_the_mlp_run_gives_predict_in_onnxruntime(mnist_run, capsys, shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    assert_run_exports(mnist_run, tmp_path / "mlp.onnx", capsys)


@pytest.mark.parametrize("args,message", [
    (["train", "cifar"], "invalid choice: 'cifar'"),
    (["train", "xor", "--hidden", "4,a"], "hidden must be comma-separated"),
    (["train", "xor", "--hidden", "4,-1"], "hidden widths must be positive"),
    (["train", "xor", "--epochs", "zero"], "invalid int value"),
    (["train", "xor", "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "xor", "--lr", "-0.1"], "lr must be positive"),
    (["train", "xor", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["eval", "/nonexistent/run"], "/nonexistent/run: no such run folder"),
    (["predict", "/nonexistent/run", "/nonexistent/x.npy"], "/nonexistent/x.npy: no such file"),
    (["trace", "xor", "--html", "/"], "--html /: is a folder; give a file name such as /trace.html"),
    (["report", "/nonexistent/run"], "/nonexistent/run: no such run folder"),
    (["report", "/nonexistent/run", "--examples", "0"], "--examples must be >= 1"),
    ([], "required: command"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, args, message):
    assert cli.main(args) == 2
    _one_line_error(capsys, message)


def test_train_then_eval_matches(bc_run, capsys):
    metrics = json.loads((bc_run / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "epochs", "train_seconds", "examples_per_second", "history"):
        assert key in metrics
    assert metrics["test_accuracy"] >= 0.95 and metrics["epochs"] == 30
    assert len(metrics["history"]["train_loss"]) == 30
    assert (bc_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (bc_run / "checkpoint.safetensors").exists()
    config = json.loads((bc_run / "config.json").read_text())
    assert config["in_shape"] == [30] and config["out_dim"] == 1   # enough to rebuild the model
    capsys.readouterr()
    assert cli.main(["eval", str(bc_run)]) == 0
    assert "matches metrics.json" in capsys.readouterr().out


def test_resume_continues_to_more_epochs(tmp_path, capsys):
    out = str(tmp_path / "digits")
    assert cli.main(["train", "digits", "--epochs", "2", "--out", out, "--quiet"]) == 0
    assert cli.main(["train", "digits", "--epochs", "4", "--out", out, "--quiet", "--resume"]) == 0
    history = json.loads((tmp_path / "digits" / "metrics.json").read_text())["history"]
    assert history["epoch"] == [1, 2, 3, 4]
    capsys.readouterr()
    assert cli.main(["train", "digits", "--epochs", "4", "--lr", "0.5", "--out", out, "--quiet", "--resume"]) == 2
    _one_line_error(capsys, "different settings")


def test_mnist_subset_via_cli(mnist_run):
    assert json.loads((mnist_run / "metrics.json").read_text())["test_accuracy"] > 0.90


def test_missing_mnist_is_a_clear_error(tmp_path):
    """Also the one check of the ``python -m fnnet`` entry point in a subprocess."""
    result = _fnnet("train", "mnist", "--out", str(tmp_path / "x"), "--quiet",
                    env={"FNNET_DATA": str(tmp_path), "FNNET_CACHE": str(tmp_path / "c"), "FNNET_OFFLINE": "1"})
    assert result.returncode == 2
    assert "train-images-idx3-ubyte.gz not found" in result.stderr and "Traceback" not in result.stderr


def test_the_script_flushes_its_output_and_runs_atexit_before_it_ends_the_process(capsys):
    """``entry_point`` (the ``fnnet`` script, ``python -m fnnet``) ends the process with ``os._exit``
    to skip the interpreter's teardown: into a pipe, which buffers, every line must still arrive,
    ``atexit`` functions must still run (and what they write arrive too), and the command's exit
    status must be the process's. It also freezes what the imports built out of Python's
    collections; ``main``, which tests and notebooks call in a shared process, does not."""
    frozen = gc.get_freeze_count()
    assert cli.main(["trace", "xor"]) == 0
    expected = capsys.readouterr().out
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # main() in a process shared with others: no gc.freeze
    script = ("import atexit, gc, sys\n"
              "atexit.register(lambda: print(f'atexit ran, gc enabled {gc.isenabled()}, '\n"
              "                              f'imports frozen {gc.get_freeze_count() > 10_000}', end=''))\n"
              "sys.argv = ['fnnet'] + sys.argv[1:]\n"
              "from fnnet.app.cli import entry_point\n"
              "entry_point()\n")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    ran = "atexit ran, gc enabled True, imports frozen True"  # no newline: only a last flush sends it
    out = subprocess.run([sys.executable, "-c", script, "trace", "xor"], capture_output=True, text=True,
                         timeout=300, env=buffered)
    assert out.returncode == 0 and out.stdout == expected + ran, out.stderr
    out = subprocess.run([sys.executable, "-c", script, "eval", "no-such-run"], capture_output=True, text=True,
                         timeout=300, env=buffered)
    assert out.returncode == 2 and out.stderr.startswith("fnnet: error: ") and out.stdout == ran


def test_a_lost_output_keeps_the_finished_epochs_and_says_so(tmp_path):
    """``fnnet train ... | head`` and ``> /dev/full``: the epochs finished before the output was lost
    are kept in the run folder (fit checkpoints on an ``OSError`` as on Ctrl-C); a full disk is exit 4
    and one line, a reader gone is exit 141 and silence."""
    out = tmp_path / "piped"
    process = subprocess.Popen([sys.executable, "-m", "fnnet", "train", "xor", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while b"epoch 2/" not in process.stdout.readline():  # two epochs finished, then the reader goes
        pass
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141 and stderr == ""
    assert cli.main(["eval", str(out)]) == 0  # the checkpoint of the finished epochs
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "fnnet", "train", "xor", "--out", str(tmp_path / "full")],
                                    stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
        assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("fnnet: error: no space left on the device"), result.stderr


def test_bad_out_is_refused_before_the_data_is_loaded(tmp_path, capsys, monkeypatch):
    def no_loading(seed):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setitem(recipes.DATASETS, "xor", dataclasses.replace(recipes.DATASETS["xor"], load=no_loading))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for out, message in [(a_file, f"--out {a_file}: is a file, not a folder"),
                         (a_file / "run", f"--out {a_file / 'run'}: cannot create it, {a_file} is a file")]:
        assert cli.main(["train", "xor", "--out", str(out), "--quiet"]) == 2
        _one_line_error(capsys, message)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert cli.main(["train", "xor", "--out", str(locked / "run"), "--quiet"]) == 2
        _one_line_error(capsys, f"{locked} is not writable")


def test_predict_writes_labels_and_probabilities(bc_run, tmp_path, capsys):
    from fnnet import datasets

    x, y = datasets.breast_cancer()[1]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "sub" / "labels.npy"
    assert cli.main(["predict", str(bc_run), str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and f"wrote {out}: class labels for {len(x)} examples" in line
    labels = np.load(out)
    assert labels.dtype == np.int32 and labels.shape == (len(x),)
    accuracy = json.loads((bc_run / "metrics.json").read_text())["test_accuracy"]
    assert np.mean(labels == y[:, 0]) == pytest.approx(accuracy)
    assert cli.main(["predict", str(bc_run), str(tmp_path / "x.npy"), "--out", str(out), "--proba"]) == 0
    proba = np.load(out)
    assert proba.shape == (len(x),) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(proba > 0.5, labels == 1)


def test_predict_bad_inputs_give_one_line_naming_the_file(bc_run, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((5, 30), np.float32))
    cases = [(np.zeros((5, 29)), "expected examples of shape (N, 30) (30 values each), got shape (5, 29)"),
             (b"hello", "not a .npy file"),
             ({"x": np.zeros((5, 30))}, "is an .npz archive")]
    for index, (content, message) in enumerate(cases):
        path = tmp_path / f"bad{index}.npy"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, dict):
            with open(path, "wb") as file:
                np.savez(file, **content)
        else:
            np.save(path, content)
        assert cli.main(["predict", str(bc_run), str(path), "--out", str(tmp_path / "p.npy")]) == 2
        _one_line_error(capsys, f"{path}: {message}")
    assert cli.main(["predict", str(bc_run), str(x), "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, f"--out {tmp_path}: is a folder")
    assert cli.main(["predict", str(tmp_path), str(x)]) == 2
    _one_line_error(capsys, f"{tmp_path}: no config.json here")


def test_predict_regression_values_and_no_proba(tmp_path, capsys):
    run = tmp_path / "reg"
    assert cli.main(["train", "regression", "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    np.save(tmp_path / "x.npy", np.full((3, 4), 0.5, np.float32))
    out = tmp_path / "values.npy"
    assert cli.main(["predict", str(run), str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    assert "predicted values" in capsys.readouterr().out and np.load(out).shape == (3, 4)
    assert cli.main(["predict", str(run), str(tmp_path / "x.npy"), "--out", str(out), "--proba"]) == 2
    _one_line_error(capsys, "is a regression run")


def test_predict_mnist_accepts_images_or_vectors(mnist_run, shared_data, tmp_path, capsys):
    from fnnet import datasets

    images, labels = datasets.mnist("test", path=shared_data / "mnist")
    images, labels = images[:500], labels[:500]
    results = []
    for name, x in [("images", images), ("vectors", images.reshape(500, 784))]:
        np.save(tmp_path / f"{name}.npy", x)
        out = tmp_path / f"{name}-labels.npy"
        assert cli.main(["predict", str(mnist_run), str(tmp_path / f"{name}.npy"), "--out", str(out)]) == 0
        results.append(np.load(out))
    np.testing.assert_array_equal(results[0], results[1])
    assert np.mean(results[0] == labels) > 0.85
    assert cli.main(["predict", str(mnist_run), str(tmp_path / "images.npy"), "--out", str(tmp_path / "p.npy"),
                     "--proba"]) == 0
    proba = np.load(tmp_path / "p.npy")
    assert proba.shape == (500, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.save(tmp_path / "small.npy", images[:, :27, :27])
    np.save(tmp_path / "raw.npy", (images * 255).astype(np.uint8))
    capsys.readouterr()
    for name, message in [("small", "expected examples of shape (N, 784) (784 values each), got shape (500, 27, 27)"),
                          ("raw", "values run from 0 to 255; mnist expects pixels scaled to [0, 1]")]:
        assert cli.main(["predict", str(mnist_run), str(tmp_path / f"{name}.npy")]) == 2
        _one_line_error(capsys, f"{tmp_path / name}.npy: {message}")


def _readme_gradcheck_commands(repo_root) -> list[list[str]]:
    """Every ``fnnet gradcheck ...`` the command-line page's first bash block shows (in comments too)."""
    page = (repo_root / "docs" / "cli.md").read_text()
    block = re.search(r"```bash\n(.*?)```", page, re.S).group(1)
    commands = []
    for match in re.finditer(r"fnnet gradcheck((?:[ \t]+[\w-]+)*)", block):
        argv = ["gradcheck", *match.group(1).split()]
        if argv not in commands:
            commands.append(argv)
    return commands


def test_readme_gradcheck_commands_pass(repo_root, shared_data, monkeypatch, capsys):
    """Each README gradcheck command runs and passes. The built-in table's cases each pass in
    test_catalogue.py; here the command prints them (a few of them run, to keep the suite fast)."""
    from fnnet import gradcheck

    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    commands = _readme_gradcheck_commands(repo_root)
    assert ["gradcheck"] in commands and ["gradcheck", "mnist"] in commands, commands
    cases = gradcheck.builtin_cases()
    names = [name for name, _ in cases]
    monkeypatch.setattr(gradcheck.cases, "builtin_cases", lambda: [c for c in cases if c[0] in (
        "Dense", "BatchNorm (train)", "softmax_cross_entropy (labels)")])
    for argv in commands:
        code = cli.main(argv)
        out = capsys.readouterr().out
        assert code == 0, f"fnnet {' '.join(argv)} exited {code}:\n{out[-3000:]}"
        assert not re.search(r"\bFAIL\b|: skipped \(", out), out[-3000:]  # no failure, data set found
        if argv == ["gradcheck"]:  # the table covers every built-in layer and loss
            assert "Dense" in out and "BatchNorm (train)" in out and "gradient leaves pass" in out
            for name in ("Dense", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "Gelu", "Identity",
                         "Flatten", "Reshape", "Conv 3x3", "Conv grouped", "Conv depthwise", "Conv1D",
                         "MaxPool", "AvgPool", "GlobalAvgPool", "LayerNorm", "BatchNorm (train)",
                         "BatchNorm (eval)", "Dropout (train)", "Residual", "FanInConcat", "squared_error",
                         "mse", "binary_cross_entropy", "sigmoid_binary_cross_entropy",
                         "softmax_cross_entropy", "serial MLP", "CNN", "Embedding", "PositionalEmbedding",
                         "CausalSelfAttention (2 heads)", "softmax_cross_entropy on (B, T, V) logits", "GPT (1 block)"):
                assert any(name in case for case in names), name
            passed, total = map(int, re.search(r"(\d+)/(\d+) gradient leaves pass", out).groups())
            assert passed == total >= 5


def test_summary_for_every_data_set(capsys):
    for name, spec in recipes.DATASETS.items():
        assert cli.main(["summary", name]) == 0
        out = capsys.readouterr().out
        assert re.search(rf"input\s+{re.escape(str(spec.in_shape))}\n", out), out  # the recipe's in_shape
    assert cli.main(["summary", "mnist"]) == 0
    assert "total parameters: 669,706" in capsys.readouterr().out


def test_commands_keep_compiled_programs_in_the_user_cache(tmp_path):
    """`fnnet train` keeps XLA's programs in $FNNET_CACHE/xla (a second run skips compilation); not with
    FNNET_XLA_CACHE=off, and never over a JAX cache folder already configured (the test suite's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT") and k != "JAX_COMPILATION_CACHE_DIR"}
    command = [sys.executable, "-m", "fnnet", "train", "xor", "--epochs", "3", "--quiet", "--overwrite"]
    for cache, extra, kept in (("on", {}, True), ("off", {"FNNET_XLA_CACHE": "off"}, False),
                               ("theirs", {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "theirs"),
                                          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}, False)):
        result = subprocess.run(command + ["--out", str(tmp_path / cache / "run")], capture_output=True, text=True,
                                timeout=300, env=dict(env, FNNET_CACHE=str(tmp_path / cache), **extra))
        assert result.returncode == 0, result.stderr[-2000:]
        programs = list((tmp_path / cache / "xla").glob("*")) if (tmp_path / cache / "xla").exists() else []
        assert bool(programs) == kept, (cache, programs[:3])
    assert list((tmp_path / "theirs").glob("*"))   # JAX's own setting was used, not replaced


# a flag that does not apply is a usage error ------------------------------------------------------

def test_mlp_flags_with_a_cnn_are_a_usage_error(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "mnist", "--model", "cnn", "--hidden", "64", "--activation", "tanh",
                     "--out", str(out)]) == 2
    _one_line_error(capsys, "--hidden is for --model mlp")
    assert not out.exists()
    assert cli.main(["summary", "mnist", "--model", "cnn", "--activation", "tanh"]) == 2
    _one_line_error(capsys, "--activation is for --model mlp")


# the CLI's training runs ------------------------------------------------------------

def test_divergence_in_the_cli_is_one_line_with_its_own_exit_code(capsys, tmp_path):
    code = cli.main(["train", "regression", "--lr", "1e8", "--epochs", "3", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 3 and cli.EXIT_CODES[3].startswith("training diverged")
    _one_line_error(capsys, "training diverged", "at epoch 1, step", "Try a smaller --lr")


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


def test_ctrl_c_says_which_checkpoint_is_kept(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.History, "plot", interrupt)  # after the last epoch's checkpoint
    assert cli.main(["train", "xor", "--epochs", "2", "--out", str(out), "--quiet"]) == 130
    _one_line_error(capsys, f"interrupted; the checkpoint of epoch 2 in {out} is kept", "--resume")


# every model the CLI trains can be summarised and gradient-checked ----------------------------------

def test_gradcheck_and_summary_take_the_flags_of_train(capsys, shared_data, repo_root):
    """`fnnet gradcheck mnist --model cnn` and `gradcheck shakespeare --layers 1` are README commands:
    test_cli.py runs each and requires every leaf to pass."""
    assert cli.main(["summary", "shakespeare", "--layers", "2", "--features", "32", "--heads", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("CausalSelfAttention") == 2
    assert cli.main(["summary", "mnist", "--model", "resnet"]) == 0
    assert "Residual" in capsys.readouterr().out
    commands = _readme_gradcheck_commands(repo_root)
    assert ["gradcheck", "mnist", "--model", "cnn"] in commands and ["gradcheck", "shakespeare", "--layers", "1"] in commands


# paths that never ran before: each runs once, small ------------------------------

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
    monkeypatch.setattr(gradcheck.cases, "builtin_cases", lambda: cases[:2])  # the whole table: test_catalogue.py
    assert cli.main(["gradcheck", "--all"]) == 0
    out = capsys.readouterr().out
    for name in recipes.DATASETS:
        assert f"\n{name}: serial + " in out, name
    assert not re.search(r"\bFAIL\b|: skipped \(", out), out[-2000:]   # every data set found, every leaf passes


def test_an_unwritable_out_is_refused_even_as_root(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    assert cli.main(["train", "xor", "--out", str(locked / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{locked} is not writable" in err and err.count("\n") == 1
