"""End to end: ``fnnet train mnist`` versus ``benchmarks/pytorch_mnist.py``, wall time and accuracy.

Each runs in a fresh process; the wall time covers interpreter start, imports,
data loading, compilation and training. Writes ``benchmarks/results/e2e.json``.

Run: ``python benchmarks/e2e_mnist.py`` (needs MNIST, see fnnet.datasets, and torch)
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def timed(command):
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    return out, time.perf_counter() - started


def main():
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out, seconds = timed([sys.executable, "-m", "fnnet", "train", "mnist", "--out", tmp, "--quiet"])
        if out.returncode != 0:
            sys.exit(out.stderr)
        metrics = json.loads((pathlib.Path(tmp) / "metrics.json").read_text())
        results["fnnet"] = {"test_accuracy": metrics["test_accuracy"], "wall_seconds": seconds,
                            "train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"]}
    out, seconds = timed([sys.executable, str(HERE / "pytorch_mnist.py")])
    if out.returncode == 0:
        torch_result = json.loads(out.stdout.strip().splitlines()[-1])
        torch_result["wall_seconds"] = seconds
        results["pytorch"] = torch_result
    else:
        results["pytorch"] = {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<8} {r['error']}")
        else:
            print(f"{name:<8} test accuracy {r['test_accuracy']:.2%}  wall {r['wall_seconds']:.1f} s  "
                  f"(training {r['train_seconds']:.1f} s, {r['epochs']} epochs)")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "e2e.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
