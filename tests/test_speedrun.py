"""The speedrun recipe: its GPT form, Muon on the hidden matrices only, the warmup-stable-decay
schedule, ``fnnet train shakespeare --recipe speedrun`` (its settings, steps and seconds to the
target in metrics.json, a resume that refuses a recipe change), and (slow) the record itself."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnet import draws, gpt
from fnnet.app import cli, shakespeare
from fnnet.train import language

SPEEDRUN_FORM = dict(norm="rms", rope=True, qk_norm=True, mlp_activation="relu2", logit_cap=15.0, zero_init=True)


def test_the_speedrun_form_has_no_positional_table_and_zero_projections():
    config = gpt.GPTConfig(vocab_size=11, block_size=8, num_layers=2, num_heads=2, features=8, **SPEEDRUN_FORM)
    model = gpt.GPT(config)
    _, params = model.init(jax.random.PRNGKey(0), (8,))
    names = [layer.name for layer in model.children]
    assert names[0] == "Embedding(11, 8)" and names[-2:] == ["Dense(11)", "SoftCap(15)"]
    assert not any(name.startswith("PositionalEmbedding") for name in names)   # rotary positions instead
    block = params[1]                                   # ((attention residual), (mlp residual)) of block 1
    leaves = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(block)}
    zero = [key for key, leaf in leaves.items() if leaf.ndim == 2 and not jnp.any(leaf)]
    assert len(zero) == 2, zero                          # w_out of attention and the MLP's second Dense
    logits = jax.jit(model.apply)(params, jnp.zeros((3, 8), jnp.int32))
    assert logits.shape == (3, 8, 11) and float(jnp.max(jnp.abs(logits))) < 15.0


def test_hidden_matrices_are_the_blocks_2d_weights_alone():
    config = gpt.GPTConfig(vocab_size=11, block_size=8, num_layers=2, num_heads=2, features=8, **SPEEDRUN_FORM)
    hidden = gpt.hidden_matrices(config)
    _, params = gpt.GPT(config).init(jax.random.PRNGKey(0), (8,))
    chosen = [leaf.shape for leaf, is_hidden in zip(jax.tree.leaves(params), jax.tree.leaves(hidden)) if is_hidden]
    assert sorted(chosen) == sorted([(8, 24), (8, 8), (8, 32), (32, 8)] * 2)  # q/k/v, out, MLP up, MLP down
    assert not hidden[0]["w"] and not hidden[-2]["w"]   # the embedding table and the head go to AdamW


def test_muon_orthogonalises_the_hidden_matrices_and_adamw_takes_the_rest():
    config = gpt.GPTConfig(vocab_size=11, block_size=8, num_layers=1, num_heads=2, features=8, **SPEEDRUN_FORM)
    _, params = gpt.GPT(config).init(jax.random.PRNGKey(0), (8,))
    def gradient(p):  # columns of scales 1 to 100: far from orthogonal
        g = draws.normal(jax.random.PRNGKey(p.size), p.shape)
        return g * jnp.logspace(0, 2, p.shape[-1])[(None,) * (p.ndim - 1)] if p.ndim == 2 else g

    grads = jax.tree.map(gradient, params)
    optimizer = gpt.optimizer(10, lr=1e-2, warmup=0, muon_lr=0.1, hidden=gpt.hidden_matrices(config),
                              schedule="wsd", clip=1e9)
    updates, _ = jax.jit(optimizer.update)(grads, jax.jit(optimizer.init)(params), params)
    flat_updates, flat_hidden = jax.tree.leaves(updates), jax.tree.leaves(gpt.hidden_matrices(config))
    for update, grad, is_hidden in zip(flat_updates, jax.tree.leaves(grads), flat_hidden):
        if is_hidden:   # Newton-Schulz: the singular values pulled together (a raw gradient's are spread)
            singular = np.linalg.svd(np.asarray(update), compute_uv=False)
            raw = np.linalg.svd(np.asarray(grad), compute_uv=False)
            assert singular.max() / singular.min() < 3.0 < 4.0 < raw.max() / raw.min()
        else:           # Nesterov Adam's first step: -lr · (1 + β₁(1-β₁)/(1-β₁²)) · sign(g), every entry alike
            np.testing.assert_allclose(np.abs(np.asarray(update)), 1e-2 * (1 + 0.9 * 0.1 / 0.19), rtol=1e-3)


def test_weight_decay_with_muon_is_refused_not_ignored(capsys, tmp_path):
    config = gpt.GPTConfig(vocab_size=11, block_size=8, num_layers=1, num_heads=2, features=8, **SPEEDRUN_FORM)
    with pytest.raises(ValueError, match="weight_decay=0.1 with muon_lr"):
        gpt.optimizer(10, muon_lr=0.1, hidden=gpt.hidden_matrices(config), weight_decay=0.1)
    gpt.optimizer(10, muon_lr=0.1, hidden=gpt.hidden_matrices(config), weight_decay=0.0)
    out = tmp_path / "run"
    assert cli.main(["train", "shakespeare", "--recipe", "speedrun", "--weight-decay", "0.1", "--out", str(out)]) == 2
    assert "--weight-decay 0.1: the speedrun recipe's Muon has no weight decay" in capsys.readouterr().err
    assert not out.exists()


def test_warmup_stable_decay_schedule():
    schedule = gpt.learning_rate_schedule(100, 1.0, min_lr=0.1, warmup=10, schedule="wsd", cooldown=0.3)
    assert [round(float(schedule(s)), 4) for s in (0, 5, 10, 40, 70, 85, 100)] == [0.0, 0.5, 1.0, 1.0, 1.0, 0.55, 0.1]
    with pytest.raises(ValueError, match="schedule must be one of cosine, wsd"):
        gpt.learning_rate_schedule(100, 1.0, min_lr=0.1, warmup=10, schedule="linear")


def test_steps_to_target_is_the_first_estimate_at_or_below_it():
    history = language.LanguageHistory(step=[25, 50, 75], train_loss=[2.5, 2.0, 1.8], val_loss=[2.6, 1.88, 1.7],
                                       seconds=[2.0, 2.0, 2.0], elapsed=[4.0, 6.2, 8.4])
    assert shakespeare.steps_to_target(history, 1.88) == 50
    assert shakespeare.steps_to_target(history, 1.5) is None
    assert shakespeare.steps_to_target(history, 1.88, resumed_at=25) is None


@pytest.fixture(scope="module")
def speedrun_run(tmp_path_factory, shakespeare_data):
    out = tmp_path_factory.mktemp("runs") / "speedrun"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FNNET_DATA", str(shakespeare_data))
        code = cli.main(["train", "shakespeare", "--recipe", "speedrun", "--steps", "40", "--eval-interval", "20",
                         "--layers", "1", "--features", "24", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_cli_speedrun_recipe_records_its_settings_and_the_target(speedrun_run):
    config = json.loads((speedrun_run / "config.json").read_text())
    assert config["recipe"] == "speedrun" and config["steps"] == 40 and config["layers"] == 1   # flags on top
    assert {key: config[key] for key in SPEEDRUN_FORM} == SPEEDRUN_FORM
    assert config["muon_lr"] == shakespeare.RECIPES["speedrun"]["muon_lr"] and config["lr_schedule"] == "wsd"
    metrics = json.loads((speedrun_run / "metrics.json").read_text())
    assert metrics["steps_to_target"] is None and metrics["seconds_to_target"] is None   # 40 steps: far from 1.88
    assert metrics["val_loss"] < 3.35       # 3.16 measured: it learns (a uniform guess: ln 65 = 4.17)
    elapsed = metrics["history"]["elapsed"]
    assert 0 < elapsed[0] < elapsed[1] <= metrics["fit_seconds"]   # counted from fit's call: compilation in


def test_cli_speedrun_resume_refuses_another_recipe_and_misplaced_recipes(speedrun_run, capsys, shakespeare_data,
                                                                          monkeypatch, tmp_path):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    flags = ["--steps", "60", "--eval-interval", "20", "--layers", "1", "--features", "24", "--resume"]
    assert cli.main(["train", "shakespeare", "--recipe", "nanogpt", *flags, "--out", str(speedrun_run)]) == 2
    assert "recipe: 'speedrun' -> 'nanogpt'" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--model", "lstm", "--recipe", "speedrun",
                     "--out", str(tmp_path / "r")]) == 2
    assert "--recipe is for shakespeare's GPT (nanogpt, speedrun), not --model lstm" in capsys.readouterr().err
    assert cli.main(["train", "shakespeare", "--recipe", "fast", "--out", str(tmp_path / "r")]) == 2
    assert "--recipe fast is not one of shakespeare's GPT recipes (nanogpt, speedrun)" in capsys.readouterr().err
    assert cli.main(["train", "mnist", "--model", "cnn", "--recipe", "speedrun", "--out", str(tmp_path / "r")]) == 2
    assert "--recipe speedrun is not a recipe of --model cnn" in capsys.readouterr().err


def test_a_run_saved_before_recipes_resumes_as_nanogpt_and_refuses_the_speedrun(tmp_path):
    """A config.json without recipe, norm, rope... (fnnet before the speedrun) is a nanoGPT-recipe run:
    resuming it with today's settings continues it; with --recipe speedrun's is refused."""
    from fnnet.app import jobs
    from fnnet.app.recipes import RecipeError
    today = dict(shakespeare.DEFAULTS, vocab="abc")
    old = {key: value for key, value in today.items() if key not in shakespeare.RECORDED_LATER}
    (tmp_path / jobs.CONFIG_NAME).write_text(json.dumps(old))
    (tmp_path / jobs.CHECKPOINT_NAME).write_bytes(b"a checkpoint")
    assert jobs.prepare_run_dir(tmp_path, today, resume=True, overwrite=False,
                                saved_defaults=shakespeare.RECORDED_LATER) == []
    speedrun = dict(today, **shakespeare.RECIPES["speedrun"])
    with pytest.raises(RecipeError, match="recipe: 'nanogpt' -> 'speedrun'"):
        jobs.prepare_run_dir(tmp_path, speedrun, resume=True, overwrite=False,
                             ignore=("steps", "eval_interval", "eval_batches"), saved_defaults=shakespeare.RECORDED_LATER)


def test_run_train_called_as_a_library_counts_from_its_own_start(tmp_path, shakespeare_data, monkeypatch):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    config = {**shakespeare.DEFAULTS, **shakespeare.RECIPES["speedrun"], "layers": 1, "features": 12, "steps": 10,
              "eval_interval": 5, "eval_batches": 1, "block_size": 16}
    metrics = shakespeare.run_train(config, tmp_path / "run", verbose=False, sample_tokens=0)
    assert metrics["steps"] == 10 and 0 < metrics["seconds_before_fit"] < metrics["seconds_to_val_loss"]
    assert metrics["steps_to_target"] is None and metrics["seconds_to_target"] is None


@pytest.mark.slow
def test_the_speedrun_recipe_reaches_the_target(shakespeare_data, tmp_path, monkeypatch):
    """The record from the command line: validation 1.88 within its steps (about 20 s here; the time is
    benchmarks/speedrun.py's to measure, not a test's)."""
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    assert cli.main(["train", "shakespeare", "--recipe", "speedrun", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps_to_target"] is not None and metrics["seconds_to_target"] is not None, metrics["history"]
    assert metrics["val_loss"] <= 1.90     # the exact loss over the whole split, after the last step


def test_the_speedrun_benchmark_tabulates_steps_and_seconds_to_each_target(repo_root, monkeypatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    speedrun = pytest.importorskip("speedrun")
    reached = {"curve": [(20, 2.3, 4.0), (40, 1.95, 6.0), (60, 1.87, 8.0)], "final": 1.85, "tokens_per_second": 3e4}
    missed = {"curve": [(20, 2.4, 4.5), (40, 2.1, 7.0)], "final": 2.05, "tokens_per_second": 2e4}
    assert speedrun.to_target(reached, 1.88) == (60, 8.0) and speedrun.to_target(reached, 2.0) == (40, 6.0)
    assert speedrun.to_target(missed, 1.88) == (None, None)
    assert speedrun.spread([200, 240, 220]) == "220 ± 20" and speedrun.spread([17.8, 16.0]) == "16.9 ± 0.9"
    assert speedrun.spread([None, 8.0]) == "1/2 not reached (the others: 8.000)"
    rows = speedrun.table({"speedrun": [reached, reached], "default": [missed]}).splitlines()
    assert rows[2] == "| speedrun | 2 | 60 ± 0 | 8.000 ± 0.000 | 40 ± 0 | 6.000 ± 0.000 | 1.850 ± 0.000 | 30,000 ± 0 |"
    assert "1/1 not reached" in rows[3]
    for overrides in speedrun.ABLATIONS.values():   # each takes out one setting of the recipe
        assert set(overrides) <= set(shakespeare.RECIPES["speedrun"])
        assert all(shakespeare.RECIPES["speedrun"][key] != value for key, value in overrides.items())
