"""The Tiny Shakespeare recipe: a character-level GPT, as ``fnnet train shakespeare`` runs it (with
``--model lstm``, ``rnn`` or ``gru`` a char-rnn instead: :mod:`fnnet.app.char_rnn`, whose runs this
module trains and samples too).

The defaults are nanoGPT's CPU recipe for ``shakespeare_char`` (4 layers, 4 heads, 128
features, context 64, batch 12, 2,000 iterations, no dropout; AdamW with β₂ = 0.99,
weight decay 0.1 on the matrices, 100 warmup steps, cosine decay to 1e-4, gradients
clipped at norm 1), with a peak learning rate of 2e-3 instead of nanoGPT's 1e-3: with
1e-3 the validation loss ends at 1.88, nanoGPT's own figure; with 2e-3 at about 1.80.

A run folder holds ``config.json`` (these settings and the vocabulary),
``checkpoint.safetensors`` (the whole :class:`fnnet.train.TrainState`), ``metrics.json``
(the exact validation loss over the whole split, the curve, the times), ``loss.png`` and
``sample.txt``. :func:`convert_nanogpt` (``fnnet convert nanogpt``) writes the same kind of
folder from a nanoGPT checkpoint: ``fnnet sample``, ``eval``, ``trace`` and ``train shakespeare
--resume`` (fine-tuning) take it.
"""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import time

import jax

from fnnet import charrnn, datasets, gpt
from fnnet.app import char_rnn, jobs, process
from fnnet.app.recipes import GPT_FORM, RecipeError, gpt_config
from fnnet.datasets import CharText
from fnnet.interop import nanogpt
from fnnet.summaries import summary
from fnnet.train import language
from fnnet.train.checkpointing import save_checkpoint
from fnnet.train.state import init_state

DEFAULTS = {
    "dataset": "shakespeare", "model": "gpt", "loss": "softmax_cross_entropy", "recipe": "nanogpt",
    "layers": 4, "heads": 4, "features": 128, "block_size": 64, "dropout": 0.0,
    "batch_size": 12, "steps": 2000, "lr": 2e-3, "min_lr": 1e-4, "warmup": 100, "weight_decay": 0.1,
    "lr_schedule": "cosine", "cooldown": 0.0, "muon_lr": None, "muon_ns_steps": 5,
    "eval_interval": 250, "eval_batches": 20, "grad": "manual", "seed": 0,
}
"""``fnnet train shakespeare``'s settings: nanoGPT's recipe (those with a flag: ``--layers``,
``--block-size``, ``--steps``, ``--lr``...; ``lr_schedule``, ``cooldown``, ``muon_lr`` and
``muon_ns_steps`` are the recipe's: :func:`fnnet.gpt.optimizer`'s ``schedule``, ``cooldown``,
``muon_lr`` and ``muon_ns_steps``)."""

_SPEEDRUN = {
    "recipe": "speedrun", "features": 96, "heads": 3, "norm": "rms", "rope": True, "qk_norm": True,
    "mlp_activation": "relu2", "logit_cap": 15.0, "zero_init": True,
    "batch_size": 32, "steps": 240, "lr": 3e-3, "min_lr": 1e-4, "warmup": 20, "weight_decay": 0.0,
    "lr_schedule": "wsd", "cooldown": 0.5, "muon_lr": 0.02, "muon_ns_steps": 3,
    "eval_interval": 20, "eval_batches": 8,
}
RECIPES = {"nanogpt": {key: DEFAULTS[key] if key in DEFAULTS else GPT_FORM[key] for key in _SPEEDRUN},
           "speedrun": _SPEEDRUN}
"""``--recipe``'s settings on top of :data:`DEFAULTS` (flags given go on top of them): ``nanogpt``
(the default) and ``speedrun``, the quickest way to a validation loss of 1.88 found on a 2-core CPU
(docs/performance.md has its ablations): the GPT with RMSNorm, rotary positions, QK-norm, ReLU²,
soft-capped logits and zero-initialised projections (:class:`fnnet.gpt.GPTConfig`), Muon on the
hidden matrices (3 Newton-Schulz steps) and AdamW on the rest, warmup-stable-decay; 4 blocks of 96
features in 3 heads, batch 32 of context 64, 240 steps. Its validation estimate (every 20 steps) takes 8
batches of 32 windows of 64 (16,384 tokens; nanoGPT's recipe: 20 of 12, 15,360)."""

MODEL_SETTINGS = ("dataset", "model", "layers", "heads", "features", "block_size", "dropout", "norm", "rope",
                  "qk_norm", "mlp_activation", "logit_cap", "zero_init")
"""The settings that make the model (with ``bias``, ``tie_embeddings`` and ``gelu_approximate``, which
only converted runs record): a resumed run must keep them."""

RECORDED_LATER = {"recipe": "nanogpt", "lr_schedule": "cosine", "cooldown": 0.0, "muon_lr": None, "muon_ns_steps": 5,
                  **{key: value for key, value in GPT_FORM.items() if key in MODEL_SETTINGS}}
"""The settings a run written before they were recorded had (:func:`fnnet.app.jobs.prepare_run_dir`'s
``saved_defaults``): so a resume of such a run continues it, and a ``--recipe`` change is refused."""

TARGET_VAL_LOSS = 1.88
"""nanoGPT's validation loss for its CPU recipe (2,000 iterations, about 3 minutes on a laptop)."""

SAMPLE_PROMPT = "ROMEO:"


_MODEL_FLAGS = {"block_size": "block_size", "num_layers": "layers", "num_heads": "heads", "features": "features",
                "dropout": "dropout"}
"""Each :class:`fnnet.gpt.GPTConfig` field that a flag sets, and its setting (``--layers``: ``num_layers``)."""


def settings_error(config: dict) -> str | None:
    """What is wrong with the settings (a message naming the flag), or None. The model's settings are
    :meth:`fnnet.gpt.GPTConfig.check`'s to judge; the training's are checked here."""
    try:
        gpt.GPTConfig(vocab_size=1, **{field: config[name] for field, name in _MODEL_FLAGS.items()}).check()
    except ValueError as error:
        message = str(error)  # "GPTConfig: FIELD ...": which field, said with its flag
        if "divisible" in message:
            return f"--features {config['features']} is not divisible by --heads {config['heads']}"
        if message.split()[1] == "dropout":
            return f"--dropout must be in [0, 1), got {config['dropout']}"
        name = _MODEL_FLAGS[message.split()[1]]
        return f"--{name.replace('_', '-')} must be a positive integer, got {config[name]!r}"
    for name in ("batch_size", "steps", "eval_interval", "eval_batches"):
        if not isinstance(config[name], int) or config[name] < 1:
            return f"--{name.replace('_', '-')} must be a positive integer, got {config[name]!r}"
    if not config["lr"] > 0:
        return f"--lr must be > 0, got {config['lr']}"
    if config.get("muon_lr") is not None and config["weight_decay"]:
        return (f"--weight-decay {config['weight_decay']:g}: the {config['recipe']} recipe's Muon has "
                f"no weight decay (leave --weight-decay out)")
    return None


def _recipe(config: dict):
    """``(model, optimizer, fit options, target, whose target)`` of a run's settings: the GPT's, or a
    char-rnn's (:func:`fnnet.app.char_rnn.recipe`)."""
    if char_rnn.is_char_rnn(config):
        return (*char_rnn.recipe(config), char_rnn.TARGET_VAL_LOSS, "the char-rnn target")
    return (gpt.GPT(gpt_config(config)), optimizer(config), {"block_size": config["block_size"]}, TARGET_VAL_LOSS,
            "nanoGPT's target")


def optimizer(config: dict):
    """:func:`fnnet.gpt.optimizer` of a GPT run's settings (its recipe's schedule, and Muon if it has ``muon_lr``)."""
    muon_lr = config.get("muon_lr")
    return gpt.optimizer(config["steps"], lr=config["lr"], min_lr=config["min_lr"], warmup=config["warmup"],
                         weight_decay=config["weight_decay"], schedule=config.get("lr_schedule", "cosine"),
                         cooldown=config.get("cooldown", 0.0), muon_lr=muon_lr,
                         muon_ns_steps=config.get("muon_ns_steps", 5),
                         hidden=None if muon_lr is None else gpt.hidden_matrices(gpt_config(config)))


def run_train(config: dict, out_dir: pathlib.Path, *, resume: bool = False, verbose: bool = True,
              sample_tokens: int = 500, overwrite: bool = False, started: float | None = None) -> dict:
    """Trains the GPT of ``config`` (:data:`DEFAULTS` with changes), or the char-rnn
    (:data:`fnnet.app.char_rnn.DEFAULTS` with changes), and writes the run folder.

    A folder that holds a run already needs ``resume`` (same settings but ``steps`` and the
    validation estimates' ``eval_interval`` and ``eval_batches``) or ``overwrite``
    (:func:`fnnet.app.jobs.prepare_run_dir`). A run that has trained no step yet (one
    :func:`convert_nanogpt` wrote) takes any training settings: only the model must stay.

    ``started``: the ``time.perf_counter()`` at which the command started (the CLI's process start), from
    which ``metrics.json``'s ``seconds_to_target`` and ``seconds_before_fit`` count; default: this call's start."""
    started = time.perf_counter() if started is None else started
    out_dir = pathlib.Path(out_dir)
    done_steps = jobs.trained_so_far(out_dir, config, resume=resume, unit="steps")
    ignore = ("steps", "vocab", "eval_interval", "eval_batches")
    if resume and done_steps == 0:  # nothing trained yet (a converted model): the recipe may change
        ignore += tuple(key for key in DEFAULTS if key not in MODEL_SETTINGS)
    replaced = jobs.prepare_run_dir(out_dir, config, resume=resume, overwrite=overwrite, ignore=ignore,
                                    saved_defaults=None if char_rnn.is_char_rnn(config) else RECORDED_LATER)
    data_started = time.perf_counter()
    text = datasets.tiny_shakespeare()
    data_seconds = time.perf_counter() - data_started
    config = dict(config, vocab=text.vocab)
    model, optimizer, fit_options, target, whose = _recipe(config)
    window = char_rnn.validation_window(config)
    config_path = out_dir / jobs.CONFIG_NAME
    if resume and config_path.exists() and json.loads(config_path.read_text()).get("vocab") != text.vocab:
        raise RecipeError(f"--resume: {config_path} was written for another vocabulary")
    with jobs.writing_run(out_dir, config, replaced):
        if verbose:
            print(summary(model, (window,)))
            print(f"tiny shakespeare: {len(text.train):,} training and {len(text.val):,} validation "
                  f"characters, vocabulary {text.vocab_size}")
        mesh = _training_mesh(config, verbose)
        fit_started = time.perf_counter()
        state, history = language.fit_language_model(
            model, optimizer, text.train, text.val, **fit_options, batch_size=config["batch_size"],
            steps=config["steps"], eval_interval=config["eval_interval"], eval_batches=config["eval_batches"],
            key=jax.random.PRNGKey(config["seed"]), grad=config["grad"],
            verbose=verbose, checkpoint_dir=out_dir, resume=resume, overwrite=overwrite, mesh=mesh)
    fit_seconds = time.perf_counter() - fit_started
    result = language.evaluate_language_model(model, state.params, text.val, block_size=window,
                                              model_state=state.model_state)
    total_seconds = time.perf_counter() - started
    train_seconds = float(sum(history.seconds))
    metrics = {
        "dataset": "shakespeare",
        "val_loss": result["loss"],
        "val_tokens": result["tokens"],
        "target_val_loss": target,
        "steps": int(state.step),
        "train_seconds": train_seconds,
        "tokens_per_second": int(state.step) * config["batch_size"] * fit_options["block_size"] / train_seconds,
        "data_seconds": data_seconds,
        "fit_seconds": fit_seconds,
        "seconds_to_val_loss": total_seconds,
        "seconds_before_fit": fit_started - started,
        "seconds_to_target": seconds_to_target(history, target, fit_started - started, done_steps),
        "steps_to_target": steps_to_target(history, target, done_steps),
        "grad": config["grad"],
        "devices": 1 if mesh is None else mesh.devices.size,
        "history": history.to_dict(),
    }
    sample_started = time.perf_counter()
    text_out = sample(model, state.params, config, SAMPLE_PROMPT, sample_tokens, temperature=0.8, seed=0,
                      model_state=state.model_state)
    metrics["sample_seconds"] = time.perf_counter() - sample_started
    timing = (f"{train_seconds:.1f} s training, {total_seconds:.1f} s from loading the data to the final "
              f"validation loss") if not done_steps else \
        (f"resumed at step {done_steps}: {int(state.step) - done_steps} steps in this session "
         f"({fit_seconds:.1f} s), {train_seconds:.1f} s of training in all sessions")
    report = (f"shakespeare: validation loss {result['loss']:.4f} over all {result['tokens']:,} validation "
              f"tokens ({whose} {target}); {int(state.step)} steps, {timing}", f"\n{text_out}\n")
    jobs.finish_run(out_dir, metrics, {jobs.LOSS_NAME: lambda path: history.plot(path, target=target),
                                       jobs.SAMPLE_NAME: lambda path: path.write_text(text_out + "\n")},
                    verbose=verbose, report=report)
    return metrics


def _data_parallel(config: dict) -> bool:
    """Whether a run trains data-parallel over the CPU's cores: a char-rnn on random windows, whose loops
    run on one core a device (docs/performance.md), where the GPT's operations use every core already;
    streams keep each one's carry, which cannot be split."""
    return char_rnn.is_char_rnn(config) and config["windows"] == "random"


def _training_mesh(config: dict, verbose: bool):
    """The mesh a run trains over (:func:`fnnet.app.process.core_mesh`; ``None``: one device), said when
    ``verbose``. Its CPU devices are the process's: ``fnnet train shakespeare`` makes one a core
    (:func:`fnnet.app.process.use_every_core`) in a process of its own, not when called from Python."""
    mesh = process.core_mesh(config["batch_size"]) if _data_parallel(config) else None
    if verbose and mesh is not None:
        devices = mesh.devices.size
        print(f"data-parallel on {devices} CPU devices (one a core), {config['batch_size'] // devices} windows "
              f"each a step")
    return mesh


def seconds_to_target(history, target: float, before_fit: float, resumed_at: int = 0) -> float | None:
    """Wall seconds from the start of the command (``before_fit``: the seconds before training began,
    imports, data loading and compilation counted) to the end of the first validation estimate at most
    ``target``; ``None`` when none is (or for a resumed run: its first session's clock is not kept)."""
    if resumed_at:
        return None
    for val_loss, elapsed in zip(history.val_loss, history.elapsed):
        if val_loss <= target:
            return before_fit + elapsed
    return None


def steps_to_target(history, target: float, resumed_at: int = 0) -> int | None:
    """The optimizer steps done at the first validation estimate at most ``target`` (``None``: none
    was, or a resumed run whose earlier estimates are another session's)."""
    if resumed_at:
        return None
    return next((step for step, val_loss in zip(history.step, history.val_loss) if val_loss <= target), None)


def sample(model, params, config: dict, prompt: str, num_tokens: int, *, temperature: float = 0.8,
           top_k: int | None = None, seed: int = 0, model_state=()) -> str:
    """``prompt`` followed by ``num_tokens`` sampled characters."""

    vocab = CharText(None, None, config["vocab"])
    ids = vocab.encode(prompt)
    if char_rnn.is_char_rnn(config):  # the carry handed on from character to character
        return vocab.decode(charrnn.generate(model, params, ids, num_tokens, key=jax.random.PRNGKey(seed),
                                             temperature=temperature, top_k=top_k))
    out = gpt.generate(model, params, ids, num_tokens, block_size=int(config["block_size"]),
                       key=jax.random.PRNGKey(seed), temperature=temperature, top_k=top_k, state=model_state)
    return vocab.decode(out)


def saved_settings(out_dir) -> dict:
    """The settings of the run in ``out_dir`` (its config.json without the vocabulary), or ``{}``:
    ``fnnet train shakespeare --resume`` keeps those that no flag changes (the size of a converted
    nanoGPT model, its biases and tied head)."""
    path = pathlib.Path(out_dir) / jobs.CONFIG_NAME
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
    except (ValueError, OSError):
        return {}  # prepare_run_dir reports an unreadable config
    return {key: value for key, value in saved.items() if key != "vocab"} if isinstance(saved, dict) else {}


class _PlainData(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: a ``meta.pkl`` cannot run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it holds an object of class {module}.{name}, not only plain data")


def read_meta(path) -> str:
    """The character vocabulary of nanoGPT's ``meta.pkl`` (``{"vocab_size", "itos", "stoi"}``, as
    its ``data/shakespeare_char/prepare.py`` writes it): ``itos[0] + itos[1] + ...``."""
    path = pathlib.Path(path)
    try:
        meta = _PlainData(io.BytesIO(path.read_bytes())).load()
    except OSError as error:
        raise RecipeError(f"--meta {path}: cannot read it ({error.strerror or error})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise RecipeError(f"--meta {path}: not a nanoGPT meta.pkl ({error})") from None
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or sorted(itos) != list(range(len(itos))) or \
            not all(isinstance(c, str) and len(c) == 1 for c in itos.values()):
        raise RecipeError(f"--meta {path}: expected a dict with 'itos' mapping 0..V-1 to single characters "
                          f"(nanoGPT's character-level meta.pkl)")
    return "".join(itos[i] for i in range(len(itos)))


def convert_nanogpt(checkpoint_path, out_dir, *, meta=None, overwrite: bool = False, verbose: bool = True) -> dict:
    """Writes a run folder from nanoGPT's ``ckpt.pt`` (:func:`fnnet.interop.from_nanogpt`):
    config.json (the model's size and form, the vocabulary, where it came from) and a checkpoint
    with its params and a fresh optimizer state at step 0, so that ``fnnet train shakespeare
    --resume --steps N`` fine-tunes it. Returns the config.

    The vocabulary is ``meta``'s (nanoGPT's ``meta.pkl``), or without it Tiny Shakespeare's 65
    characters, which the checkpoint's vocabulary size must then equal.
    """
    out_dir = pathlib.Path(out_dir)
    replaced = jobs.prepare_run_dir(out_dir, {}, resume=False, overwrite=overwrite, can_resume=False)
    checkpoint = nanogpt.read_checkpoint(checkpoint_path)
    model, params, config = nanogpt.from_nanogpt(checkpoint, name=str(checkpoint_path))  # errors name the file
    if meta is not None:
        vocab = read_meta(meta)
    else:
        vocab = datasets.tiny_shakespeare().vocab
        if config.vocab_size != len(vocab):
            raise RecipeError(f"{checkpoint_path}: a vocabulary of {config.vocab_size} tokens, not Tiny Shakespeare's "
                              f"{len(vocab)} characters; pass --meta with the meta.pkl of the data it was trained on")
    if len(vocab) != config.vocab_size:
        raise RecipeError(f"--meta {meta}: {len(vocab)} characters, but {checkpoint_path} has a vocabulary "
                          f"of {config.vocab_size}")
    run_config = dict(DEFAULTS, layers=config.num_layers, heads=config.num_heads, features=config.features,
                      block_size=config.block_size, dropout=config.dropout, bias=config.bias,
                      tie_embeddings=config.tie_embeddings, gelu_approximate=config.gelu_approximate,
                      vocab=vocab, converted_from={"nanogpt": str(checkpoint_path),
                                                   "iter_num": int(checkpoint.get("iter_num", 0))})
    optimizer = gpt.optimizer(run_config["steps"], lr=run_config["lr"], min_lr=run_config["min_lr"],
                              warmup=run_config["warmup"], weight_decay=run_config["weight_decay"])
    state = init_state(model, optimizer, jax.random.PRNGKey(run_config["seed"]), (config.block_size,), params)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs.clear_run_files(replaced)
    (out_dir / jobs.CONFIG_NAME).write_text(json.dumps(run_config, indent=2))
    save_checkpoint(out_dir / jobs.CHECKPOINT_NAME, state, {"history": language.LanguageHistory().to_dict()})
    if verbose:
        print(summary(model, (config.block_size,)))
        print(f"wrote {out_dir / jobs.CONFIG_NAME} and {out_dir / jobs.CHECKPOINT_NAME}: nanoGPT's model "
              f"(iteration {run_config['converted_from']['iter_num']}) as an fnnet run; try "
              f"'fnnet sample {out_dir}'")
    return run_config
