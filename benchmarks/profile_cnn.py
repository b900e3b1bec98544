"""Where the CNN's training step spends its time, layer by layer, and the compiled step's HLO.

For each layer of ``fnnet.app.recipes.build_cnn`` (``--net cnn``: the example's CNN, the classic
recipe's; ``--net small``: the fast recipe's, ``fnnet train mnist --model cnn``; batch 128): its forward and
hand-written backward at its own input shape, 10 times inside one jitted ``lax.scan``
(training mode: batch statistics, dropout), the median of 5 timings, with the GFLOP/s of the
convolutions' and Dense layers' three products; then the whole training step (forward, backward,
Adam) the same way, compiled as ``fit`` compiles it (:mod:`fnnet.xla_options`) and with XLA's
default options, in turns; and PyTorch eager's step on the same network for comparison when torch
is installed. Writes ``benchmarks/results/cnn_profile.json`` and the
optimised HLO of the scanned step to ``benchmarks/results/cnn_step.hlo.txt`` (``cnn_small_*`` for
``--net small``).

Run: ``python benchmarks/profile_cnn.py [--net cnn|small]``
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import statistics
import time

import jax
import optax

import fnnet
from fnnet import train, xla_options
from fnnet.app import recipes
from fnnet.layer import abstract_init
from profiling import REPEAT, layer_ms, timed

HERE = pathlib.Path(__file__).resolve().parent
BATCH = 128


def layer_costs(net):
    model = recipes.build_cnn(10, (28, 28, 1), kind=net)
    shape, rows = (28, 28, 1), []
    for index, layer in enumerate(model.children):
        x = jax.random.normal(jax.random.PRNGKey(100 + index), (BATCH,) + shape)
        ms = layer_ms(layer, x, jax.random.PRNGKey(index))
        out_shape, params, _ = abstract_init(layer, shape)
        # a convolution's or Dense's three products (forward, dx, dW): 2·outputs·fan-in each
        weights = params.get("w") if isinstance(params, dict) else None
        flops = 3 * 2 * BATCH * math.prod(out_shape) * math.prod(weights.shape[:-1]) if weights is not None else 0
        rows.append({"layer": f"{index}:{fnnet.layer_name(layer)}", "in_shape": list(shape), "ms": ms,
                     "gflop": flops / 1e9, "gflops_per_s": flops / ms / 1e6 if flops else None})
        rate = f"  {flops / 1e9:5.2f} GFLOP, {flops / ms / 1e6:4.0f} GFLOP/s" if flops else ""
        print(f"{rows[-1]['layer']:<28} in {str(shape):<14} forward+backward {ms:6.2f} ms{rate}", flush=True)
        shape = tuple(out_shape)
    return rows


def training_steps(net, count=REPEAT):
    """``(steps, model, args)``: ``steps(*args)`` runs ``count`` Adam training steps of the network
    on random batch-128 images in one ``lax.scan``, not yet jitted."""
    model = recipes.build_cnn(10, (28, 28, 1), kind=net)
    optimizer = optax.adam(1e-3)
    step = train.make_train_step(model, fnnet.losses.softmax_cross_entropy, optimizer)
    state = train.init_state(model, optimizer, jax.random.PRNGKey(0), (28, 28, 1))
    x = jax.random.uniform(jax.random.PRNGKey(1), (count, BATCH, 28, 28, 1))
    y = jax.random.randint(jax.random.PRNGKey(2), (count, BATCH), 0, 10)

    def steps(state, x, y):
        return jax.lax.scan(lambda state, batch: step(state, *batch), state, (x, y))[0]

    return steps, model, (state, x, y)


def whole_step(net, hlo_path):
    """``(ms, ms with XLA's default options)`` of the whole training step: compiled as ``fit``
    compiles it (:mod:`fnnet.xla_options`) and with XLA's defaults, timed in turns (8 of each, the
    medians), so the machine's load falls on both alike."""
    steps, model, (state, x, y) = training_steps(net)
    runs = [xla_options.jit(steps, model), jax.jit(steps)]
    hlo_path.write_text(runs[0].lower(state, x, y).compile().as_text())
    times = [[], []]
    for _ in range(8):
        for run, kept in zip(runs, times):
            kept.append(timed(run, state, x, y, rounds=1))
    return statistics.median(times[0]), statistics.median(times[1])


def torch_step(net):
    """PyTorch eager's step (forward, backward, Adam; 2 threads) on the same network: ms, or None
    without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    from contenders.cnn import TorchCNN
    from pytorch_mnist_cnn import small_network
    from workloads import WORKLOADS

    small = dict(network=small_network, betas=(0.7, 0.9)) if net == "small" else {}
    runner = TorchCNN(WORKLOADS["cnn"], **small)
    runner.run_epoch()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        count = runner.run_epoch()
        times.append((time.perf_counter() - started) / (count / BATCH))
    return statistics.median(times) * 1e3


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=("cnn", "small"), default="cnn")
    net = parser.parse_args().net
    name = "cnn" if net == "cnn" else "cnn_small"
    (HERE / "results").mkdir(exist_ok=True)
    rows = layer_costs(net)
    step, step_xla_defaults = whole_step(net, HERE / "results" / f"{name}_step.hlo.txt")
    torch_ms = torch_step(net)
    total = sum(r["ms"] for r in rows)
    products = sum(r["ms"] for r in rows if r["gflop"])
    print(f"\nsum of the layers {total:.1f} ms, of which the convolutions and Dense layers {products:.1f} ms "
          f"({sum(r['gflop'] for r in rows):.2f} GFLOP); the whole step (with the loss and Adam) {step:.1f} ms "
          f"({step_xla_defaults:.1f} ms compiled with XLA's default options)"
          + (f"; PyTorch eager's step {torch_ms:.1f} ms: fnnet is {torch_ms / step:.2f}x, and 1.5x would need "
             f"{torch_ms / 1.5:.1f} ms" if torch_ms else ""))
    (HERE / "results" / f"{name}_profile.json").write_text(json.dumps(
        {"net": net, "layers": rows, "sum_ms": total, "products_ms": products, "step_ms": step, "step_ms_xla_defaults": step_xla_defaults, "torch_step_ms": torch_ms, "batch": BATCH},
        indent=2))
    print(f"wrote {HERE / 'results' / f'{name}_profile.json'} and {HERE / 'results' / f'{name}_step.hlo.txt'}")


if __name__ == "__main__":
    main()
