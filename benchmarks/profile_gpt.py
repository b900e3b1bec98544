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
   when torch is installed;
5. the same matrix products as (2) in PyTorch (oneDNN / MKL ``torch.mm`` and ``bmm``, 2 threads), and
   one 1024³ product in each, this machine's best GEMM rate, so that XLA's dots are measured against the
   machine and not against themselves. The CPU's model and vector ISA head the output (ratios differ
   between the AMD EPYC and the Intel Xeon machines).

Writes ``benchmarks/results/gpt_profile.json`` and the optimised HLO of the scanned step to
``benchmarks/results/gpt_step.hlo.txt``.

Run: ``python benchmarks/profile_gpt.py`` (about a minute on 2 cores)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

import fnnet
from contenders.gpt import BLOCK, FEATURES, HEADS, LAYERS, VOCAB, FnnetGPT, TorchGPT
from fnnet import gpt
from fnnet.layer import abstract_init, layer_children
from profiling import REPEAT, eager_ms, layer_ms, timed
from run import cpu
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


def torch_products():
    """``(ms of (2)'s products in PyTorch, GFLOP/s of a 1024³ torch.mm)``, or None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch
    torch.set_num_threads(2)
    c, heads, t, head_dim = FEATURES, HEADS, BLOCK, FEATURES // HEADS
    dense = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)] * LAYERS + [(c, VOCAB)]
    weights = [torch.randn(shape) * 0.02 for shape in dense]
    x = {n_in: torch.randn(ROWS, n_in) for n_in in {n for n, _ in dense}}
    q = torch.randn(BATCH * heads, t, head_dim)

    def one_step():
        for w in weights:
            y = x[w.shape[0]] @ w
            y @ w.T, x[w.shape[0]].T @ y                                           # forward, dx, dW
        for _ in range(LAYERS):
            scores = torch.bmm(q, q.transpose(1, 2))
            out = torch.bmm(scores, q)
            torch.bmm(out, q.transpose(1, 2)), torch.bmm(scores.transpose(1, 2), out)
            torch.bmm(scores, q), torch.bmm(scores.transpose(1, 2), q)

    big = torch.randn(1024, 1024)
    return eager_ms(one_step), 2 * 1024 ** 3 / eager_ms(lambda: big @ big, 5) / 1e6


def xla_big_gemm() -> float:
    """GFLOP/s of one 1024³ product in XLA (``jnp.dot``), ten in a jitted scan."""
    big = jax.random.normal(jax.random.PRNGKey(0), (1024, 1024))
    scanned = jax.jit(lambda a: jax.lax.scan(lambda carry, _: (carry + 1e-12 * jnp.sum((a + carry) @ a), None),
                                             jnp.zeros(()), jnp.arange(10))[0])   # (a + carry): not hoisted
    return 2 * 1024 ** 3 / timed(scanned, big, per=10) / 1e6


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
    machine = cpu()
    print(f"CPU: {machine['model']}; ISA: {', '.join(machine['isa'])}; {os.cpu_count()} cores")
    rows = layer_costs()
    products_ms, flops = matmuls_alone()
    step = whole_step(HERE / "results" / "gpt_step.hlo.txt")
    torch_ms = torch_step()
    in_torch = torch_products()
    xla_gemm = xla_big_gemm()
    rate = flops / products_ms / 1e6
    print(f"\nthe step's matrix products alone: {products_ms:.1f} ms ({flops / 1e9:.2f} GFLOP, {rate:.0f} GFLOP/s)")
    print(f"the whole step (windows, forward, backward, clipping, AdamW): {step:.1f} ms, "
          f"{flops / step / 1e6:.0f} GFLOP/s of the same products, {ROWS / step * 1e3:,.0f} tokens/s; "
          f"the products are {products_ms / step:.0%} of it")
    if torch_ms:
        print(f"PyTorch eager's step: {torch_ms:.1f} ms, {ROWS / torch_ms * 1e3:,.0f} tokens/s: "
              f"fnnet is {torch_ms / step:.2f}x; 2x would need {torch_ms / 2:.1f} ms, "
              f"{'less than' if torch_ms / 2 < products_ms else 'more than'} the products alone")
    print(f"one 1024³ product: XLA {xla_gemm:.0f} GFLOP/s" +
          (f", PyTorch {in_torch[1]:.0f} GFLOP/s" if in_torch else ""))
    if in_torch:
        print(f"the step's products in PyTorch: {in_torch[0]:.1f} ms ({flops / in_torch[0] / 1e6:.0f} GFLOP/s): "
              f"XLA's are {in_torch[0] / products_ms:.2f}x PyTorch's rate")
    (HERE / "results" / "gpt_profile.json").write_text(json.dumps(
        {"cpu": machine, "xla_gemm_1024_gflops": xla_gemm,
         "torch_products_ms": in_torch[0] if in_torch else None,
         "torch_gemm_1024_gflops": in_torch[1] if in_torch else None, "layers": rows, "products_ms": products_ms, "products_gflop": flops / 1e9, "products_gflops_per_s": rate,
         "step_ms": step, "tokens_per_second": ROWS / step * 1e3, "torch_step_ms": torch_ms,
         "torch_tokens_per_second": ROWS / torch_ms * 1e3 if torch_ms else None, "batch": BATCH, "block": BLOCK},
        indent=2))
    print(f"wrote {HERE / 'results' / 'gpt_profile.json'} and {HERE / 'results' / 'gpt_step.hlo.txt'}")


if __name__ == "__main__":
    main()
