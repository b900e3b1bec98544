"""From the command line's flags to settings: what ``fnnet train DATASET`` (and ``gradcheck``,
``summary``, ``doctor`` with the same flags) resolve them to, each misfit flag a UsageError that
names it; and output paths refused before any work."""

from __future__ import annotations

import os
import pathlib

from fnnet.app import char_rnn, process, recipes, shakespeare
from fnnet.app.choices import CHAR_RNN_MODELS, MODELS, TEXT as _TEXT, TEXT_MODELS, TEXT_RECIPE_NAMES
from fnnet.app.recipes import RecipeError
from fnnet.app.usage import UsageError


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def check_output_path(path, option: str, *, folder: bool, example: str = "predictions.npy") -> pathlib.Path:
    """Refuses, before any work, an output ``path`` that cannot be written: an existing file
    where a folder is wanted (or the reverse: the message suggests ``path / example``), a path
    under a file, or a read-only folder."""
    path = pathlib.Path(path)
    if os.path.exists(path):
        if folder and not os.path.isdir(path):
            raise UsageError(f"{option} {path}: is a file, not a folder")
        if not folder and os.path.isdir(path):
            raise UsageError(f"{option} {path}: is a folder; give a file name such as {path / example}")
        if not os.access(path, os.W_OK | (os.X_OK if folder else 0)):
            raise UsageError(f"{option} {path}: is not writable")
        return path
    parent = next(p for p in path.absolute().parents if os.path.exists(p))
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: cannot create it, {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot create it, {parent} is not writable")
    return path


def config_from_args(args, dataset: str | None = None) -> dict:
    """The settings of ``fnnet train DATASET`` (``dataset``: by default ``args.dataset``) with these flags
    (:func:`fnnet.app.recipes.settings`); a UsageError naming the flag that does not fit."""
    dataset = dataset or args.dataset
    given = [name for name in _TEXT_FLAGS if getattr(args, name, None) is not None]
    if given:
        owner = f"the GPT ({_TEXT})" if given[0] in _GPT_FLAGS else f"a char-rnn ({_TEXT} --model lstm)"
        raise UsageError(f"--{given[0].replace('_', '-')} is for {owner}, not {dataset}")
    if args.model in TEXT_MODELS:
        raise UsageError(f"--model {args.model} is for {_TEXT}, not {dataset} (--model {', '.join(MODELS)})")
    try:
        return recipes.settings(dataset, args.model, args.recipe,
                                **{name: getattr(args, name) for name in recipes.SETTING_NAMES})
    except RecipeError as error:
        raise UsageError(str(error)) from None


_GPT_FLAGS = ("layers", "heads", "features", "block_size", "dropout", "steps", "eval_interval", "eval_batches")
_GPT_ONLY = ("heads", "features", "block_size", "weight_decay")
"""The GPT's flags that a char-rnn has no use for."""
_RNN_ONLY = ("hidden", "seq_len", "windows")
"""A char-rnn's flags that the GPT has no use for (``--hidden`` is an MLP's flag too)."""
_TEXT_FLAGS = _GPT_FLAGS + ("seq_len", "windows")
"""The flags of ``fnnet train shakespeare`` alone (``--batch-size``, ``--lr``... serve every data set)."""


_IMAGE_FLAGS = ("activation", "epochs", "optimizer", "schedule", "limit", "monitor", "augment")


def _text_model(args, saved: dict) -> str:
    """The model ``fnnet train shakespeare`` trains: ``--model``, or without it the GPT (on ``--resume``,
    the run's own model)."""
    given = [name for name in _IMAGE_FLAGS if getattr(args, name, None) is not None]
    if given:
        raise UsageError(f"--{given[0]} is not used by {_TEXT} (a GPT: --layers, --heads, --features, "
                         f"--block-size, --steps, --batch-size, --lr, --dropout; or --model "
                         f"{'/'.join(CHAR_RNN_MODELS)}: --layers, --hidden, --seq-len)")
    if args.model == "mlp":  # --model not given
        model = saved.get("model") if saved.get("model") in TEXT_MODELS else "gpt"
    elif args.model not in TEXT_MODELS:
        raise UsageError(f"--model {args.model} is not used by {_TEXT} (--model {', '.join(TEXT_MODELS)})")
    else:
        model = args.model
    recipe = getattr(args, "recipe", None)
    if recipe is not None and (model != "gpt" or recipe not in TEXT_RECIPE_NAMES):
        raise UsageError(f"--recipe {recipe} is not one of {_TEXT}'s GPT recipes ({', '.join(TEXT_RECIPE_NAMES)})"
                         if model == "gpt" else
                         f"--recipe is for {_TEXT}'s GPT ({', '.join(TEXT_RECIPE_NAMES)}), not --model {model}")
    return model


def _given_text_flags(args, model: str) -> list[str]:
    """The settings ``fnnet train shakespeare`` takes from flags for ``model``; a UsageError naming a flag
    that does not apply to it."""
    names = [name for name in _TEXT_FLAGS + ("hidden", "batch_size", "lr", "weight_decay")
             if getattr(args, name, None) is not None]
    wrong = [name for name in names if name in (_RNN_ONLY if model == "gpt" else _GPT_ONLY)]
    if wrong:
        flag = "--" + wrong[0].replace("_", "-")
        if model == "gpt":
            raise UsageError(f"{flag} is not used by {_TEXT}'s GPT; it is for a char-rnn (--model "
                             f"{'/'.join(CHAR_RNN_MODELS)}: --layers, --hidden, --seq-len, --windows)")
        raise UsageError(f"{flag} is for {_TEXT}'s GPT (--model gpt), not --model {model} (a char-rnn: --layers, "
                         f"--hidden, --seq-len, --windows, --dropout, --steps, --batch-size, --lr)")
    return names


def _hidden_width(value: str) -> int:
    """A char-rnn's ``--hidden``: one width (the units of every recurrent layer)."""
    try:
        width = int(value)
    except ValueError:
        raise UsageError(f"--hidden for a char-rnn is one width, the units of every recurrent layer (--layers "
                         f"sets how many), got {value!r}") from None
    if width < 1:
        raise UsageError(f"--hidden must be a positive integer, got {width}")
    return width


def text_config_from_args(args) -> dict:
    """The settings of ``fnnet train shakespeare`` with these flags: the GPT's (:data:`fnnet.app.shakespeare.DEFAULTS`)
    or with ``--model rnn/lstm/gru`` a char-rnn's (:data:`fnnet.app.char_rnn.DEFAULTS`); a UsageError naming
    the flag that does not fit the model."""
    out = process.train_out(args) if getattr(args, "command", None) == "train" else None
    saved = shakespeare.saved_settings(out) if out is not None and getattr(args, "resume", False) else {}
    model = _text_model(args, saved)
    if saved and saved.get("model", "gpt") != model:
        raise UsageError(f"--resume: {out} holds a run of --model {saved.get('model', 'gpt')}; --model {model} "
                         f"would be another model (drop --model, or give another --out)")
    config = dict(shakespeare.DEFAULTS) if model == "gpt" else dict(char_rnn.DEFAULTS, model=model)
    config.update(saved)  # the run's own settings where no flag is given (a converted model's form)
    if model == "gpt" and getattr(args, "recipe", None) is not None:
        config.update(shakespeare.RECIPES[args.recipe])  # then the flags given on top
    for name in _given_text_flags(args, model):
        config[name] = _hidden_width(args.hidden) if name == "hidden" else getattr(args, name)
    config["grad"], config["seed"] = args.grad, args.seed
    problem = shakespeare.settings_error(config) if model == "gpt" else char_rnn.settings_error(config)
    if problem:
        raise UsageError(problem)
    return config


def settings_for(dataset: str, args) -> dict:
    """The settings ``fnnet train DATASET`` would resolve from the model flags in ``args``."""
    return text_config_from_args(args) if dataset == _TEXT else config_from_args(args, dataset)
