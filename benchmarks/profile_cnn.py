"""Where the CNN's training step spends its time, layer by layer, and the compiled step's HLO.

For each layer of ``fnnet.app.recipes.build_cnn`` (``--net cnn``: the example's CNN, the classic
recipe's; ``--net small``: the fast recipe's, ``fnnet train mnist --model cnn``; batch 128): its forward and
hand-written backward at its own input shape, 10 times inside one jitted ``lax.scan``
(training mode: batch statistics, dropout), the median of 5 timings; then the whole training
step (forward, backward, Adam) the same way, and PyTorch eager's step on the same network for
comparison when torch is installed. Writes ``benchmarks/results/cnn_profile.json`` and the
optimised HLO of the scanned step to ``benchmarks/results/cnn_step.hlo.txt`` (``cnn_small_*`` for
``--net small``).

Run: ``python benchmarks/profile_cnn.py [--net cnn|small]``
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import fnnet
from fnnet import train
from fnnet.app import recipes
from fnnet.layer import forward_with_state, init_with_state

HERE = pathlib.Path(__file__).resolve().parent
BATCH, REPEAT = 128, 10


def timed(fn, *args, rounds=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - started)
    return statistics.median(times) / REPEAT * 1e3  # ms per step


def layer_costs(net):
    model = recipes.build_cnn(10, (28, 28, 1), kind=net)
    shape, rows = (28, 28, 1), []
    for index, layer in enumerate(model.children):
        out_shape, params, state = init_with_state(layer, jax.random.PRNGKey(index), shape)
        x = jax.random.normal(jax.random.PRNGKey(100 + index), (BATCH,) + shape)
        dy = jax.random.normal(jax.random.PRNGKey(200 + index), (BATCH,) + tuple(out_shape))

        def scanned(params, x, dy, layer=layer, state=state):
            def body(carry, i):
                y, residuals, _ = forward_with_state(layer, params, state, x + carry, key=jax.random.PRNGKey(i),
                                                     train=True)
                grads, dx = layer.backward(params, residuals, dy)
                total = jnp.sum(y) + jnp.sum(dx) + sum(jnp.sum(g) for g in jax.tree.leaves(grads))
                return carry + 1e-9 * total, None
            return jax.lax.scan(body, jnp.zeros((), x.dtype), jnp.arange(REPEAT))[0]

        ms = timed(jax.jit(scanned), params, x, dy)
        rows.append({"layer": f"{index}:{fnnet.layer_name(layer)}", "in_shape": list(shape), "ms": ms})
        print(f"{rows[-1]['layer']:<28} in {str(shape):<14} forward+backward {ms:6.2f} ms", flush=True)
        shape = tuple(out_shape)
    return rows


def whole_step(net, hlo_path):
    model = recipes.build_cnn(10, (28, 28, 1), kind=net)
    optimizer = optax.adam(1e-3)
    step = train.make_train_step(model, fnnet.losses.softmax_cross_entropy, optimizer)
    state = train.init_state(model, optimizer, jax.random.PRNGKey(0), (28, 28, 1))
    x = jax.random.uniform(jax.random.PRNGKey(1), (REPEAT, BATCH, 28, 28, 1))
    y = jax.random.randint(jax.random.PRNGKey(2), (REPEAT, BATCH), 0, 10)
    run = jax.jit(lambda s, x, y: jax.lax.scan(lambda s, b: step(s, *b), s, (x, y))[0])
    hlo_path.write_text(run.lower(state, x, y).compile().as_text())
    return timed(run, state, x, y)


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
    import sys

    sys.path.insert(0, str(HERE))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=("cnn", "small"), default="cnn")
    net = parser.parse_args().net
    name = "cnn" if net == "cnn" else "cnn_small"
    (HERE / "results").mkdir(exist_ok=True)
    rows = layer_costs(net)
    step = whole_step(net, HERE / "results" / f"{name}_step.hlo.txt")
    torch_ms = torch_step(net)
    total = sum(r["ms"] for r in rows)
    print(f"\nsum of the layers {total:.1f} ms; the whole step (with the loss and Adam) {step:.1f} ms"
          + (f"; PyTorch eager's step {torch_ms:.1f} ms" if torch_ms else ""))
    (HERE / "results" / f"{name}_profile.json").write_text(json.dumps(
        {"net": net, "layers": rows, "sum_ms": total, "step_ms": step, "torch_step_ms": torch_ms, "batch": BATCH},
        indent=2))
    print(f"wrote {HERE / 'results' / f'{name}_profile.json'} and {HERE / 'results' / f'{name}_step.hlo.txt'}")


if __name__ == "__main__":
    main()
