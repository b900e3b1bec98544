"""Where the GPT's training step spends its time, and how close it runs to this CPU's matrix products.

nanoGPT's CPU configuration (``contenders/gpt.py``: 4 layers, 4 heads, 128 features, context 64,
batch 12, so every projection is a product over B·T = 768 rows), on one process:

1. each layer of ``fnnet.gpt.GPT`` (the embeddings, one TransformerBlock, the final LayerNorm and
   the head) and each layer inside that block: forward (training mode) and hand-written backward,
   10 times inside one jitted ``lax.scan``, the median of 5 timings;
2. **the step's matrix products alone**: every Dense's forward, ``dx`` and ``dW`` and attention's
   batched products (``q·kᵀ``, ``p·v``) with their gradients, at the step's own shapes, as plain
   ``jnp.dot``/``einsum`` in one jitted scan: what XLA's CPU dot gives for exactly this arithmetic;
3. the whole step, as ``fnnet train shakespeare`` runs it (``fnnet.train.language.make_interval``:
   windows drawn on the device, forward, backward, clipping, AdamW), with its rate in GFLOP/s of the
   products of (2) (the model's arithmetic; the elementwise work is not counted);
4. PyTorch eager's nanoGPT step (``contenders/gpt.py``'s ``TorchGPT``, 2 threads) in the same run,
   when torch is installed.

Writes ``benchmarks/results/gpt_profile.json`` and the optimised HLO of the scanned step to
``benchmarks/results/gpt_step.hlo.txt``.

Run: ``python benchmarks/profile_gpt.py`` (about a minute on 2 cores)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

import fnnet
from contenders.gpt import BLOCK, FEATURES, HEADS, LAYERS, VOCAB, FnnetGPT, TorchGPT
from fnnet import gpt
from fnnet.layer import abstract_init, layer_children
from profiling import REPEAT, layer_ms, timed
from workloads import WORKLOADS

HERE = pathlib.Path(__file__).resolve().parent
BATCH = WORKLOADS["gpt"].batch
ROWS = BATCH * BLOCK


def layer_costs():
    """``[{"layer", "in_shape", "ms"}]``: the GPT's own layers (one block standing for all four),
    then the layers inside that block."""
    model = gpt.GPT(gpt.GPTConfig(VOCAB, BLOCK, LAYERS, HEADS, FEATURES))
    children = layer_children(model)
    first_block = next(index for index, layer in enumerate(children) if layer_children(layer))
    shape, rows = (BLOCK,), []

    def measure(name, layer, shape, index):
        key = jax.random.PRNGKey(index)
        x = (jax.random.randint(key, (BATCH,) + shape, 0, VOCAB) if shape == (BLOCK,)
             else jax.random.normal(key, (BATCH,) + shape))
        ms = layer_ms(layer, x, jax.random.PRNGKey(100 + index))
        rows.append({"layer": name, "in_shape": list(shape), "ms": ms})
        print(f"{name:<40} in {str(shape):<12} forward+backward {ms:6.2f} ms", flush=True)

    for index, layer in enumerate(children):
        if not layer_children(layer) or index == first_block:
            measure(f"{index}:{fnnet.layer_name(layer)}", layer, shape, index)
        shape = tuple(abstract_init(layer, shape)[0])
    block_shape = (BLOCK, FEATURES)
    for half, residual in enumerate(layer_children(children[first_block])):
        inner = layer_children(layer_children(layer_children(residual)[1])[0])  # FanOut, parallel(serial, Identity), FanInSum
        for position, layer in enumerate(inner):
            measure(f"  block {first_block}.{half}.{position}:{fnnet.layer_name(layer)}", layer, block_shape,
                    1000 + 10 * half + position)
            block_shape = tuple(abstract_init(layer, block_shape)[0])
        block_shape = (BLOCK, FEATURES)
    return rows


def matmuls_alone():
    """``(ms, flops)``: one step's matrix products (forward, ``dx``, ``dW``) at its shapes, in a scan."""
    c, heads, t, head_dim = FEATURES, HEADS, BLOCK, FEATURES // HEADS
    dense = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)] * LAYERS + [(c, VOCAB)]
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 64))
    weights = [jax.random.normal(next(keys), shape) * 0.02 for shape in dense]
    x = {n_in: jax.random.normal(next(keys), (ROWS, n_in)) for n_in in {n for n, _ in dense}}
    q = jax.random.normal(next(keys), (BATCH * heads, t, head_dim))
    flops = sum(3 * 2 * ROWS * n_in * n_out for n_in, n_out in dense)          # forward, dx, dW
    flops += LAYERS * 3 * 2 * (2 * BATCH * heads * t * t * head_dim)            # q·kᵀ and p·v, and their gradients

    def scanned(weights, x, q):
        def body(carry, _):
            total = carry
            for w in weights:
                inputs = x[w.shape[0]] + carry
                y = inputs @ w
                total += jnp.sum(y @ w.T) + jnp.sum(inputs.T @ y)               # forward, dx, dW
            for _ in range(LAYERS):
                k = q + carry
                scores = jnp.einsum("bqd,bkd->bqk", q, k)                        # q·kᵀ
                out = jnp.einsum("bqk,bkd->bqd", scores, k)                     # p·v
                d_scores = jnp.einsum("bqd,bkd->bqk", out, k)                   # dp = dout·vᵀ
                total += (jnp.sum(out) + jnp.sum(jnp.einsum("bqk,bqd->bkd", scores, out))  # dv = pᵀ·dout
                          + jnp.sum(jnp.einsum("bqk,bkd->bqd", d_scores, k))    # dq = ds·k
                          + jnp.sum(jnp.einsum("bqk,bqd->bkd", d_scores, q)))   # dk = dsᵀ·q
            return carry + 1e-12 * total, None
        return jax.lax.scan(body, jnp.zeros(()), jnp.arange(REPEAT))[0]

    return timed(jax.jit(scanned), weights, x, q), flops


def ms_per_step(runner) -> float:
    """Milliseconds per step of a contender (``run_epoch`` runs ``runner.steps`` of them): the
    median of 5 epochs after a warm-up one."""
    runner.run_epoch()
    times = []
    for _ in range(5):
        started = time.perf_counter()
        runner.run_epoch()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / runner.steps * 1e3


def whole_step(hlo_path):
    """ms per step of ``fnnet train shakespeare``'s loop, ``REPEAT`` steps per call."""
    runner = FnnetGPT(dataclasses.replace(WORKLOADS["gpt"], n=REPEAT * BATCH), "manual")
    hlo_path.write_text(runner.interval.lower(runner.state, runner.tokens, runner.steps).compile().as_text())
    return ms_per_step(runner)


def torch_step():
    """PyTorch eager's nanoGPT step (ms), or None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    return ms_per_step(TorchGPT(dataclasses.replace(WORKLOADS["gpt"], n=REPEAT * BATCH)))


def main():
    (HERE / "results").mkdir(exist_ok=True)
    rows = layer_costs()
    products_ms, flops = matmuls_alone()
    step = whole_step(HERE / "results" / "gpt_step.hlo.txt")
    torch_ms = torch_step()
    rate = flops / products_ms / 1e6
    print(f"\nthe step's matrix products alone: {products_ms:.1f} ms ({flops / 1e9:.2f} GFLOP, {rate:.0f} GFLOP/s)")
    print(f"the whole step (windows, forward, backward, clipping, AdamW): {step:.1f} ms, "
          f"{flops / step / 1e6:.0f} GFLOP/s of the same products, {ROWS / step * 1e3:,.0f} tokens/s; "
          f"the products are {products_ms / step:.0%} of it")
    if torch_ms:
        print(f"PyTorch eager's step: {torch_ms:.1f} ms, {ROWS / torch_ms * 1e3:,.0f} tokens/s: "
              f"fnnet is {torch_ms / step:.2f}x; 2x would need {torch_ms / 2:.1f} ms, "
              f"{'less than' if torch_ms / 2 < products_ms else 'more than'} the products alone")
    (HERE / "results" / "gpt_profile.json").write_text(json.dumps(
        {"layers": rows, "products_ms": products_ms, "products_gflop": flops / 1e9, "products_gflops_per_s": rate,
         "step_ms": step, "tokens_per_second": ROWS / step * 1e3, "torch_step_ms": torch_ms,
         "torch_tokens_per_second": ROWS / torch_ms * 1e3 if torch_ms else None, "batch": BATCH, "block": BLOCK},
        indent=2))
    print(f"wrote {HERE / 'results' / 'gpt_profile.json'} and {HERE / 'results' / 'gpt_step.hlo.txt'}")


if __name__ == "__main__":
    main()
