"""Diagnostics that never lie (issue 29): a wrong argument is one line and exit 2, never a
traceback and the exit status of a failed check; messages name what the user gave; what a
command says it kept is what the folder holds; ``print(run)`` is a summary, not the parameters.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, losses, train
from fnnet.app import cli, commands
from fnnet.train import language


def _one_line_error(capsys, *messages):
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for message in messages:
        assert message in err, err
    return err, captured.out


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    """A small breast-cancer MLP trained by the CLI (3 epochs: a couple of seconds)."""
    out = tmp_path_factory.mktemp("clear-errors") / "bc"
    assert cli.main(["train", "breast-cancer", "--epochs", "3", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def parse_only(monkeypatch):
    """Fails the test if the command runs: what it checks must be refused while parsing."""
    def never(args):
        raise AssertionError(f"fnnet {args.command} ran; its arguments should have been refused while parsing")
    monkeypatch.setattr(commands, "run", never)


# -- item 8: fnnet trace's indices -------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--explain", "-1"], "--explain must be >= 0"),
    (["--examples", "0"], "--examples must be >= 1"),
    (["--max-units", "0"], "--max-units must be >= 1"),
    (["--layer", "dense"], "--layer must be a layer's index (2; -1 counts from the end) or path (3/1/0), got 'dense'"),
])
def test_trace_bad_numbers_are_refused_while_parsing(parse_only, capsys, args, message):
    assert cli.main(["trace", "xor", *args]) == 2
    _one_line_error(capsys, message)


@pytest.mark.parametrize("args,message", [
    (["--layer", "9"], "--layer 9: out of range"),
    (["--layer", "-9"], "--layer -9: out of range"),
    (["--layer", "7/0"], "--layer 7/0: no such layer"),
    (["--explain", "999"], "--explain 999: out of range"),
    (["--layer", "2", "--explain", "1"], "--explain 1: out of range"),
])
def test_trace_xor_layer_or_unit_out_of_range_is_a_usage_error(capsys, args, message):
    assert cli.main(["trace", "xor", *args]) == 2
    _, out = _one_line_error(capsys, message)
    assert out == ""  # refused before anything is printed


@pytest.mark.parametrize("args,message", [
    (["--layer", "9"], "--layer 9: out of range: this model has 3 layers"),
    (["--explain", "999"], "--explain 999: out of range for layer 0 (Dense(30))"),
    (["--examples", "0"], "--examples must be >= 1"),
])
def test_trace_of_a_run_with_a_bad_index_is_a_usage_error(bc_run, capsys, args, message):
    examples = [] if "--examples" in args else ["--examples", "3"]
    assert cli.main(["trace", str(bc_run), *examples, *args]) == 2
    _, out = _one_line_error(capsys, message)
    assert out == ""


# -- item 9: evaluate(model, loss, params, data) -----------------------------------------------------------

def _small_problem():
    model = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(3))
    _, params = model.init(jax.random.PRNGKey(0), (5,))
    x = np.asarray(draws.normal(jax.random.PRNGKey(1), (20, 5)), np.float32)
    y = np.arange(20, dtype=np.int32) % 3
    return model, params, x, y


def test_evaluate_takes_the_loss_before_the_params():
    model, params, x, y = _small_problem()
    result = train.evaluate(model, losses.softmax_cross_entropy, params, (x, y), batch_size=7)
    logits = model.apply(params, x)
    assert result["loss"] == pytest.approx(float(losses.softmax_cross_entropy.value(logits, y)), rel=1e-5)
    assert result["accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == y)))


def test_evaluate_in_the_old_order_is_a_one_line_type_error():
    model, params, x, y = _small_problem()
    for args in [(model, params, losses.softmax_cross_entropy, (x, y)),  # the old order
                 (model, params, params, (x, y))]:                       # no loss at all
        with pytest.raises(TypeError, match=r"evaluate\(model, loss, params, data\)") as error:
            train.evaluate(*args)
        assert "\n" not in str(error.value)


# -- item 11: the smaller ones -----------------------------------------------------------------------------

def test_ctrl_c_before_the_first_checkpoint_keeps_nothing_and_the_same_command_runs_again(tmp_path, capsys,
                                                                                       monkeypatch):
    out = tmp_path / "xor"
    command = ["train", "xor", "--epochs", "20", "--out", str(out), "--quiet"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train, "fit", interrupted)
        assert cli.main(command) == 130
        assert "nothing was kept" in capsys.readouterr().err
        assert not out.exists()  # the folder this run made, with its config.json, is gone again
        kept = tmp_path / "mine"  # a folder that was there before keeps what it held
        kept.mkdir()
        (kept / "notes.txt").write_text("mine")
        assert cli.main(command[:-3] + ["--out", str(kept), "--quiet"]) == 130
        assert [p.name for p in kept.iterdir()] == ["notes.txt"]
    assert cli.main(command) == 0  # the same command: not refused as "holds a run already"
    assert (out / "checkpoint.safetensors").is_file() and (out / "config.json").is_file()


def test_ctrl_c_before_the_first_checkpoint_of_a_gpt_keeps_nothing(tmp_path, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    out = tmp_path / "gpt"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(language, "fit_language_model", interrupted)
    assert cli.main(["train", "shakespeare", "--steps", "2", "--layers", "1", "--features", "16", "--heads", "2",
                     "--block-size", "8", "--out", str(out), "--quiet"]) == 130
    assert "nothing was kept" in capsys.readouterr().err and not out.exists()


def test_convert_into_a_run_folder_suggests_only_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert cli.main(["convert", "nanogpt", str(tmp_path / "ckpt.pt"), "--out", str(out)]) == 2
    err, _ = _one_line_error(capsys, "--overwrite")
    assert "--resume" not in err


@pytest.mark.parametrize("args,message", [
    (["doctor", "xor", "--lr", "100", "--optimizer", "sgd", "--epochs", "3", "--monitor", "2"],
     "--epochs, --lr, --optimizer, --monitor: training flags, which doctor does not use"),
    (["doctor", "xor", "--grad", "autodiff"], "--grad: a training flag"),
    (["doctor", "breast-cancer", "--steps", "3"], "--steps: a training flag"),
    (["doctor", "runs/somewhere", "--hidden", "8"], "model flags are for 'fnnet doctor DATASET'"),
    (["doctor", "runs/somewhere", "--model", "cnn"], "model flags are for 'fnnet doctor DATASET'"),
    (["gradcheck", "--all", "--model", "cnn"], "--all checks each data set's own model"),
    (["gradcheck", "--all", "--hidden", "8"], "--all checks each data set's own model"),
    (["gradcheck", "mnist", "--all"], "--all checks every data set"),
    (["gradcheck", "--model", "cnn"], "name the data set whose model to check"),
    (["gradcheck", "--lr", "0.1"], "name the data set whose model to check"),
])
def test_flags_a_command_would_not_use_are_refused_while_parsing(parse_only, capsys, args, message):
    assert cli.main(args) == 2
    _one_line_error(capsys, message)


def test_every_subcommand_has_a_description(capsys):
    parser = cli.build_parser()
    commands_action = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands_action.choices.items():
        assert sub.description and len(sub.description) > 20, f"fnnet {name} --help has no description"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", "--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert " ".join(commands_action.choices["eval"].description.split()) in shown


def test_print_run_is_a_short_summary(bc_run):
    run = fnnet.load_run(bc_run)
    text = str(run)
    assert repr(run) == text and "\n" not in text and len(text) < 300, text
    count = sum(np.size(leaf) for leaf in jax.tree.leaves(run.params))
    for part in ("breast-cancer", "3 layers", f"{count:,} parameters", "3 epochs", "test accuracy", str(bc_run)):
        assert part in text, text


def test_fit_target_shape_error_names_the_users_shape():
    model = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(1))
    x = np.asarray(draws.normal(jax.random.PRNGKey(0), (455, 3)), np.float32)
    y = np.zeros((455,), np.float32)
    with pytest.raises(ValueError, match=r"\(455,\)") as error:
        train.fit(model, losses.mse, optax.sgd(0.1), (x, y), epochs=1, batch_size=32, key=jax.random.PRNGKey(0),
                  verbose=False)
    assert "(32," not in str(error.value) and "(455, 1)" in str(error.value) and str(error.value).startswith("fit")
    with pytest.raises(ValueError, match=r"evaluate: .*\(455,\)"):
        train.evaluate(model, losses.mse, model.init(jax.random.PRNGKey(0), (3,))[1], (x, y), batch_size=32)


@pytest.mark.parametrize("command", ["eval", "predict", "trace", "sample", "export", "doctor"])
def test_a_file_given_for_a_run_folder_says_so(bc_run, tmp_path, capsys, command):
    checkpoint = bc_run / "checkpoint.safetensors"
    np.save(tmp_path / "x.npy", np.zeros((2, 30), np.float32))
    args = {"predict": ["predict", str(checkpoint), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.npy")],
            "export": ["export", str(checkpoint), str(tmp_path / "m.onnx")]}.get(command, [command, str(checkpoint)])
    assert cli.main(args) == 2
    _one_line_error(capsys, f"{checkpoint}: is a file, not a run folder", f"pass its folder: {bc_run}")
    assert json.loads((bc_run / "config.json").read_text())["dataset"] == "breast-cancer"


# messages that point the right way ------------------------------------------------------------------

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
