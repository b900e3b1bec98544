"""Data-parallel throughput on 1, 2, 4 and 8 (fake) devices: ``python benchmarks/scaling.py``.

Each device count runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``; ``fnnet.train.fit`` trains
the 784-512-512-10 MLP (SGD, batch 128 split over the devices) on random data.
On a CPU the fake devices share the same cores, so this measures the correctness
and the overhead of the sharded step, not a speed-up. On a machine with N real
accelerators pass ``--real`` to use them as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent

WORKER = r"""
import json, os, sys, time
n_dev, n, epochs, real = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if not real:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_dev}"
import jax, numpy as np, optax, fnnet
from fnnet import distributed, train
devices = jax.devices()[:n_dev]
rng = np.random.default_rng(0)
x = rng.random((n, 784), dtype=np.float32); y = rng.integers(0, 10, n).astype(np.int32)
model = fnnet.serial(fnnet.Dense(512), fnnet.Relu, fnnet.Dense(512), fnnet.Relu, fnnet.Dense(10))
mesh = distributed.data_mesh(devices) if n_dev > 1 else None
state, history = train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(0.01), (x, y),
                           epochs=epochs, batch_size=128, key=jax.random.PRNGKey(0), mesh=mesh, verbose=False)
steady = sorted(history.seconds[1:])[len(history.seconds[1:]) // 2]
print(json.dumps({"devices": n_dev, "platform": devices[0].platform, "examples_per_second": n / steady,
                  "first_epoch_seconds": history.seconds[0], "final_loss": history.train_loss[-1]}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--examples", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--real", action="store_true", help="use the machine's real devices")
    args = parser.parse_args(argv)
    rows = []
    for count in [int(d) for d in args.devices.split(",")]:
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        out = subprocess.run([sys.executable, "-c", WORKER, str(count), str(args.examples), str(args.epochs),
                              "1" if args.real else "0"], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"{count} devices: failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]["examples_per_second"] if rows else None
    print(f"{'devices':>8}{'platform':>10}{'ex/s':>12}{'vs 1':>8}{'1st epoch s':>13}{'final loss':>12}")
    for row in rows:
        print(f"{row['devices']:>8}{row['platform']:>10}{row['examples_per_second']:>12,.0f}"
              f"{row['examples_per_second'] / base:>7.2f}x{row['first_epoch_seconds']:>13.2f}"
              f"{row['final_loss']:>12.5f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scaling.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
