"""Where the CNN's training step spends its time, layer by layer, and the compiled step's HLO.

For each layer of ``fnnet.app.recipes.build_cnn`` (the example's CNN, batch 128): its forward and
hand-written backward at its own input shape, 10 times inside one jitted ``lax.scan``
(training mode: batch statistics, dropout), the median of 5 timings; then the whole training
step (forward, backward, Adam) the same way, and PyTorch eager's step on the same network for
comparison when torch is installed. Writes ``benchmarks/results/cnn_profile.json`` and the
optimised HLO of the scanned step to ``benchmarks/results/cnn_step.hlo.txt``.

Run: ``python benchmarks/profile_cnn.py``
"""

from __future__ import annotations

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


def layer_costs():
    model = recipes.build_cnn(10, (28, 28, 1))
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


def whole_step():
    model = recipes.build_cnn(10, (28, 28, 1))
    optimizer = optax.adam(1e-3)
    step = train.make_train_step(model, fnnet.losses.softmax_cross_entropy, optimizer)
    state = train.init_state(model, optimizer, jax.random.PRNGKey(0), (28, 28, 1))
    x = jax.random.uniform(jax.random.PRNGKey(1), (REPEAT, BATCH, 28, 28, 1))
    y = jax.random.randint(jax.random.PRNGKey(2), (REPEAT, BATCH), 0, 10)
    run = jax.jit(lambda s, x, y: jax.lax.scan(lambda s, b: step(s, *b), s, (x, y))[0])
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cnn_step.hlo.txt").write_text(run.lower(state, x, y).compile().as_text())
    return timed(run, state, x, y)


def torch_step():
    try:
        import torch
    except ImportError:
        return None
    from contenders.cnn import TorchCNN
    from workloads import WORKLOADS

    runner = TorchCNN(WORKLOADS["cnn"])
    runner.run_epoch()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        count = runner.run_epoch()
        times.append((time.perf_counter() - started) / (count / BATCH))
    return statistics.median(times) * 1e3


def main():
    import sys

    sys.path.insert(0, str(HERE))
    rows = layer_costs()
    step = whole_step()
    torch_ms = torch_step()
    total = sum(r["ms"] for r in rows)
    print(f"\nsum of the layers {total:.1f} ms; the whole step (with the loss and Adam) {step:.1f} ms"
          + (f"; PyTorch eager's step {torch_ms:.1f} ms" if torch_ms else ""))
    (HERE / "results" / "cnn_profile.json").write_text(json.dumps(
        {"layers": rows, "sum_ms": total, "step_ms": step, "torch_step_ms": torch_ms, "batch": BATCH}, indent=2))
    print(f"wrote {HERE / 'results' / 'cnn_profile.json'} and {HERE / 'results' / 'cnn_step.hlo.txt'}")


if __name__ == "__main__":
    main()
