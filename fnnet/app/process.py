"""The ``fnnet`` process around a command: XLA's compilation cache, and each way a command can end
turned into one line on stderr and an exit status (:data:`fnnet.app.cli.EXIT_CODES`), with what a
stopped ``fnnet train`` kept in its run folder."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import sys
import time

import jax

from fnnet import datasets, distributed, train
from fnnet.app.recipes import RecipeError
from fnnet.app.usage import UsageError
from fnnet.checkpoint import CheckpointError, CheckpointWriteError
from fnnet.datasets import DataError
from fnnet.interop import ConversionError
from fnnet.train import TrainingDiverged

XLA_CACHE_LIMIT = 2 * 1024**3
"""Bytes of compiled programs :func:`use_compilation_cache` keeps before it starts the folder again."""


def started() -> float:
    """The ``time.perf_counter()`` at which this process started (Linux: from ``/proc``, so Python's own
    start and every import count), or at which this module was imported where that is not known."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
            since_boot = float(uptime.read().split()[0])
        return time.perf_counter() - max(0.0, since_boot - start_ticks / ticks)
    except (OSError, ValueError, IndexError):
        return _IMPORTED


_IMPORTED = time.perf_counter()


def use_compilation_cache() -> pathlib.Path | None:
    """Keeps XLA's compiled programs in ``xla/`` of fnnet's user cache (``$FNNET_CACHE`` or
    ``~/.cache/fnnet``; JAX's own persistent cache), so that a command run again skips compilation:
    the second ``fnnet train xor`` or ``fnnet sample`` starts at once. The key of a program is
    the program itself, the compiler flags and the jax/jaxlib versions, so a cached one is the one
    XLA would compile. Not used when JAX already has a cache folder (``JAX_COMPILATION_CACHE_DIR``)
    or ``FNNET_XLA_CACHE=off``; past 2 GB the folder is emptied. Returns the folder, or ``None``."""
    if os.environ.get("FNNET_XLA_CACHE") == "off" or jax.config.jax_compilation_cache_dir:
        return None
    folder = datasets.cache_dir() / "xla"
    try:
        if folder.is_dir() and sum(entry.stat().st_size for entry in os.scandir(folder)) > XLA_CACHE_LIMIT:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile every time, as without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small programs are most of a small job
    return folder


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_every_core() -> None:
    """Makes each CPU core this process may run on a JAX CPU device of its own (``jax_num_cpu_devices``),
    so that a data-parallel program (:func:`core_mesh`) runs one share of the batch on each; a program
    on one device runs as before (XLA's thread pool is the process's). Only while JAX has not started
    (afterwards the count is fixed for the process) and when neither ``XLA_FLAGS``
    (``--xla_force_host_platform_device_count``) nor ``jax_num_cpu_devices`` chose a count."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices > 0:
        return
    try:
        jax.config.update("jax_num_cpu_devices", cores())
    except RuntimeError:  # JAX runs already (a caller's process): its devices stay as they are
        pass


def core_mesh(batch_size: int):
    """A data mesh over this process's CPU devices (:func:`use_every_core`) for batches of ``batch_size``:
    the most devices that divide it evenly; ``None`` where JAX computes on another platform or fewer than
    two would take part."""
    if jax.default_backend() != "cpu":
        return None
    devices = jax.local_devices()
    count = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
    return distributed.data_mesh(devices[:count]) if count > 1 else None


def train_out(args) -> str:
    """The run folder of ``fnnet train``: ``--out``, by default ``runs/DATASET``."""
    return args.out or f"runs/{args.dataset}"


def _kept_checkpoint(args):
    """For ``fnnet train``: ``(run folder, (unit, count) or None)``, the checkpoint its folder keeps; else ``None``."""
    if getattr(args, "command", None) != "train":
        return None
    out = train_out(args)
    return out, train.checkpoint_progress(pathlib.Path(out) / train.CHECKPOINT_NAME)


def _kept(args) -> str:
    """For a ``train`` stopped by an error: ``"; "`` and which checkpoint its run folder keeps."""
    found = _kept_checkpoint(args)
    if found is None:
        return ""
    out, kept = found
    return f"; nothing was kept in {out}" if kept is None else \
        f"; the checkpoint of {kept[0]} {kept[1]} in {out} is kept (--resume continues it)"


def interrupted_message(args) -> str:
    """What Ctrl-C leaves behind: the checkpoint kept and how to continue."""
    found = _kept_checkpoint(args)
    if found is None:
        return "fnnet: interrupted"
    out, kept = found
    if kept is None:  # and the files this run wrote are gone again (fnnet.app.jobs.kept_or_removed)
        return (f"fnnet: interrupted before the first checkpoint; nothing was kept in {out} (the same command "
                f"starts again)")
    return (f"fnnet: interrupted; the checkpoint of {kept[0]} {kept[1]} in {out} is kept: run the same command "
            f"with --resume to continue")


def _discard_stdout() -> None:
    """Points stdout at /dev/null: what is still buffered goes nowhere at exit's flush, not to a second error."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def exit_status(command, args) -> int:
    """Runs ``command(args)``; returns its exit status, or the status of the error that stopped it
    (:data:`fnnet.app.cli.EXIT_CODES`), the error printed as one line."""
    try:
        code = command(args)
        if sys.stdout is not None:  # `fnnet ... >&-` leaves none
            sys.stdout.flush()  # a closed pipe or a full disk shows here, inside main, not at the exit
        return code
    except TrainingDiverged as error:
        print(f"fnnet: error: training diverged: {error}. Try a smaller --lr, or --optimizer adam",
              file=sys.stderr)
        return 3
    except CheckpointWriteError as error:
        print(f"fnnet: error: {error}", file=sys.stderr)
        return 4
    except (UsageError, RecipeError, DataError, CheckpointError, ConversionError) as error:
        print(f"fnnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_message(args), file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fnnet trace xor | head`: the reader has gone; stop quietly, as head expects
        _discard_stdout()
        return 141
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        if sys.stdout is not None:  # `> /dev/full`
            _discard_stdout()
        print(f"fnnet: error: no space left on the device: {error.filename or 'the output'} could not be written"
              + _kept(args), file=sys.stderr)
        return 4
