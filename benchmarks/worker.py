"""One measurement in a fresh process: ``python benchmarks/worker.py CONTENDER WORKLOAD``.

Prints one JSON line: seconds of the first epoch (compilation included), of each
timed epoch, examples per epoch, and the process's peak memory (and its memory
after imports, before any data, so the two can be told apart).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("contender")
    parser.add_argument("workload")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the first")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args()

    import dataclasses

    import contenders
    import workloads

    workload = workloads.WORKLOADS[args.workload]
    if args.smoke:
        workload = dataclasses.replace(workload, n=min(workload.n, 4 * workload.batch),
                                       steps=min(workload.steps, 50), nets=min(workload.nets, 8),
                                       block=min(workload.block, 10),
                                       sizes=tuple(min(s, 64) if 0 < i < len(workload.sizes) - 1 else s
                                                   for i, s in enumerate(workload.sizes)))
    if args.contender == "matmul":
        print(json.dumps({"gflops": workloads.matmul_rate(workload)}))
        return
    module = contenders.OPTIONAL.get(args.contender)
    if module:
        try:
            __import__(module)
        except ImportError:
            print(json.dumps({"skipped": f"{module} is not installed (pip install -e '.[bench]')"}))
            return
    for name in ("jax", "numpy"):  # imported by every JAX contender: counted in the base memory
        importlib.import_module(name)

    base = rss_mb()
    runner = contenders.runner(args.contender, workload)
    if hasattr(runner, "measure_fit") and workload.kind in ("mlp", "cnn"):
        seconds = runner.measure_fit(1 + args.epochs)
        first, timed, per_epoch = seconds[0], seconds[1:], workload.n
    else:
        started = time.perf_counter()
        per_epoch = runner.run_epoch()
        first = time.perf_counter() - started
        timed = []
        for _ in range(args.epochs):
            started = time.perf_counter()
            runner.run_epoch()
            timed.append(time.perf_counter() - started)
    print(json.dumps({"first_s": first, "epoch_s": timed, "per_epoch": per_epoch,
                      "base_mb": base, "peak_mb": peak_mb()}))


if __name__ == "__main__":
    main()
