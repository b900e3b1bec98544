"""End to end: ``fnnet train shakespeare`` versus ``benchmarks/pytorch_shakespeare.py``.

Both train nanoGPT's CPU recipe (4 layers, 4 heads, 128 features, context 64, batch 12,
2,000 steps; peak learning rate 2e-3) in a fresh process; the wall time covers interpreter
start, imports, data loading, compilation, training, validation estimates and the final
exact validation loss (fnnet's also writes its curve and a 500-character sample). Writes
``benchmarks/results/e2e_shakespeare.json``.

Run: ``python benchmarks/e2e_shakespeare.py`` (needs Tiny Shakespeare, see fnnet.datasets, and torch)
"""

import json
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from e2e_mnist import timed  # noqa: E402  (a command's CompletedProcess and wall seconds)

TARGET = 1.88


def main():
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out, seconds = timed([sys.executable, "-m", "fnnet", "train", "shakespeare", "--out", tmp, "--quiet"])
        if out.returncode != 0:
            sys.exit(out.stderr)
        metrics = json.loads((pathlib.Path(tmp) / "metrics.json").read_text())
        results["fnnet"] = {"val_loss": metrics["val_loss"], "wall_seconds": seconds,
                            "train_seconds": metrics["train_seconds"], "steps": metrics["steps"]}
    out, seconds = timed([sys.executable, str(HERE / "pytorch_shakespeare.py")])
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
            reached = "reached" if r["val_loss"] <= TARGET else "NOT reached"
            print(f"{name:<8} validation loss {r['val_loss']:.4f} ({reached} {TARGET})  wall {r['wall_seconds']:.1f} s  "
                  f"(training {r['train_seconds']:.1f} s, {r['steps']} steps)")
    if "error" not in results["pytorch"]:
        print(f"fnnet is {results['pytorch']['wall_seconds'] / results['fnnet']['wall_seconds']:.2f}x faster end to end")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "e2e_shakespeare.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
