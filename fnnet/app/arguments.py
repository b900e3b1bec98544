"""From the command line's flags to settings: what ``fnnet train DATASET`` (and ``gradcheck``,
``summary``, ``doctor`` with the same flags) resolve them to, each misfit flag a UsageError that
names it; and output paths refused before any work."""

from __future__ import annotations

import os
import pathlib

from fnnet.app import process, recipes, shakespeare
from fnnet.app.choices import TEXT as _TEXT
from fnnet.app.recipes import RecipeError
from fnnet.app.usage import UsageError


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def check_output_path(path, option: str, *, folder: bool) -> pathlib.Path:
    """Refuses, before any work, an output ``path`` that cannot be written: an existing file
    where a folder is wanted (or the reverse), a path under a file, or a read-only folder."""
    path = pathlib.Path(path)
    if os.path.exists(path):
        if folder and not os.path.isdir(path):
            raise UsageError(f"{option} {path}: is a file, not a folder")
        if not folder and os.path.isdir(path):
            raise UsageError(f"{option} {path}: is a folder; give a file name such as {path / 'predictions.npy'}")
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
    given = [name for name in _GPT_FLAGS if getattr(args, name) is not None]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} is for the GPT ({_TEXT}), not {dataset}")
    try:
        return recipes.settings(dataset, args.model, args.recipe,
                                **{name: getattr(args, name) for name in recipes.SETTING_NAMES})
    except RecipeError as error:
        raise UsageError(str(error)) from None


_GPT_FLAGS = ("layers", "heads", "features", "block_size", "dropout", "steps", "eval_interval", "eval_batches")


_IMAGE_FLAGS = ("hidden", "activation", "epochs", "optimizer", "schedule", "limit", "monitor", "recipe", "augment")


def text_config_from_args(args) -> dict:
    given = [name for name in _IMAGE_FLAGS if getattr(args, name) is not None]
    if given or args.model != "mlp":
        flag = f"--{given[0]}" if given else "--model"
        raise UsageError(f"{flag} is not used by {_TEXT} (a GPT: --layers, --heads, --features, "
                         f"--block-size, --steps, --batch-size, --lr, --dropout)")
    config = dict(shakespeare.DEFAULTS)
    if getattr(args, "resume", False):  # the run's own settings where no flag is given (a converted model's form)
        config.update(shakespeare.saved_settings(process.train_out(args)))
    for name in _GPT_FLAGS + ("batch_size", "lr", "weight_decay"):
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    config["grad"], config["seed"] = args.grad, args.seed
    problem = shakespeare.settings_error(config)
    if problem:
        raise UsageError(problem)
    return config


def settings_for(dataset: str, args) -> dict:
    """The settings ``fnnet train DATASET`` would resolve from the model flags in ``args``."""
    return text_config_from_args(args) if dataset == _TEXT else config_from_args(args, dataset)
