"""End to end: ``fnnet train mnist`` versus ``benchmarks/pytorch_mnist.py``, wall time and accuracy.

Each runs in a fresh process; the wall time covers interpreter start, imports,
data loading, compilation and training. Writes ``benchmarks/results/e2e.json``.

Run: ``python benchmarks/e2e_mnist.py`` (needs MNIST, see fnnet.datasets, and torch)
"""

import sys

from e2e import fnnet_and_pytorch, write


def main():
    results = fnnet_and_pytorch(["mnist"], ("test_accuracy", "train_seconds", "epochs"), "pytorch_mnist.py")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<8} {r['error']}")
        else:
            print(f"{name:<8} test accuracy {r['test_accuracy']:.2%}  wall {r['wall_seconds']:.1f} s  "
                  f"(training {r['train_seconds']:.1f} s, {r['epochs']} epochs)")
    write(results, "e2e.json")


if __name__ == "__main__":
    sys.exit(main())
