"""The char-rnn on Tiny Shakespeare: ``fnnet train shakespeare --model lstm`` (flags, run folder, resume,
sample, eval, trace), the carry kept across training windows and handed on while sampling, and (slow)
the default recipe's validation target within 10 minutes."""

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import charrnn
from fnnet.app import char_rnn, cli
from fnnet.layer import apply_with_state, init_with_state, layer_children, layer_kind
from fnnet.train import language
from test_see_inside import trace_rows

TINY = ["--model", "lstm", "--layers", "1", "--hidden", "16", "--seq-len", "16", "--batch-size", "8", "--lr", "0.01",
        "--eval-interval", "10", "--eval-batches", "2"]


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory, shakespeare_data):
    out = tmp_path_factory.mktemp("runs") / "lstm"
    with pytest.MonkeyPatch.context() as env:   # a module fixture: no monkeypatch of its own
        env.setenv("FNNET_DATA", str(shakespeare_data))
        code = cli.main(["train", "shakespeare", *TINY, "--steps", "20", "--out", str(out), "--quiet"])
    assert code == 0
    return out


@pytest.mark.parametrize("args, message", [
    (["--model", "lstm", "--heads", "2"], "--heads is for shakespeare's GPT (--model gpt), not --model lstm"),
    (["--model", "gru", "--block-size", "32"], "--block-size is for shakespeare's GPT (--model gpt), not --model gru"),
    (["--model", "rnn", "--weight-decay", "0.1"], "--weight-decay is for shakespeare's GPT"),
    (["--seq-len", "20"], "--seq-len is not used by shakespeare's GPT; it is for a char-rnn"),
    (["--windows", "streams"], "--windows is not used by shakespeare's GPT"),
    (["--hidden", "32"], "--hidden is not used by shakespeare"),
    (["--model", "lstm", "--hidden", "64,64"], "--hidden for a char-rnn is one width"),
    (["--model", "lstm", "--layers", "0"], "--layers must be a positive integer, got 0"),
    (["--model", "lstm", "--seq-len", "0"], "--seq-len must be a positive integer, got 0"),
    (["--model", "lstm", "--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
    (["--model", "lstm", "--epochs", "3"], "--epochs is not used by shakespeare"),
    (["--model", "cnn"], "--model cnn is not used by shakespeare (--model gpt, rnn, lstm, gru)"),
])
def test_flags_that_do_not_fit_the_model_are_usage_errors_naming_the_flag(args, message, capsys, tmp_path):
    assert cli.main(["train", "shakespeare", *args, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_char_rnn_flags_are_refused_for_other_data_sets(capsys):
    assert cli.main(["train", "mnist", "--model", "lstm"]) == 2
    assert "--model lstm is for shakespeare, not mnist" in capsys.readouterr().err
    assert cli.main(["train", "mnist", "--seq-len", "3"]) == 2
    assert "--seq-len is for a char-rnn (shakespeare --model lstm), not mnist" in capsys.readouterr().err


def test_a_tiny_run_writes_its_folder_and_eval_matches(rnn_run, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    config = json.loads((rnn_run / "config.json").read_text())
    assert config["model"] == "lstm" and config["hidden"] == 16 and config["seq_len"] == 16
    assert config["eval_block_size"] == 64 and config["clip"] == 5.0 and len(config["vocab"]) == 65
    metrics = json.loads((rnn_run / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["val_loss"] < 3.8 and metrics["target_val_loss"] == 1.65
    assert metrics["history"]["step"] == [10, 20] and metrics["tokens_per_second"] > 0
    assert metrics["devices"] == 1   # this process's JAX runs on one CPU device (the suite's)
    assert (rnn_run / "loss.png").stat().st_size > 0 and (rnn_run / "sample.txt").read_text().startswith("ROMEO:")
    assert cli.main(["eval", str(rnn_run)]) == 0
    assert "matches metrics.json" in capsys.readouterr().out
    run = fnnet.load_run(rnn_run)
    assert run.is_language_model and "Stateful" not in run.model.name and run.in_shape == (64,)


def test_sample_is_deterministic_for_a_seed(rnn_run, capsys):
    outputs = []
    for seed in ("0", "0", "1"):
        assert cli.main(["sample", str(rnn_run), "--prompt", "ROMEO:", "--tokens", "40", "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out.rstrip("\n"))
    assert outputs[0] == outputs[1] != outputs[2] and outputs[0].startswith("ROMEO:") and len(outputs[0]) == 46
    assert fnnet.load_run(rnn_run).sample("ROMEO:", 40, seed=0) == outputs[0]
    assert cli.main(["sample", str(rnn_run), "--prompt", "ROMEO#"]) == 2
    assert "characters not in the vocabulary: '#'" in capsys.readouterr().err


def test_trace_of_a_char_rnn_run(rnn_run, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    rows, out = trace_rows(capsys, rnn_run)
    assert len(rows) == 3 and "Embedding(65, 16)" in rows[0] and "LSTM(16)" in rows[1] and "Dense(65)" in rows[2]


def test_a_streams_run_is_inspected_from_a_zero_carry(tmp_path, capsys, monkeypatch, shakespeare_data):
    """A --windows streams run trains Stateful layers over its 8 streams; eval, trace, sample and doctor
    read it as the plain layers it holds (the same params), on any number of windows."""
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    out = tmp_path / "streams"
    assert cli.main(["train", "shakespeare", *TINY, "--windows", "streams", "--steps", "10", "--out", str(out),
                     "--quiet"]) == 0
    run = fnnet.load_run(out)
    assert [layer_kind(layer) for layer in layer_children(run.model)] == ["Embedding", "LSTM", "Dense"]
    assert run.model_state == ()
    trace = run.trace(3)                                    # 3 windows, not the 8 streams it trained on
    assert len(trace.x) == 3 and "LSTM(16)" in trace.layers[1].label
    assert cli.main(["eval", str(out)]) == 0 and "matches metrics.json" in capsys.readouterr().out
    cli.main(["doctor", str(out)])                          # a 16-unit LSTM may fail to memorise a batch
    assert "✓ gradcheck at these parameters" in capsys.readouterr().out


def test_resume_continues_and_refuses_another_model(rnn_run, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    out = ["--out", str(rnn_run)]
    assert cli.main(["train", "shakespeare", "--model", "gru", "--steps", "30", *out, "--resume"]) == 2
    assert "holds a run of --model lstm; --model gru would be another model" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--steps", "30", "--hidden", "32", *out, "--resume"]) == 2
    assert "hidden: 16 -> 32" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--steps", "30", *out, "--resume"]) == 0   # its own model, flags
    assert "resumed at step 20: 10 steps in this session" in capsys.readouterr().out
    metrics = json.loads((rnn_run / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["history"]["step"] == [10, 20, 30]


def _tiny_config(**changes):
    return dict(char_rnn.DEFAULTS, layers=1, hidden=8, seq_len=8, batch_size=4, steps=6, vocab="abcdefghij",
                **changes)


def test_resume_of_a_streams_run_continues_bit_for_bit(tmp_path):
    """The carry each stream keeps is in the checkpoint (model state): 3 + 3 steps equal 6."""
    model, optimizer, options = char_rnn.recipe(_tiny_config(windows="streams"))
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (400,), 0, 10), np.int32)
    common = dict(batch_size=4, eval_interval=3, eval_batches=1, key=jax.random.PRNGKey(0), verbose=False, **options)
    whole, _ = language.fit_language_model(model, optimizer, tokens, tokens[:100], steps=6, **common)
    language.fit_language_model(model, optimizer, tokens, tokens[:100], steps=3, checkpoint_dir=tmp_path, **common)
    resumed, history = language.fit_language_model(model, optimizer, tokens, tokens[:100], steps=6,
                                                   checkpoint_dir=tmp_path, resume=True, **common)
    assert history.step == [3, 6] and int(resumed.step) == 6
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), (whole.params, whole.model_state),
                                     (resumed.params, resumed.model_state)))


def test_streams_keep_the_carry_so_windows_read_as_one_long_sequence():
    """Stateful layers over the consecutive windows of stream_windows give the logits of the plain model
    run over each stream's whole text."""
    batch, window, steps = 3, 5, 4
    model = charrnn.CharRNN(charrnn.CharRNNConfig(vocab_size=10, num_layers=2, hidden=6, stream_batch=batch))
    plain = charrnn.CharRNN(charrnn.CharRNNConfig(vocab_size=10, num_layers=2, hidden=6))
    _, params, state = init_with_state(model, jax.random.PRNGKey(0), (window,))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (200,), 0, 10)
    apply = jax.jit(lambda p, s, v: apply_with_state(model, p, s, v, train=True))   # one program for every window
    pieces = []
    for step in range(steps):
        x, y = language.stream_windows(tokens, step, batch, window)
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        logits, state = apply(params, state, x)
        pieces.append(logits)
    part = (200 - 1) // (batch * window) * window
    whole = jnp.stack([tokens[n * part: n * part + steps * window] for n in range(batch)])
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), jax.jit(plain.apply)(params, whole), atol=1e-5)


def test_generate_with_the_carry_equals_running_the_whole_text_again():
    """Greedy sampling (top_k=1) hands the carry on, one character per step: each character is the argmax
    of the model run over the whole text before it."""
    for cell in ("lstm", "gru", "rnn"):
        model = charrnn.CharRNN(charrnn.CharRNNConfig(vocab_size=12, cell=cell, num_layers=2, hidden=16))
        _, params = model.init(jax.random.PRNGKey(2), (4,))
        prompt = jnp.array([3, 1, 4, 1, 5])
        out = charrnn.generate(model, params, prompt, 12, key=jax.random.PRNGKey(0), top_k=1)
        logits = jax.jit(model.apply)(params, out[None, :-1])[0]
        np.testing.assert_array_equal(jnp.argmax(logits[len(prompt) - 1:], axis=-1), out[len(prompt):])
        again = charrnn.generate(model, params, prompt, 12, key=jax.random.PRNGKey(0), temperature=0.7)
        np.testing.assert_array_equal(again, charrnn.generate(model, params, prompt, 12, key=jax.random.PRNGKey(0),
                                                              temperature=0.7))


@pytest.mark.slow  # the default recipe end to end, in a process of its own with the compiler's usual flags
def test_default_lstm_recipe_reaches_its_validation_target_within_ten_minutes(tmp_path, shakespeare_data):
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}  # not the suite's quick -O0
    env["FNNET_DATA"] = str(shakespeare_data)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fnnet", "train", "shakespeare", "--model", "lstm",
                    "--out", str(tmp_path / "lstm"), "--quiet"], env=env, check=True, timeout=900)
    seconds = time.perf_counter() - started
    metrics = json.loads((tmp_path / "lstm" / "metrics.json").read_text())
    assert metrics["val_loss"] <= char_rnn.TARGET_VAL_LOSS, metrics["val_loss"]
    assert seconds <= 600, f"{seconds:.0f} s (val loss {metrics['val_loss']:.4f})"
    cores = len(os.sched_getaffinity(0))   # one CPU device a core, as many as divide the batch of 50
    assert metrics["devices"] == max(n for n in range(1, cores + 1) if 50 % n == 0), metrics["devices"]
