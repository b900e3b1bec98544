"""Run folders: what ``fnnet train`` writes there, and the one check every training job makes
before it starts (a folder holding a run needs ``--resume`` or ``--overwrite``; a resumed run
must have the same settings).

Every training job (``fnnet train DATASET``: :func:`fnnet.app.commands.run_train`; ``fnnet train
shakespeare``: :func:`fnnet.app.shakespeare.run_train`) goes the same way: :func:`prepare_run_dir`
before any work, :func:`writing_run` around writing ``config.json`` and training, :func:`finish_run`
for ``metrics.json``, the plots and the other files, and the ``wrote ...`` line. The file names
are the constants below.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from typing import Callable, Mapping

from fnnet import train
from fnnet.app.recipes import RecipeError

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
CHECKPOINT_NAME = train.CHECKPOINT_NAME
CURVES_NAME = "curves.png"    # a classifier's loss and accuracy per epoch
HEALTH_NAME = "health.png"    # the layers' health (--monitor)
LOSS_NAME = "loss.png"        # a language model's loss per step
SAMPLE_NAME = "sample.txt"    # a language model's sample
RUN_FILES = (CONFIG_NAME, METRICS_NAME, CHECKPOINT_NAME, CURVES_NAME, HEALTH_NAME, LOSS_NAME, SAMPLE_NAME)
"""What ``fnnet train`` writes into a run folder (``--overwrite`` removes exactly these)."""


def settings_changes(saved: dict, config: dict, ignore=()) -> list[str]:
    """``["hidden: [512, 512] -> [64]", ...]``: each setting that differs between a run's saved
    config and a new one (keys in ``ignore`` left out)."""
    keys = sorted((set(saved) | set(config)) - set(ignore))
    missing = object()
    return [f"{key}: {saved.get(key, '(unset)')!r} -> {config.get(key, '(unset)')!r}" for key in keys
            if saved.get(key, missing) != config.get(key, missing)]


def prepare_run_dir(out_dir, config: dict, *, resume: bool, overwrite: bool, ignore=(), option="--out",
                    saved_defaults=None, can_resume: bool = True):
    """Makes ``out_dir`` ready for a training run of ``config`` before any work is done.

    A folder that already holds a run is refused unless ``resume`` (continue it: its saved
    settings must equal ``config``'s, but for the keys in ``ignore`` such as ``epochs``) or
    ``overwrite`` (replace it). Raises :class:`RecipeError` with one line naming the folder and
    the way on. ``saved_defaults``: the values of settings a run saved before they were
    recorded (a CNN run without ``recipe`` was trained the ``classic`` way), for the settings
    ``config`` has. Returns the old run's files (:data:`RUN_FILES`) that ``overwrite`` will replace:
    the caller removes them once the new run is ready to start (:func:`clear_run_files`).
    ``can_resume=False``: a command without ``--resume`` (``fnnet convert``), whose refusal names
    ``--overwrite`` only.
    """
    out_dir = pathlib.Path(out_dir)
    if resume and overwrite:
        raise RecipeError("--resume and --overwrite exclude each other: continue the run, or replace it")
    present = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    if not present:
        return []
    if overwrite:
        return present
    if not resume:
        ways = "use --resume to continue it, --overwrite to replace it" if can_resume else \
            "use --overwrite to replace it"
        raise RecipeError(f"{option} {out_dir}: holds a run already ({', '.join(p.name for p in present)}); "
                          f"{ways}, or another {option}")
    config_path = out_dir / CONFIG_NAME
    if config_path.exists():
        try:
            saved = json.loads(config_path.read_text())
        except (ValueError, OSError) as error:
            raise RecipeError(f"{config_path}: not a readable config ({error})") from None
        known = {key: value for key, value in (saved_defaults or {}).items() if key in config}
        changes = settings_changes(dict(known, **saved), config, ignore)
        if changes:
            raise RecipeError(f"--resume: {config_path} was written with different settings ({'; '.join(changes)}); "
                              f"use the same arguments, or another {option}")
    return []


def trained_so_far(out_dir, config: dict, *, resume: bool, unit: str) -> int:
    """How many ``unit`` s (``"epochs"`` or ``"steps"``) the run in ``out_dir`` has trained, when
    resuming (0 otherwise); a RecipeError when ``config[unit]`` asks for fewer, which would train
    nothing while config.json and metrics.json disagree."""
    path = pathlib.Path(out_dir) / train.CHECKPOINT_NAME
    progress = train.checkpoint_progress(path) if resume and path.exists() else None
    done = progress[1] if progress else 0
    if done > config[unit]:
        raise RecipeError(f"--resume: {out_dir} has trained {done} {unit} already; --{unit} {config[unit]} "
                          f"would train none (give --{unit} above {done})")
    return done


def clear_run_files(paths) -> None:
    """Removes an old run's files (what :func:`prepare_run_dir` returned for ``overwrite``)."""
    for path in paths:
        pathlib.Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def kept_or_removed(out_dir, *, made: bool):
    """Around the part of a training job that writes its run files into ``out_dir`` and trains:
    if the job stops there (Ctrl-C, a divergence, a full disk, any error) before ``out_dir`` holds
    a checkpoint, the run files (:data:`RUN_FILES`) it wrote are removed again, and ``out_dir``
    itself when the job ``made`` it and it is empty. Then "nothing was kept" is what the folder
    shows, and the same command starts afresh instead of being refused as a run that exists.
    Files that were there when the block began are never touched."""
    out_dir = pathlib.Path(out_dir)
    before = {name for name in RUN_FILES if (out_dir / name).exists()}
    try:
        yield
    except BaseException:
        if not (out_dir / train.CHECKPOINT_NAME).exists():
            for name in RUN_FILES:
                if name not in before:
                    (out_dir / name).unlink(missing_ok=True)
            if made:
                with contextlib.suppress(OSError):  # not empty: something else lives there now
                    out_dir.rmdir()
        raise


@contextlib.contextmanager
def writing_run(out_dir, config: dict, replaced=(), *, option: str = "--out"):
    """Around the part of a training job that writes ``config`` as ``config.json`` and trains: makes
    ``out_dir`` (a :class:`RecipeError` naming ``option`` when it cannot), removes the old run's
    ``replaced`` files (:func:`prepare_run_dir`), writes the config, then runs the block under
    :func:`kept_or_removed`. Yields the folder as a :class:`pathlib.Path`."""
    out_dir = pathlib.Path(out_dir)
    made = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RecipeError(f"{option} {out_dir}: cannot create it ({error.strerror or error})") from None
    clear_run_files(replaced)
    with kept_or_removed(out_dir, made=made):  # stopped before a checkpoint: config.json goes again
        (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        yield out_dir


def finish_run(out_dir, metrics: dict, files: Mapping[str, Callable | None], *, verbose: bool,
               report=()) -> list[pathlib.Path]:
    """Writes a trained run's results into ``out_dir``: each of ``files`` (a name such as
    :data:`CURVES_NAME`, and the function that writes that path; ``None``: not this run), then
    ``metrics`` as ``metrics.json``. With ``verbose`` prints the lines of ``report`` and then
    ``wrote`` with the checkpoint, metrics.json and those files. Returns the paths written."""
    out_dir = pathlib.Path(out_dir)
    written = []
    for name, write in files.items():
        if write is not None:
            write(out_dir / name)
            written.append(out_dir / name)
    (out_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=2))
    if verbose:
        for line in report:
            print(line)
        print("wrote " + ", ".join(map(str, [out_dir / CHECKPOINT_NAME, out_dir / METRICS_NAME] + written)))
    return written
