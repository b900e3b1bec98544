"""End to end: the small jobs that should feel instant (issue 20, target 4), each in a fresh process.

* ``fnnet --help`` (target <= 0.3 s: the help never imports JAX);
* ``fnnet train xor`` (target <= 2 s): a first run (``FNNET_XLA_CACHE=off``: every program
  compiled, as on a new machine) and a run again (XLA's programs from the user cache, as every run
  after the first), beside a learner's from-scratch NumPy XOR (the tutorials' loop,
  ``contenders/numpy_scratch.py``, with the same 2-4-1 tanh network, SGD at lr 1.0 and 1,000
  full-batch steps) started the same way;
* ``python -m fnnet demo`` (target <= 15 s; what ``make demo`` runs once installed).

Each time is the wall time from launching the process to its end, the median of ``--repeats``
runs (the demo, ~12 s, runs once). Writes ``benchmarks/results/e2e_small.json`` (``--out``).

Run: ``python benchmarks/e2e_small.py`` (about a minute on 2 cores; the demo needs MNIST or scikit-learn)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile

from e2e import HERE, timed

NUMPY_XOR = (f"import dataclasses, sys; sys.path.insert(0, {str(HERE)!r})\n"
             "from workloads import WORKLOADS\n"
             "from contenders.numpy_scratch import NumpyScratch\n"
             "NumpyScratch(dataclasses.replace(WORKLOADS['xor'], steps=1000, lr=1.0)).run_epoch()\n")


def median_wall(command, repeats: int, env=None) -> float:
    """The median wall seconds of ``command`` over ``repeats`` fresh processes (each must succeed)."""
    seconds = []
    for _ in range(repeats):
        out, wall = timed(command, env=env)
        if out.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{out.stderr}")
        seconds.append(wall)
    return statistics.median(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo (it needs MNIST or scikit-learn)")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "e2e_small.json")
    args = parser.parse_args(argv)
    fnnet = [sys.executable, "-m", "fnnet"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        first_run = dict(os.environ, FNNET_XLA_CACHE="off")
        first_run.pop("JAX_COMPILATION_CACHE_DIR", None)
        again = dict(first_run, FNNET_XLA_CACHE="", FNNET_CACHE=os.path.join(tmp, "cache"))
        xor = fnnet + ["train", "xor", "--out", os.path.join(tmp, "xor"), "--overwrite"]  # as typed: its output too
        results["help"] = median_wall(fnnet + ["--help"], args.repeats, first_run)
        results["xor_first_run"] = median_wall(xor, args.repeats, first_run)
        filled, _ = timed(xor, env=again)  # fills the cache folder of the runs below
        if filled.returncode != 0:
            sys.exit(f"{' '.join(xor)} failed:\n{filled.stderr}")
        results["xor_again"] = median_wall(xor, args.repeats, again)
        results["numpy_xor"] = median_wall([sys.executable, "-c", NUMPY_XOR], args.repeats)
        if not args.no_demo:
            results["demo"] = median_wall(fnnet + ["demo", "--out", os.path.join(tmp, "demo")], 1, first_run)
    print(f"fnnet --help                {results['help']:6.2f} s   (target <= 0.3 s)")
    print(f"fnnet train xor, first run  {results['xor_first_run']:6.2f} s   (target <= 2 s)")
    print(f"fnnet train xor, again      {results['xor_again']:6.2f} s   (target <= 2 s)")
    print(f"NumPy tutorial XOR          {results['numpy_xor']:6.2f} s   "
          f"(fnnet's first run takes {results['xor_first_run'] / results['numpy_xor']:.1f}x as long)")
    if "demo" in results:
        print(f"fnnet demo                  {results['demo']:6.2f} s   (target <= 15 s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
