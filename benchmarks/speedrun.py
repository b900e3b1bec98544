"""The Tiny Shakespeare speedrun, side by side: ``fnnet train shakespeare --recipe speedrun``, fnnet's
default recipe and nanoGPT's CPU recipe, each seed in a fresh process on this machine, one after another.

* ``speedrun``: the record (:data:`fnnet.app.shakespeare.RECIPES`), as a user runs it;
* ``default``: ``fnnet train shakespeare`` (nanoGPT's recipe, peak rate 2e-3) with a validation
  estimate every 50 steps instead of 250, so that the time to 1.88 is seen to within 50 steps;
* ``nanogpt``: nanoGPT's own CPU recipe (peak rate 1e-3, 2,000 iterations, batch 12, context 64) in
  PyTorch (``benchmarks/pytorch_shakespeare.py``: nanoGPT's model in eager PyTorch, the bench extra)
  where torch is installed, else fnnet's equivalent (``fnnet train shakespeare --lr 1e-3``).

Every run starts a new process and counts from its start (imports, data, compilation, training and
the validation estimates). fnnet's runs share one fresh XLA compilation cache, as a user's runs do:
the first seed of each recipe compiles (``cold``), the next ones load the compiled program. Writes
``benchmarks/results/speedrun.json`` (every seed's figures and curve), prints the table (steps and
seconds to 1.88 and to 2.0, final loss, tokens/s, each as mean ± spread over the seeds) and plots
validation loss against wall seconds (``docs/images/speedrun.png``).

``--ablations``: the record with each of its pieces taken out in turn (RoPE, QK-norm, ReLU², zero
init, soft cap, Muon, the schedule, RMSNorm), ``--seeds`` seeds each, written to
``benchmarks/results/speedrun_ablations.json`` and printed as docs/performance.md's table.

Run: ``python benchmarks/speedrun.py [--seeds 3] [--ablations]`` (``FNNET_DATA`` names the data).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import cpu  # noqa: E402

TARGETS = (1.88, 2.0)

ABLATIONS = {
    "RoPE (learned positions)": {"rope": False},
    "QK-norm": {"qk_norm": False},
    "ReLU² (GELU)": {"mlp_activation": "gelu"},
    "zero init (GPT-2's scaled normal)": {"zero_init": False},
    "soft cap": {"logit_cap": 0.0},
    "Muon (AdamW everywhere)": {"muon_lr": None},
    "schedule (cosine, not warmup-stable-decay)": {"lr_schedule": "cosine"},
    "RMSNorm (LayerNorm)": {"norm": "layer"},
}
"""Each piece of the record, and the settings that take it out (the rest of the recipe kept)."""


def _fnnet(args: list[str], cache: str) -> dict:
    """``fnnet train shakespeare ARGS`` in a fresh process with XLA's cache in ``cache``: its metrics."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, FNNET_CACHE=cache)
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env.pop("FNNET_XLA_CACHE", None)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "fnnet", "train", "shakespeare", *args, "--out", out, "--quiet"],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"fnnet train shakespeare {' '.join(args)} failed:\n{done.stderr}")
        metrics = json.loads((pathlib.Path(out) / "metrics.json").read_text())
    return _run(metrics) | {"wall_seconds": wall}


def _run(metrics: dict) -> dict:
    """A run's curve ``[(step, validation estimate, seconds from the command's start)]`` and figures."""
    history = metrics["history"]
    curve = [(step, loss, metrics["seconds_before_fit"] + elapsed) for step, loss, elapsed in
             zip(history["step"], history["val_loss"], history["elapsed"])]
    return {"curve": curve, "final": metrics["val_loss"], "tokens_per_second": metrics["tokens_per_second"],
            "seconds_to_target": metrics["seconds_to_target"]}


def _torch_nanogpt(seed: int) -> dict | None:
    """nanoGPT's CPU recipe in PyTorch (None without torch)."""
    if importlib.util.find_spec("torch") is None:
        return None
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / "pytorch_shakespeare.py"), "--lr", "1e-3", "--seed", str(seed),
                           "--eval-interval", "50"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"pytorch_shakespeare.py failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"curve": [tuple(point) for point in result["curve"]], "final": result["val_loss"],
            "tokens_per_second": result["steps"] * 12 * 64 / result["train_seconds"], "wall_seconds": wall}


def _ablated(overrides: dict, seed: int, cache: str) -> dict:
    """The record with ``overrides``, through :func:`fnnet.app.shakespeare.run_train` in a fresh process."""
    code = ("import json, sys, tempfile; from fnnet.app import process, shakespeare; "
            "config = {**shakespeare.DEFAULTS, **shakespeare.RECIPES['speedrun'], **json.loads(sys.argv[1])}; "
            "config['seed'] = int(sys.argv[2]); out = tempfile.mkdtemp(); process.use_compilation_cache(); "
            "m = shakespeare.run_train(config, out, verbose=False, sample_tokens=0, overwrite=True, "
            "started=process.started()); print(json.dumps(m))")
    env = dict(os.environ, FNNET_CACHE=cache)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(overrides), str(seed)], capture_output=True,
                          text=True, env=env)
    if done.returncode:
        sys.exit(f"ablation {overrides} failed:\n{done.stderr}")
    return _run(json.loads(done.stdout.strip().splitlines()[-1]))


def to_target(run: dict, target: float) -> tuple[int | None, float | None]:
    """``(steps, seconds)`` at the first validation estimate at most ``target`` (None, None: never)."""
    return next(((step, seconds) for step, loss, seconds in run["curve"] if loss <= target), (None, None))


def spread(values) -> str:
    """``mean ± (max - min) / 2`` of the values, or how many of them never got there."""
    reached = [v for v in values if v is not None]
    if len(reached) < len(values):
        return f"{len(values) - len(reached)}/{len(values)} not reached" + \
            (f" (the others: {spread(reached)})" if reached else "")
    mean, half_range = statistics.mean(reached), (max(reached) - min(reached)) / 2
    digits = ".0f" if all(isinstance(v, int) for v in reached) else \
        ",.0f" if mean >= 1000 else ".1f" if mean >= 10 else ".3f"        # steps, tokens/s, seconds, losses
    return f"{mean:{digits}}" if len(reached) == 1 else f"{mean:{digits}} ± {half_range:{digits}}"


def table(results: dict) -> str:
    rows = ["| recipe | seeds | steps to 1.88 | seconds to 1.88 | steps to 2.0 | seconds to 2.0 | final val loss "
            "| tokens/s |", "|---" * 8 + "|"]
    for name, runs in results.items():
        hits = {target: [to_target(run, target) for run in runs] for target in TARGETS}
        rows.append(f"| {name} | {len(runs)} | {spread([h[0] for h in hits[1.88]])} | "
                    f"{spread([h[1] for h in hits[1.88]])} | {spread([h[0] for h in hits[2.0]])} | "
                    f"{spread([h[1] for h in hits[2.0]])} | {spread([r['final'] for r in runs])} | "
                    f"{spread([r['tokens_per_second'] for r in runs])} |")
    return "\n".join(rows)


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, runs), color in zip(results.items(), ("tab:red", "tab:blue", "tab:grey")):
        for index, run in enumerate(runs):
            seconds = [point[2] for point in run["curve"]]
            losses = [point[1] for point in run["curve"]]
            ax.plot(seconds, losses, color=color, alpha=1.0 if index == 0 else 0.35,
                    label=name if index == 0 else None)
    ax.axhline(1.88, color="black", linestyle="--", linewidth=0.8, label="1.88")
    ax.set_xlabel("wall seconds from the command's start (compilation included)")
    ax.set_ylabel("validation loss (estimate)")
    ax.set_ylim(1.6, 2.8)
    ax.set_title("Tiny Shakespeare, 2 CPU cores: validation loss against wall time")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ablations", action="store_true", help="the record with each piece taken out instead")
    parser.add_argument("--plot", default=str(HERE.parent / "docs" / "images" / "speedrun.png"))
    args = parser.parse_args()
    seeds = range(args.seeds)
    machine = cpu()
    print(f"CPU: {machine['model']} ({', '.join(machine['isa'])}), {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        if args.ablations:
            results = {"the record": [_ablated({}, seed, cache) for seed in seeds]}
            for name, overrides in ABLATIONS.items():
                results[f"without {name}"] = [_ablated(overrides, seed, cache) for seed in seeds]
                print(f"{name}: done", flush=True)
            name = "speedrun_ablations.json"
        else:
            results = {"speedrun": [_fnnet(["--recipe", "speedrun", "--seed", str(seed)], cache) for seed in seeds]}
            results["default"] = [_fnnet(["--eval-interval", "50", "--seed", str(seed)], cache) for seed in seeds]
            nanogpt = [_torch_nanogpt(seed) for seed in seeds]
            if None in nanogpt:  # no torch: fnnet's nanoGPT-equivalent
                nanogpt = [_fnnet(["--lr", "1e-3", "--eval-interval", "50", "--seed", str(seed)], cache)
                           for seed in seeds]
                results["nanogpt (fnnet's equivalent)"] = nanogpt
            else:
                results["nanogpt (PyTorch)"] = nanogpt
            name = "speedrun.json"
            plot(results, pathlib.Path(args.plot))
    for recipe, runs in results.items():
        for seed, run in zip(seeds, runs):
            steps, seconds = to_target(run, 1.88)
            print(f"{recipe} seed {seed}: 1.88 at step {steps}, {seconds if seconds is None else round(seconds, 1)} s; "
                  f"final {run['final']:.4f}", flush=True)
    print(table(results))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / name).write_text(json.dumps({"cpu": machine, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
