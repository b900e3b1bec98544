"""End to end, shared by ``e2e_mnist.py`` and ``e2e_shakespeare.py``: a ``fnnet train`` command and
its PyTorch equivalent, each in a fresh process, timed from interpreter start to the end."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def timed(command, **kwargs):
    """``(CompletedProcess, wall seconds)`` of ``command``, its output captured."""
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return out, time.perf_counter() - started


def fnnet_and_pytorch(train_args: list[str], fields: tuple[str, ...], pytorch_script: str) -> dict:
    """``{"fnnet": {...}, "pytorch": {...}}``: ``fnnet train TRAIN_ARGS`` (the ``fields`` of its
    metrics.json and the wall seconds) and ``benchmarks/PYTORCH_SCRIPT`` (its last JSON line, or
    the error that stopped it, e.g. torch not installed)."""
    return {"fnnet": fnnet_train(train_args, fields), "pytorch": pytorch(pytorch_script)}


def fnnet_train(train_args: list[str], fields: tuple[str, ...]) -> dict:
    """``fnnet train TRAIN_ARGS`` in a fresh process: the ``fields`` of its metrics.json and the wall
    seconds from launching it to its end (metrics.json written). A first run's time: compilation
    counted, as for PyTorch's (fnnet's commands would reuse XLA's programs from an earlier run
    otherwise: fnnet.app.commands.use_compilation_cache)."""
    first_run = dict(os.environ, FNNET_XLA_CACHE="off")
    first_run.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryDirectory() as tmp:
        out, seconds = timed([sys.executable, "-m", "fnnet", "train", *train_args, "--out", tmp, "--quiet"],
                             env=first_run)
        if out.returncode != 0:
            sys.exit(out.stderr)
        metrics = json.loads((pathlib.Path(tmp) / "metrics.json").read_text())
    return {**{field: metrics[field] for field in fields}, "wall_seconds": seconds}


def pytorch(script: str, *args: str) -> dict:
    """``benchmarks/SCRIPT ARGS``: its last JSON line and wall seconds, or the error that stopped it
    (e.g. torch not installed)."""
    out, seconds = timed([sys.executable, str(HERE / script), *args])
    if out.returncode == 0:
        return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_seconds": seconds}
    return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}


def write(results: dict, name: str) -> None:
    """``benchmarks/results/NAME`` as JSON."""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / name).write_text(json.dumps(results, indent=2))
