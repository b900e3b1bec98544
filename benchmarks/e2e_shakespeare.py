"""End to end: ``fnnet train shakespeare`` versus ``benchmarks/pytorch_shakespeare.py``.

Both train nanoGPT's CPU recipe (4 layers, 4 heads, 128 features, context 64, batch 12,
2,000 steps; peak learning rate 2e-3) in a fresh process; the wall time covers interpreter
start, imports, data loading, compilation, training, validation estimates and the final
exact validation loss (fnnet's also writes its curve and a 500-character sample). Writes
``benchmarks/results/e2e_shakespeare.json``.

Run: ``python benchmarks/e2e_shakespeare.py`` (needs Tiny Shakespeare, see fnnet.datasets, and torch)
"""

import sys

from e2e import fnnet_and_pytorch, write

TARGET = 1.88


def main():
    results = fnnet_and_pytorch(["shakespeare"], ("val_loss", "train_seconds", "steps"), "pytorch_shakespeare.py")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<8} {r['error']}")
        else:
            reached = "reached" if r["val_loss"] <= TARGET else "NOT reached"
            print(f"{name:<8} validation loss {r['val_loss']:.4f} ({reached} {TARGET})  wall {r['wall_seconds']:.1f} s  "
                  f"(training {r['train_seconds']:.1f} s, {r['steps']} steps)")
    if "error" not in results["pytorch"]:
        print(f"fnnet is {results['pytorch']['wall_seconds'] / results['fnnet']['wall_seconds']:.2f}x faster end to end")
    write(results, "e2e_shakespeare.json")


if __name__ == "__main__":
    sys.exit(main())
