"""The benchmark suite's workloads: each a network, data shape, batch, optimizer and epoch size that
every contender (``benchmarks/contenders/``) trains the same way, and the matmul roofline of one."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

MLP = (784, 512, 512, 10)


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str                 # "mlp", "cnn" (contenders/cnn.py), "gpt" (contenders/gpt.py), "lstm"
                              # (contenders/lstm.py), "xor" or "ensemble"
    sizes: tuple = MLP
    batch: int = 128
    n: int = 59_904           # examples per epoch (468 batches of 128)
    optimizer: str = "sgd"
    lr: float = 0.01
    steps: int = 0            # xor: full-batch steps per "epoch"
    nets: int = 1             # ensemble: networks trained at once
    block: int = 0            # lstm: T, the steps of each training window

    def flops_per_example(self) -> float:
        """Matmul FLOPs of one training example: forward 2·in·out per layer, backward dW for every
        layer and dx for all but the first."""
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        forward = sum(2 * a * b for a, b in pairs)
        return forward + forward + sum(2 * a * b for a, b in pairs[1:])


WORKLOADS = {
    "mnist-sgd": Workload("mnist-sgd", "mlp", optimizer="sgd", lr=0.01),
    "mnist-adam": Workload("mnist-adam", "mlp", optimizer="adam", lr=1e-3),
    "wide-4096": Workload("wide-4096", "mlp", sizes=(784, 4096, 4096, 10), batch=256, n=2048,
                          optimizer="sgd", lr=0.01),
    "tiny-batch-8": Workload("tiny-batch-8", "mlp", batch=8, n=4096, optimizer="sgd", lr=0.01),
    "tiny-batch-1": Workload("tiny-batch-1", "mlp", batch=1, n=1024, optimizer="sgd", lr=0.01),
    "cnn": Workload("cnn", "cnn", sizes=(784, 10), batch=128, n=2048, optimizer="adam", lr=1e-3),
    # gpt: n windows of 64 tokens per "epoch" (100 steps of batch 12); throughput in tokens/s
    "gpt": Workload("gpt", "gpt", sizes=(65, 65), batch=12, n=1200, optimizer="adamw", lr=1e-3),
    # lstm (issue 31): char-rnn's size, vocabulary 65 -> 2 LSTM layers of 128 -> 65, T 50, batch 50;
    # n windows of 50 characters per "epoch" (40 steps of 2,500 tokens); throughput in tokens/s
    "lstm": Workload("lstm", "lstm", sizes=(65, 128, 128, 65), batch=50, n=2000, optimizer="adam", lr=2e-3,
                     block=50),
    "xor": Workload("xor", "xor", sizes=(2, 4, 1), batch=4, n=4, lr=0.5, steps=10_000),
    "xor-ensemble": Workload("xor-ensemble", "ensemble", sizes=(2, 4, 1), batch=4, n=4, lr=0.5,
                             steps=10_000, nets=1000),
}


def random_data(workload: Workload, seed: int = 0):
    rng = np.random.default_rng(seed)
    if workload.kind in ("xor", "ensemble"):
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
        return x, np.array([[0], [1], [1], [0]], np.float32)
    x = rng.random((workload.n, workload.sizes[0]), dtype=np.float32)
    y = rng.integers(0, workload.sizes[-1], workload.n).astype(np.int32)
    return x, y


def matmul_rate(workload: Workload, repeats: int = 3) -> float:
    """GFLOP/s of XLA float32 matmuls with exactly one training step's shapes (in a scan)."""
    import jax
    import jax.numpy as jnp

    sizes, batch = workload.sizes, workload.batch
    steps = max(1, min(200, workload.n // batch))
    key = jax.random.PRNGKey(0)
    ws = [jax.random.normal(key, (a, b), jnp.float32) * 0.01 for a, b in zip(sizes[:-1], sizes[1:])]
    xs = jax.random.normal(key, (steps, batch, sizes[0]), jnp.float32)

    def body(acc, x):
        hs, h = [x], x
        for w in ws:
            h = h @ w
            hs.append(h)
        delta = h
        total = acc
        for i in reversed(range(len(ws))):
            total = total + jnp.sum(hs[i].T @ delta)            # dW
            if i:
                delta = delta @ ws[i].T                          # dx
        return total, None

    run = jax.jit(lambda xs: jax.lax.scan(body, jnp.zeros(()), xs)[0])
    jax.block_until_ready(run(xs))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(run(xs))
        best = min(best, time.perf_counter() - started)
    return workload.flops_per_example() * steps * batch / best / 1e9
