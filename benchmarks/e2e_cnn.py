"""End to end: the CNN on MNIST, fnnet against PyTorch eager, two ways.

1. The record (issue 20): ``fnnet train mnist --model cnn`` with its defaults (the fast recipe, 8
   epochs), seeds 0, 1 and 2, each a first run in a fresh process (compilation counted): the wall
   seconds from launching the command to metrics.json, and the test accuracy (target: mean >= 99.4%,
   none below 99.3%, in <= 60 s); beside it ``benchmarks/pytorch_mnist_cnn.py --recipe fast``, the
   same network and recipe in PyTorch eager, once.
2. Time to 99%, the classic recipe:

``python examples/mnist_cnn.py`` and ``benchmarks/pytorch_mnist_cnn.py`` (the same network and
recipe) each run in a fresh process; both print a line per epoch with the test accuracy,
which this script timestamps as it arrives. The time to 99% is from launching the process
(interpreter start, imports, data loading, compilation, training and the per-epoch
evaluations all included) to the first epoch line at or above 99%; the process is then
stopped. Writes ``benchmarks/results/e2e_cnn.json``.

Run: ``python benchmarks/e2e_cnn.py`` (needs MNIST and torch; at most ~15 minutes on 2 cores)
"""

import os
import re
import subprocess
import sys
import tempfile
import time

from e2e import HERE, fnnet_train, pytorch, write

TARGET = 0.99
SEEDS = (0, 1, 2)


def record() -> dict:
    """The fast recipe from the command line, three seeds, and PyTorch eager's twin of it, one run."""
    runs = [dict(fnnet_train(["mnist", "--model", "cnn", "--seed", str(seed)], ("test_accuracy", "train_seconds")),
                 seed=seed) for seed in SEEDS]
    accuracies = [r["test_accuracy"] for r in runs]
    result = {"fnnet": runs, "mean_accuracy": sum(accuracies) / len(accuracies), "min_accuracy": min(accuracies),
              "max_wall_seconds": max(r["wall_seconds"] for r in runs),
              "pytorch": pytorch("pytorch_mnist_cnn.py", "--recipe", "fast")}
    for r in runs:
        print(f"fnnet train mnist --model cnn --seed {r['seed']}: test accuracy {r['test_accuracy']:.2%} "
              f"in {r['wall_seconds']:.1f} s wall")
    print(f"  mean {result['mean_accuracy']:.2%} (target >= 99.4%), lowest {result['min_accuracy']:.2%} "
          f"(>= 99.3%), slowest {result['max_wall_seconds']:.1f} s (<= 60 s)")
    torch_run = result["pytorch"]
    if "error" in torch_run:
        print(f"  pytorch  {torch_run['error']}")
    else:
        print(f"  PyTorch eager, the same recipe: {torch_run['test_accuracy']:.2%} in {torch_run['wall_seconds']:.1f} s "
              f"wall: fnnet is {torch_run['wall_seconds'] / result['max_wall_seconds']:.2f}x faster")
    return result


def time_to_target(command, cwd=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    epochs = []
    try:
        for line in process.stdout:
            match = re.search(r"^epoch (\d+)/\d+.*eval_accuracy ([\d.]+)", line)
            if match:
                epochs.append({"epoch": int(match.group(1)), "eval_accuracy": float(match.group(2)),
                               "seconds": time.perf_counter() - started})
                if epochs[-1]["eval_accuracy"] >= TARGET:
                    break
    finally:
        process.kill()
        process.wait()
    reached = next((e for e in epochs if e["eval_accuracy"] >= TARGET), None)
    if reached is None and not epochs:
        return {"error": (process.stderr.read().strip().splitlines() or ["no epoch printed"])[-1]}
    return {"seconds_to_99": reached["seconds"] if reached else None,
            "epochs_to_99": reached["epoch"] if reached else None, "epochs": epochs}


def main():
    results = {"record": record()}
    with tempfile.TemporaryDirectory() as tmp:
        results["fnnet"] = time_to_target([sys.executable, str(HERE.parent / "examples" / "mnist_cnn.py"),
                                           "--out", tmp], cwd=HERE.parent / "examples")
    results["pytorch"] = time_to_target([sys.executable, str(HERE / "pytorch_mnist_cnn.py")])
    for name, r in results.items():
        if name == "record":
            continue
        if "error" in r:
            print(f"{name:<8} {r['error']}")
        elif r["seconds_to_99"] is None:
            print(f"{name:<8} did not reach 99% (best {max(e['eval_accuracy'] for e in r['epochs']):.2%})")
        else:
            print(f"{name:<8} 99% test accuracy after {r['epochs_to_99']} epochs, {r['seconds_to_99']:.1f} s "
                  f"from process start")
    if results["fnnet"].get("seconds_to_99") and results["pytorch"].get("seconds_to_99"):
        print(f"fnnet is {results['pytorch']['seconds_to_99'] / results['fnnet']['seconds_to_99']:.2f}x faster to 99%")
    write(results, "e2e_cnn.json")


if __name__ == "__main__":
    main()
