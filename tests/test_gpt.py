"""Sequence layers (Embedding, PositionalEmbedding, CausalSelfAttention), the GPT, its data, training and sampling."""

import json
import os
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import datasets, draws, gpt, gradcheck, losses, train
from fnnet.app import cli, shakespeare
from fnnet.train import language
from onnx_checks import assert_run_exports
from test_see_inside import trace_rows

REPO = pathlib.Path(__file__).resolve().parents[1]


# --- the layers (their gradient checks: the catalogue, test_catalogue.py) ----------------------------

def test_embedding_backward_is_a_scatter_add(x64):
    layer = fnnet.Embedding(6, 3)
    _, params = layer.init(jax.random.PRNGKey(0), (4,))
    ids = jnp.array([[1, 1, 5, 0], [5, 5, 5, 1]])                   # repeated rows, unused rows 2-4
    dy = draws.normal(jax.random.PRNGKey(1), (2, 4, 3))
    (grads, dx) = layer.backward(params, layer.forward(params, ids)[1], dy)
    expected = np.zeros((6, 3))
    for i, row in np.ndenumerate(np.asarray(ids)):
        expected[row] += np.asarray(dy)[i]
    np.testing.assert_allclose(grads["w"], expected, rtol=1e-12)
    assert dx.dtype == jax.dtypes.float0 and dx.shape == ids.shape       # no cotangent for integer ids
    assert gradcheck.check_layer(layer, params, ids).passed


def test_layers_under_vmap_match_the_batch():
    config = gpt.GPTConfig(vocab_size=11, block_size=8, num_layers=1, num_heads=2, features=8)
    model = gpt.GPT(config)
    _, params = model.init(jax.random.PRNGKey(0), (8,))
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 8), 0, 11)
    dy = draws.normal(jax.random.PRNGKey(2), (3, 8, 11))

    @jax.jit
    def batched(ids, dy):
        logits, residuals = model.forward(params, ids)
        return logits, model.backward(params, residuals, dy)[0]

    logits, grads = batched(ids, dy)

    def one(example, d):
        y, res = model.forward(params, example)
        return y, model.backward(params, res, d)[0]

    ys, per_example = jax.jit(jax.vmap(one))(ids, dy)
    chex.assert_trees_all_close(ys, logits, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda g: np.asarray(g).sum(0), per_example), grads, rtol=1e-4, atol=1e-6)


def test_attention_is_causal_and_takes_any_length_up_to_the_block(x64):
    layer = fnnet.CausalSelfAttention(2, max_length=8)
    _, params = layer.init(jax.random.PRNGKey(0), (8, 4))
    x = draws.normal(jax.random.PRNGKey(1), (2, 8, 4))
    apply = jax.jit(layer.apply)                                    # one program per length, not op by op
    changed = x.at[:, 5:].set(100.0)                                # the future changes...
    np.testing.assert_allclose(apply(params, x)[:, :5], apply(params, changed)[:, :5], rtol=1e-12)
    short = apply(params, x[:, :3])                                 # ...a shorter sequence is a prefix
    np.testing.assert_allclose(short, apply(params, x)[:, :3], rtol=1e-12)
    huge = apply(params, 1e4 * x)                                   # masked -inf entries stay finite
    chex.assert_tree_all_finite(huge)
    chex.assert_tree_all_finite(jax.jit(lambda p, v: layer.backward(p, layer.forward(p, v)[1], jnp.ones_like(v)))(
        params, 1e4 * x))


def test_softmax_cross_entropy_on_sequences_is_the_mean_over_tokens(x64):
    logits = draws.normal(jax.random.PRNGKey(0), (3, 5, 7))
    labels = jax.random.randint(jax.random.PRNGKey(1), (3, 5), 0, 7)
    loss = losses.softmax_cross_entropy
    @jax.jit  # one program, not one per operation
    def values(logits, labels):
        return (loss.value(logits.reshape(15, 7), labels.reshape(15)), loss.value(logits, labels),
                loss.grad(logits, labels), jax.grad(loss.value)(logits, labels))

    flat, value, grad, reference = values(logits, labels)
    np.testing.assert_allclose(value, flat, rtol=1e-12)
    np.testing.assert_allclose(grad, reference, rtol=1e-12)
    assert gradcheck.check_loss(loss, logits, labels).passed


def test_gpt_model_gradcheck_and_manual_equals_autodiff_step(x64):
    """The example's own check: attention and a 2-block GPT against jax.vjp and finite differences."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import shakespeare_gpt
    finally:
        sys.path.remove(str(REPO / "examples"))
    assert shakespeare_gpt.check_gradients(verbose=False) < 1e-10     # raises GradientMismatch if not
    model = gpt.GPT(gpt.GPTConfig(vocab_size=7, block_size=6, num_layers=2, num_heads=2, features=8))
    _, params = model.init(jax.random.PRNGKey(0), (6,))
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, 7)
    targets = jax.random.randint(jax.random.PRNGKey(2), (3, 6), 0, 7)
    manual = jax.jit(fnnet.value_and_grad(model, losses.softmax_cross_entropy))(params, ids, targets)
    reference = jax.jit(fnnet.autodiff_value_and_grad(model, losses.softmax_cross_entropy))(params, ids, targets)
    chex.assert_trees_all_close(manual, reference, rtol=1e-10, atol=1e-14)


def test_a_wrong_attention_backward_is_caught_by_name(x64):
    good = fnnet.CausalSelfAttention(2)

    def backward(params, residuals, dy):  # forgets the softmax's "- Σ dA ⊙ A" term
        grads, dx = good.backward(params, residuals, dy)
        return dict(grads, w_qkv=grads["w_qkv"] * 1.01), dx

    bad = good._replace(backward=backward)
    model = fnnet.serial(fnnet.Embedding(5, 4), bad, fnnet.Dense(5))
    _, params = model.init(jax.random.PRNGKey(0), (6,))
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 6), 0, 5)
    report = gradcheck.check_model(model, losses.softmax_cross_entropy, params, ids, ids,
                                   raise_on_failure=False)
    assert not report.passed and "CausalSelfAttention" in report.culprit


# --- errors that name the layer ---------------------------------------------------------------

def test_bad_inputs_name_the_layer():
    with pytest.raises(ValueError, match=r"CausalSelfAttention\(3 heads\): features 8 are not divisible by num_heads 3"):
        fnnet.CausalSelfAttention(3).init(jax.random.PRNGKey(0), (4, 8))
    with pytest.raises(ValueError, match="GPTConfig: features 130 are not divisible by num_heads 4"):
        gpt.GPT(gpt.GPTConfig(features=130))
    attention = fnnet.CausalSelfAttention(2, max_length=4)
    _, params = attention.init(jax.random.PRNGKey(0), (4, 4))
    with pytest.raises(ValueError, match=r"sequence length 5 is longer than the block size 4"):
        attention.apply(params, jnp.ones((1, 5, 4)))
    model = gpt.GPT(gpt.GPTConfig(vocab_size=5, block_size=4, num_layers=1, num_heads=2, features=4))
    _, params = model.init(jax.random.PRNGKey(0), (4,))
    with pytest.raises(ValueError, match=r"layer 1 \(PositionalEmbedding\): sequence length 6 is longer than the 4 positions"):
        model.apply(params, jnp.zeros((1, 6), jnp.int32))
    with pytest.raises(ValueError, match=r"layer 0 \(Embedding\(5, 4\)\): token id 7 at index \(0, 2\) is outside the vocabulary \[0, 5\)"):
        model.apply(params, jnp.array([[1, 2, 7, 0]]))
    with pytest.raises(ValueError, match=r"layer 0 \(Embedding\(5, 4\)\): expects integer token ids, got dtype float32"):
        model.apply(params, jnp.zeros((1, 4), jnp.float32))


def test_out_of_vocabulary_ids_inside_jit_give_nan_not_a_wrong_row():
    embed = fnnet.Embedding(5, 2)
    _, params = embed.init(jax.random.PRNGKey(0), (3,))
    y = jax.jit(embed.apply)(params, jnp.array([[0, 5, 2]]))
    assert np.isnan(y[0, 1]).all() and np.isfinite(y[0, [0, 2]]).all()


def test_fit_language_model_checks_tokens_on_the_host():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=5, block_size=4, num_layers=1, num_heads=1, features=4))
    good = np.arange(100) % 5
    bad = good.copy()
    bad[37] = 9
    optimizer = gpt.optimizer(2)
    with pytest.raises(ValueError, match=r"\(train_tokens\): token id 9 at position 37 is outside the model's vocabulary \[0, 5\)"):
        language.fit_language_model(model, optimizer, bad, good, block_size=4, steps=2, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"\(val_tokens\): 3 tokens, need at least 5"):
        language.fit_language_model(model, optimizer, good, good[:3], block_size=4, steps=2,
                                    key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="token ids must be integers"):
        language.fit_language_model(model, optimizer, good.astype(np.float32), good, block_size=4, steps=2,
                                    key=jax.random.PRNGKey(0))


# --- data ------------------------------------------------------------------------------------

def test_tiny_shakespeare_split_and_vocabulary(shakespeare_data):
    text = datasets.tiny_shakespeare(path=shakespeare_data / "tinyshakespeare")
    assert (len(text.train), len(text.val), text.vocab_size) == (1_003_854, 111_540, 65)  # nanoGPT's figures
    assert text.decode(text.train[:14]) == "First Citizen:"
    assert text.decode(text.encode("ROMEO:\nO")) == "ROMEO:\nO"
    with pytest.raises(ValueError, match=r"characters not in the vocabulary: '#'"):
        text.encode("#3")


def test_tiny_shakespeare_search_order_and_checksum(tmp_path, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FNNET_OFFLINE", "1")
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    assert datasets.tiny_shakespeare().vocab_size == 65                      # $FNNET_DATA/tinyshakespeare
    monkeypatch.setenv("FNNET_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(datasets.DataError, match="tinyshakespeare: input.txt not found"):
        datasets.tiny_shakespeare()
    cached = tmp_path / "cache" / "tinyshakespeare"
    cached.mkdir(parents=True)
    (cached / "input.txt").write_text("To be, or not to be\n" * 10)                # the cache, but not the file
    with pytest.raises(datasets.DataError, match="SHA-256 .* does not match the published tinyshakespeare"):
        datasets.tiny_shakespeare()
    assert datasets.tiny_shakespeare(verify=False).vocab_size == len(set("To be, or not to be\n"))


# --- training, resuming, sampling ---------------------------------------------------------------

def test_random_windows_are_shifted_by_one():
    tokens = jnp.arange(1000, dtype=jnp.int32)
    x, y = jax.jit(language.random_windows, static_argnums=(2, 3))(tokens, jax.random.PRNGKey(0), 16, 8)
    assert x.shape == y.shape == (16, 8)
    np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(np.diff(np.asarray(x), axis=1), 1)


def _tiny_setup():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, 600).astype(np.int32)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=6, block_size=8, num_layers=1, num_heads=2, features=8, dropout=0.1))
    return model, tokens


def test_resume_is_bit_exact(tmp_path):
    model, tokens = _tiny_setup()
    kwargs = dict(block_size=8, batch_size=4, eval_interval=5, eval_batches=2, key=jax.random.PRNGKey(3),
                  verbose=False)
    straight, _ = language.fit_language_model(model, gpt.optimizer(10), tokens, tokens, steps=10, **kwargs)
    language.fit_language_model(model, gpt.optimizer(10), tokens, tokens, steps=5, checkpoint_dir=tmp_path,
                                **kwargs)
    resumed, history = language.fit_language_model(model, gpt.optimizer(10), tokens, tokens, steps=10,
                                                   checkpoint_dir=tmp_path, resume=True, **kwargs)
    assert history.step == [5, 10]
    chex.assert_trees_all_equal(resumed.params, straight.params)


def test_generate_greedy_matches_a_plain_loop_and_keeps_the_prompt():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=6, block_size=5, num_layers=1, num_heads=2, features=8))
    _, params = model.init(jax.random.PRNGKey(0), (5,))
    prompt = jnp.array([1, 2, 3], jnp.int32)
    out = gpt.generate(model, params, prompt, 6, block_size=5, key=jax.random.PRNGKey(0), top_k=1)
    ids = [1, 2, 3]
    apply = jax.jit(model.apply)
    for _ in range(6):                               # greedy decoding, one full forward per token
        window = jnp.array(ids[-5:])[None]
        ids.append(int(jnp.argmax(apply(params, window)[0, -1])))
    assert out.tolist() == ids
    again = gpt.generate(model, params, prompt, 6, block_size=5, key=jax.random.PRNGKey(7), temperature=0.8)
    assert again[:3].tolist() == [1, 2, 3] and len(again) == 9 and int(again.max()) < 6
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gpt.generate(model, params, prompt, 3, block_size=5, key=jax.random.PRNGKey(0), temperature=0)


def _run_example(shakespeare_data, out, *args, quick_compile=False):
    """The example in a fresh interpreter, with XLA's default optimisation unless ``quick_compile``: the
    suite's flags compile fast and run slowly, which pays on a short run of a small GPT (300 steps: 11.5
    instead of 13.3 s of CPU, the same validation loss to the last digit), not on the full one."""
    env = dict(os.environ, FNNET_DATA=str(shakespeare_data))
    if not quick_compile:
        env.pop("XLA_FLAGS", None)
    result = subprocess.run([sys.executable, str(REPO / "examples" / "shakespeare_gpt.py"), "--out", str(out), *args],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text()), result.stdout


def test_example_short_run_lowers_the_validation_loss(shakespeare_data, tmp_path):
    """The example with a small GPT for 300 steps: from ln(65) = 4.17 to below 2.45 nats per
    character on the whole validation split, better than any model with one character of context
    can do (character frequencies give 3.35, the best bigram table 2.48): it uses the context."""
    metrics, stdout = _run_example(shakespeare_data, tmp_path, "--steps", "300", "--layers", "2", "--heads", "2",
                                   "--features", "64", "--block-size", "32", "--batch-size", "16", "--lr", "3e-3",
                                   "--warmup", "20", "--eval-interval", "100", "--no-gradcheck", quick_compile=True)
    assert metrics["val_loss"] < 2.45, metrics          # (the example's gradient check is tested above)
    assert metrics["history"]["val_loss"][0] > metrics["history"]["val_loss"][-1]
    assert (tmp_path / "sample.txt").read_text().startswith("ROMEO:") and "ROMEO:" in stdout


@pytest.mark.slow
def test_example_full_run_reaches_nanogpt_validation_loss(shakespeare_data, tmp_path):
    metrics, _ = _run_example(shakespeare_data, tmp_path)
    assert metrics["val_loss"] <= 1.88, metrics


# --- the command line -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_run(tmp_path_factory, shakespeare_data):
    out = tmp_path_factory.mktemp("runs") / "shakespeare"
    with pytest.MonkeyPatch.context() as env:   # a module fixture: no monkeypatch of its own
        env.setenv("FNNET_DATA", str(shakespeare_data))
        code = cli.main(["train", "shakespeare", "--steps", "40", "--eval-interval", "20", "--eval-batches", "2",
                         "--layers", "1", "--heads", "2", "--features", "16", "--block-size", "16",
                         "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_cli_export_of_the_gpt_gives_its_logits_in_onnxruntime(text_run, capsys, monkeypatch, shakespeare_data, tmp_path):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    assert_run_exports(text_run, tmp_path / "gpt.onnx", capsys)   # int64 ids in, (batch, T, 65) logits out


def test_seconds_to_target_is_the_first_interval_at_or_below_it():
    history = language.LanguageHistory(step=[250, 500, 750], train_loss=[2.5, 2.0, 1.8], val_loss=[2.6, 1.88, 1.7],
                                       seconds=[5.0, 4.0, 4.0], elapsed=[7.0, 11.5, 16.0])
    assert shakespeare.seconds_to_target(history, 1.88, before_fit=0.5) == 12.0     # the end of the second interval
    assert shakespeare.seconds_to_target(history, 1.5, before_fit=0.5) is None      # never reached
    assert shakespeare.seconds_to_target(history, 1.88, before_fit=0.5, resumed_at=250) is None


def test_cli_train_eval_and_sample(text_run, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    metrics = json.loads((text_run / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["val_loss"] < 3.70   # 3.63 measured (a uniform guess: ln 65 = 4.17)
    assert metrics["seconds_to_target"] is None and len(metrics["history"]["elapsed"]) == 2   # 1.88 not reached
    assert (text_run / "loss.png").stat().st_size > 0 and (text_run / "sample.txt").read_text().startswith("ROMEO:")
    assert cli.main(["eval", str(text_run)]) == 0
    assert "matches metrics.json" in capsys.readouterr().out
    assert cli.main(["sample", str(text_run), "--prompt", "ROMEO:", "--tokens", "50", "--temperature", "0.8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) >= 6 + 40
    run = fnnet.load_run(text_run)
    assert run.sample("ROMEO:", 50, temperature=0.8) == out.rstrip("\n")[: len(run.sample("ROMEO:", 50))]


def test_cli_text_errors(text_run, capsys, tmp_path):
    assert cli.main(["sample", str(text_run), "--prompt", "ROMEO#"]) == 2
    assert "characters not in the vocabulary: '#'" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--hidden", "32", "--out", str(tmp_path / "r")]) == 2
    assert "--hidden is not used by shakespeare" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--features", "30", "--heads", "4", "--out", str(tmp_path / "r")]) == 2
    assert "--features 30 is not divisible by --heads 4" in capsys.readouterr().err
    assert cli.main(["train", "mnist", "--steps", "3"]) == 2
    assert "--steps is for the GPT (shakespeare), not mnist" in capsys.readouterr().err
    assert cli.main(["sample", str(text_run), "--temperature", "0"]) == 2
    assert "--temperature must be > 0" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.int32))
    assert cli.main(["predict", str(text_run), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.npy")]) == 2
    assert "is a language model" in capsys.readouterr().err


def test_resuming_a_finished_run_trains_nothing_and_says_so(text_run, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    before = json.loads((text_run / "metrics.json").read_text())
    flags = ["--eval-interval", "20", "--eval-batches", "2", "--layers", "1", "--heads", "2", "--features", "16",
             "--block-size", "16", "--out", str(text_run)]
    assert cli.main(["train", "shakespeare", "--steps", "40", *flags]) == 2          # no silent replacement
    assert "holds a run already" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--steps", "20", *flags, "--resume"]) == 2
    assert "has trained 40 steps already" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--steps", "40", "--layers", "2", *flags[:4], *flags[6:],
                     "--resume"]) == 2
    assert "layers: 1 -> 2" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--steps", "40", *flags, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed at step 40: 0 steps in this session" in out and "from loading the data" not in out
    after = json.loads((text_run / "metrics.json").read_text())
    assert after["val_loss"] == before["val_loss"] and after["steps"] == 40


def test_cli_trace_of_a_trained_gpt(text_run, capsys, shakespeare_data, monkeypatch):
    """fnnet trace RUN_DIR on the GPT: the walk enters both residual branches of the block."""
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    rows, out = trace_rows(capsys, text_run, "--layer", "2/0/1/0/1")
    assert len(rows) == 16 and "Embedding(65, 16)" in rows[0] and "CausalSelfAttention" in rows[4]
    assert "2/1/1/0/2" in rows[10] and "Gelu" in rows[10] and "== layer 2/0/1/0/1 (" in out


@pytest.mark.slow  # ~25 s: the doctor's float64 gradcheck and overfit of the GPT
def test_cli_doctor_of_a_trained_gpt_flags_nothing(text_run, capsys, shakespeare_data, monkeypatch):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    assert cli.main(["doctor", str(text_run)]) == 0
    out = capsys.readouterr().out
    assert "every check passed" in out and "✗" not in out, out


# generate checks its prompt -----------------------------------------------------------------

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
