"""The contenders of the benchmark suite, each a way to train the same network.

Every contender builds a ``Runner`` for a workload: ``run_epoch()`` trains one
epoch (blocking until done) and returns the number of examples (or net-steps)
processed. The first call includes compilation. All use float32 and the same
shapes, batch size, optimizer and learning rate.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

MLP = (784, 512, 512, 10)


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str                 # "mlp", "cnn" (benchmarks/cnn.py), "gpt" (benchmarks/gpt.py), "xor" or "ensemble"
    sizes: tuple = MLP
    batch: int = 128
    n: int = 59_904           # examples per epoch (468 batches of 128)
    optimizer: str = "sgd"
    lr: float = 0.01
    steps: int = 0            # xor: full-batch steps per "epoch"
    nets: int = 1             # ensemble: networks trained at once

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


# --- fnnet ------------------------------------------------------------------------------------

def _fnnet_model(workload):
    import fnnet

    layers = []
    for width in workload.sizes[1:-1]:
        layers += [fnnet.Dense(width), fnnet.Tanh if workload.kind != "mlp" else fnnet.Relu]
    layers.append(fnnet.Dense(workload.sizes[-1]))
    loss = fnnet.losses.softmax_cross_entropy if workload.kind == "mlp" else \
        fnnet.losses.sigmoid_binary_cross_entropy
    return fnnet.serial(*layers), loss


def _optax(workload):
    import optax

    return optax.adam(workload.lr) if workload.optimizer == "adam" else optax.sgd(workload.lr)


class FnnetFit:
    """fnnet: ``train.fit`` for the MLP workloads (its history times each epoch), and
    ``train.fit_compiled`` / ``train.fit_ensemble`` (all steps in one compiled call) for XOR."""

    def __init__(self, workload, grad, progress=False, monitor=None):
        self.w, self.grad, self.progress, self.monitor = workload, grad, progress, monitor
        self.data = random_data(workload)
        self.model, self.loss = _fnnet_model(workload)
        self.optimizer = _optax(workload)
        self.calls = 0

    def measure_fit(self, epochs):
        """Per-epoch seconds of one ``fit`` run (the first includes compilation). With ``progress``,
        as on a terminal: the tqdm bar (on stderr) moved from inside each compiled epoch. With
        ``monitor``: fit's per-layer health recorded every ``monitor`` steps."""
        import jax

        from fnnet import train

        if self.progress:  # fit draws its bar only on a terminal: say the worker's streams are one
            sys.stdout.isatty = sys.stderr.isatty = lambda: True
        _, history = train.fit(self.model, self.loss, self.optimizer, self.data, epochs=epochs,
                               batch_size=self.w.batch, key=jax.random.PRNGKey(0), grad=self.grad,
                               verbose=self.progress, monitor=self.monitor)
        return history.seconds

    def run_epoch(self):
        import jax

        from fnnet import train

        self.calls += 1
        if self.w.kind == "xor":
            _, metrics = train.fit_compiled(self.model, self.loss, self.optimizer, self.data,
                                            key=jax.random.PRNGKey(self.calls), epochs=self.w.steps,
                                            grad=self.grad)
        else:
            keys = jax.random.split(jax.random.PRNGKey(self.calls), self.w.nets)
            _, metrics = train.fit_ensemble(self.model, self.loss, self.optimizer, self.data, keys=keys,
                                            epochs=self.w.steps, grad=self.grad)
        jax.block_until_ready(metrics["loss"])
        return self.w.steps * self.w.nets


# --- plain JAX ----------------------------------------------------------------------------

def _jax_mlp(workload):
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), len(workload.sizes) - 1)
    params = []
    for key, (a, b) in zip(keys, zip(workload.sizes[:-1], workload.sizes[1:])):
        limit = np.sqrt(6 / (a + b))
        params.append((jax.random.uniform(key, (a, b), jnp.float32, -limit, limit), jnp.zeros(b)))
    act = jax.nn.relu if workload.kind == "mlp" else jnp.tanh

    def forward(params, x):
        for w, b in params[:-1]:
            x = act(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    def loss_fn(params, x, y):
        logits = forward(params, x)
        if workload.kind == "mlp":
            return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])
        return jnp.mean(jnp.logaddexp(0, logits) - logits * y)

    return params, loss_fn


class JaxScan:
    """Plain JAX, jax.grad, optax, the whole epoch in one jitted lax.scan over pre-batched data."""

    def __init__(self, workload, loop=False, shuffle=False):
        import jax
        import optax

        self.w = workload
        x, y = random_data(workload)
        params, loss_fn = _jax_mlp(workload)
        optimizer = _optax(workload)

        def step(carry, batch):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params, *batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        self.carry = (params, optimizer.init(params))
        if workload.kind == "mlp":
            nb = workload.n // workload.batch
            self.xb = jax.device_put(x[:nb * workload.batch].reshape(nb, workload.batch, -1))
            self.yb = jax.device_put(y[:nb * workload.batch].reshape(nb, workload.batch))
            if loop:
                self.step = jax.jit(lambda c, xb, yb: step(c, (xb, yb))[0], donate_argnums=0)
                self.epoch = None
            elif shuffle:  # the common plain-JAX way: permute the whole data set every epoch
                self.key = jax.random.PRNGKey(1)
                flat_x, flat_y = jax.device_put(x), jax.device_put(y)

                def shuffled_epoch(c, key, xs, ys):
                    key, sub = jax.random.split(key)
                    perm = jax.random.permutation(sub, xs.shape[0])[:nb * workload.batch]
                    xb = xs[perm].reshape(nb, workload.batch, -1)
                    yb = ys[perm].reshape(nb, workload.batch)
                    return jax.lax.scan(step, c, (xb, yb))[0], key

                run = jax.jit(shuffled_epoch, donate_argnums=0)

                def epoch(c, xb, yb):
                    c, self.key = run(c, self.key, flat_x, flat_y)
                    return c

                self.epoch = epoch
                self.xb = self.yb = None
                self.xb_count = nb * workload.batch
            else:
                self.epoch = jax.jit(lambda c, xb, yb: jax.lax.scan(step, c, (xb, yb))[0],
                                     donate_argnums=0)
        else:
            steps = workload.steps

            def train_one(key):
                p, _ = _jax_mlp(workload)
                p = jax.tree.map(lambda a: a + 0 * jax.random.normal(key, ()), p)
                carry = (p, optimizer.init(p))
                carry = jax.lax.fori_loop(0, steps, lambda i, c: step(c, (x, y))[0], carry)
                return carry[0]

            if workload.kind == "ensemble":
                keys = jax.random.split(jax.random.PRNGKey(0), workload.nets)
                self.run = jax.jit(lambda: jax.vmap(train_one)(keys))
            else:
                self.run = jax.jit(lambda: train_one(jax.random.PRNGKey(0)))

    def run_epoch(self):
        import jax

        if self.w.kind != "mlp":
            jax.block_until_ready(self.run())
            return self.w.steps * self.w.nets
        if self.epoch is not None:
            self.carry = self.epoch(self.carry, self.xb, self.yb)
        else:
            for i in range(self.xb.shape[0]):
                self.carry = self.step(self.carry, self.xb[i], self.yb[i])
        jax.block_until_ready(self.carry)
        return self.xb_count if self.xb is None else self.xb.shape[0] * self.xb.shape[1]


# --- eager peers: a Python loop over batches --------------------------------------------------

class _EagerLoop:
    """A Python loop calling ``self._step(x_batch, y_batch)``: XOR full-batch, or in-order batches."""

    def run_epoch(self):
        w = self.w
        if w.kind == "xor":
            for _ in range(w.steps):
                self._step(self.x, self.y)
            return w.steps
        count = 0
        for start in range(0, w.n - w.batch + 1, w.batch):
            self._step(self.x[start:start + w.batch], self.y[start:start + w.batch])
            count += w.batch
        return count


class NumpyScratch(_EagerLoop):
    """The tutorials' from-scratch NumPy MLP: forward, deltas, dW = hᵀ·δ, hand-written SGD/Adam."""

    def __init__(self, workload):
        self.w = workload
        self.x, self.y = random_data(workload)
        rng = np.random.default_rng(0)
        self.params = []
        for a, b in zip(workload.sizes[:-1], workload.sizes[1:]):
            limit = np.sqrt(6 / (a + b))
            self.params.append([rng.uniform(-limit, limit, (a, b)).astype(np.float32),
                                np.zeros(b, np.float32)])
        self.m = [[np.zeros_like(p) for p in layer] for layer in self.params]
        self.v = [[np.zeros_like(p) for p in layer] for layer in self.params]
        self.t = 0

    def _step(self, x, y):
        w = self.w
        hs, zs = [x], []
        for i, (W, b) in enumerate(self.params):
            z = hs[-1] @ W + b
            zs.append(z)
            if i < len(self.params) - 1:
                hs.append(np.maximum(z, 0) if w.kind == "mlp" else np.tanh(z))
        logits = zs[-1]
        n = x.shape[0]
        if w.kind == "mlp":
            e = np.exp(logits - logits.max(1, keepdims=True))
            p = e / e.sum(1, keepdims=True)
            p[np.arange(n), y] -= 1
            delta = p / n                                   # delta_out = y_hat - y
        else:
            delta = (1 / (1 + np.exp(-logits)) - y) / n
        grads = [None] * len(self.params)
        for i in reversed(range(len(self.params))):
            grads[i] = (hs[i].T @ delta, delta.sum(0))       # dW = h.T @ delta
            if i:
                back = delta @ self.params[i][0].T
                delta = back * (zs[i - 1] > 0) if w.kind == "mlp" else back * (1 - hs[i] ** 2)
        if w.optimizer == "adam":
            self.t += 1
            for layer, g_layer, m_layer, v_layer in zip(self.params, grads, self.m, self.v):
                for j in range(2):
                    m_layer[j] = 0.9 * m_layer[j] + 0.1 * g_layer[j]
                    v_layer[j] = 0.999 * v_layer[j] + 0.001 * g_layer[j] ** 2
                    m_hat = m_layer[j] / (1 - 0.9 ** self.t)
                    v_hat = v_layer[j] / (1 - 0.999 ** self.t)
                    layer[j] -= w.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        else:
            for layer, g_layer in zip(self.params, grads):
                layer[0] -= w.lr * g_layer[0]
                layer[1] -= w.lr * g_layer[1]



# --- PyTorch and Flax NNX (optional) -------------------------------------------------------------

class TorchEager(_EagerLoop):
    """PyTorch eager, nn.Sequential and torch.optim, 2 threads."""

    def __init__(self, workload):
        import torch

        torch.set_num_threads(2)
        torch.manual_seed(0)
        self.torch, self.w = torch, workload
        layers = []
        for i, (a, b) in enumerate(zip(workload.sizes[:-1], workload.sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(workload.sizes) - 2:
                layers.append(torch.nn.ReLU() if workload.kind == "mlp" else torch.nn.Tanh())
        self.model = torch.nn.Sequential(*layers)
        self.opt = (torch.optim.Adam if workload.optimizer == "adam" else torch.optim.SGD)(
            self.model.parameters(), lr=workload.lr)
        x, y = random_data(workload)
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y.astype(np.int64) if workload.kind == "mlp" else y)
        self.loss = torch.nn.CrossEntropyLoss() if workload.kind == "mlp" else torch.nn.BCEWithLogitsLoss()

    def _step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(x), y).backward()
        self.opt.step()



class FlaxNNX:
    """Flax NNX: nnx.split once, a jitted step on (graphdef, state), nnx.merge inside."""

    def __init__(self, workload):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        self.w = workload
        x, y = random_data(workload)
        sizes = workload.sizes

        class MLP(nnx.Module):
            def __init__(self, rngs):
                self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

            def __call__(self, h):
                for layer in self.layers[:-1]:
                    h = jax.nn.relu(layer(h))
                return self.layers[-1](h)

        model = MLP(nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        optimizer = _optax(workload)

        def loss_fn(params, xb, yb):
            logits = nnx.merge(graphdef, params)(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        @jax.jit
        def step(params, opt_state, xb, yb):
            grads = jax.grad(loss_fn)(params, xb, yb)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        self.params, self.opt_state, self.step = params, optimizer.init(params), step
        nb = workload.n // workload.batch
        self.xb = jnp.asarray(x[:nb * workload.batch].reshape(nb, workload.batch, -1))
        self.yb = jnp.asarray(y[:nb * workload.batch].reshape(nb, workload.batch))

    def run_epoch(self):
        import jax

        for i in range(self.xb.shape[0]):
            self.params, self.opt_state = self.step(self.params, self.opt_state, self.xb[i], self.yb[i])
        jax.block_until_ready(self.params)
        return self.xb.shape[0] * self.xb.shape[1]


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


CONTENDERS = {
    "fnnet-manual": lambda w: FnnetFit(w, "manual"),
    "fnnet-autodiff": lambda w: FnnetFit(w, "autodiff"),
    "fnnet-progress": lambda w: FnnetFit(w, "manual", progress=True),
    "fnnet-monitor": lambda w: FnnetFit(w, "manual", monitor=10),
    "jax-scan": lambda w: JaxScan(w),
    "jax-scan-shuffled": lambda w: JaxScan(w, shuffle=True),
    "jax-loop": lambda w: JaxScan(w, loop=True),
    "numpy": NumpyScratch,
    "torch-eager": TorchEager,
    "flax-nnx": FlaxNNX,
}

# Which contenders run on which workload.
PLAN = {
    "mnist-sgd": ["fnnet-manual", "fnnet-autodiff", "jax-scan", "jax-scan-shuffled", "jax-loop", "numpy",
                  "torch-eager", "flax-nnx"],
    "mnist-adam": ["fnnet-manual", "fnnet-progress", "fnnet-monitor", "fnnet-autodiff", "jax-scan", "jax-scan-shuffled", "jax-loop",
                   "numpy", "torch-eager"],
    "wide-4096": ["fnnet-manual", "fnnet-autodiff", "jax-scan", "numpy", "torch-eager"],
    "tiny-batch-8": ["fnnet-manual", "jax-scan", "jax-loop", "numpy", "torch-eager"],
    "tiny-batch-1": ["fnnet-manual", "jax-scan", "jax-loop", "numpy", "torch-eager"],
    "cnn": ["fnnet-manual", "fnnet-monitor", "fnnet-autodiff", "jax-scan", "jax-loop", "torch-eager"],
    "gpt": ["fnnet-manual", "fnnet-autodiff", "jax-scan", "torch-eager"],
    "xor": ["fnnet-manual", "jax-scan", "numpy", "torch-eager"],
    "xor-ensemble": ["fnnet-manual", "jax-scan"],
}

OPTIONAL = {"torch-eager": "torch", "flax-nnx": "flax"}
