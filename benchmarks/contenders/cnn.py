"""The CNN workload: the example's network (``fnnet.app.recipes.build_cnn``) trained four ways.

Conv 3x3 (32, no bias) → BatchNorm → ReLU → MaxPool 2 → Conv 3x3 (64, no bias) → BatchNorm →
ReLU → MaxPool 2 → Flatten → Dropout(0.3) → Dense(128) → ReLU → Dense(10), softmax
cross-entropy, Adam 1e-3, batch 128, MNIST-shaped random images:

* ``fnnet-manual`` / ``fnnet-autodiff``: ``fnnet.train.fit`` (whole epochs in one ``lax.scan``)
  with the hand-written backward passes, or with ``jax.grad`` of the same layers;
* ``jax-scan``: the same network in plain JAX (``lax.conv_general_dilated``,
  ``lax.reduce_window``, ``jax.grad``), the whole epoch in one jitted ``lax.scan``;
* ``jax-loop``: the same plain-JAX step, jitted, called from a Python loop (XLA's CPU
  backend optimises a convolution's autodiff weight gradient at the top level of a
  program, not inside a loop body: jax issue #12868);
* ``torch-eager``: ``torch.nn.Sequential`` with the same layers (NCHW), 2 threads.
"""

from __future__ import annotations

import numpy as np

from contenders._shared import fit_seconds


def random_images(workload, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((workload.n, 28, 28, 1), dtype=np.float32),
            rng.integers(0, 10, workload.n).astype(np.int32))


class FnnetCNN:
    """``fnnet.train.fit`` of ``recipes.build_cnn`` on the images."""

    def __init__(self, workload, grad, monitor=None):
        import optax

        import fnnet
        from fnnet.app import recipes

        self.w, self.grad, self.monitor = workload, grad, monitor
        self.data = random_images(workload)
        self.model = recipes.build_cnn(10, (28, 28, 1))
        self.loss = fnnet.losses.softmax_cross_entropy
        self.optimizer = optax.adam(workload.lr)

    def measure_fit(self, epochs):
        return fit_seconds(self.model, self.loss, self.optimizer, self.data, epochs=epochs, batch_size=self.w.batch,
                           grad=self.grad, verbose=False, monitor=self.monitor)


def _plain_jax_cnn():
    """(params, state, loss(params, state, x, y, key) -> (loss, state)) in plain JAX."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    keys = jax.random.split(jax.random.PRNGKey(0), 4)

    def he(key, shape, fan_in):
        return jax.random.normal(key, shape, jnp.float32) * np.sqrt(2.0 / fan_in)

    params = {"conv1": he(keys[0], (3, 3, 1, 32), 9), "bn1": (jnp.ones(32), jnp.zeros(32)),
              "conv2": he(keys[1], (3, 3, 32, 64), 9 * 32), "bn2": (jnp.ones(64), jnp.zeros(64)),
              "dense1": (he(keys[2], (3136, 128), 3136), jnp.zeros(128)),
              "dense2": (he(keys[3], (128, 10), 128) / np.sqrt(2.0), jnp.zeros(10))}
    state = {"bn1": (jnp.zeros(32), jnp.ones(32)), "bn2": (jnp.zeros(64), jnp.ones(64))}

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def batchnorm(x, scale_offset, running):
        mean, var = jnp.mean(x, (0, 1, 2)), jnp.var(x, (0, 1, 2))
        new = tuple(0.9 * r + 0.1 * lax.stop_gradient(s) for r, s in zip(running, (mean, var)))
        return (x - mean) * lax.rsqrt(var + 1e-5) * scale_offset[0] + scale_offset[1], new

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def loss(params, state, x, y, key):
        h, s1 = batchnorm(conv(x, params["conv1"]), params["bn1"], state["bn1"])
        h = pool(jax.nn.relu(h))
        h, s2 = batchnorm(conv(h, params["conv2"]), params["bn2"], state["bn2"])
        h = pool(jax.nn.relu(h)).reshape(x.shape[0], -1)
        h = jnp.where(jax.random.bernoulli(key, 0.7, h.shape), h / 0.7, 0.0)
        h = jax.nn.relu(h @ params["dense1"][0] + params["dense1"][1])
        logits = h @ params["dense2"][0] + params["dense2"][1]
        value = jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])
        return value, {"bn1": s1, "bn2": s2}

    return params, state, loss


class JaxCNN:
    """Plain JAX with ``jax.grad``: one jitted ``lax.scan`` per epoch, or a jitted step in a loop."""

    def __init__(self, workload, loop=False):
        import jax
        import optax

        self.w, self.loop = workload, loop
        x, y = random_images(workload)
        params, state, loss = _plain_jax_cnn()
        optimizer = optax.adam(workload.lr)

        def step(carry, batch):
            params, opt_state, state, key = carry
            key, sub = jax.random.split(key)
            (_, state), grads = jax.value_and_grad(loss, has_aux=True)(params, state, *batch, sub)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, state, key), None

        self.carry = (params, optimizer.init(params), state, jax.random.PRNGKey(1))
        nb = workload.n // workload.batch
        self.xb = jax.device_put(x[:nb * workload.batch].reshape(nb, workload.batch, 28, 28, 1))
        self.yb = jax.device_put(y[:nb * workload.batch].reshape(nb, workload.batch))
        if loop:
            self.step = jax.jit(lambda c, xb, yb: step(c, (xb, yb))[0], donate_argnums=0)
        else:
            self.epoch = jax.jit(lambda c, xb, yb: jax.lax.scan(step, c, (xb, yb))[0], donate_argnums=0)

    def run_epoch(self):
        import jax

        if self.loop:
            for i in range(self.xb.shape[0]):
                self.carry = self.step(self.carry, self.xb[i], self.yb[i])
        else:
            self.carry = self.epoch(self.carry, self.xb, self.yb)
        jax.block_until_ready(self.carry)
        return self.xb.shape[0] * self.xb.shape[1]


class TorchCNN:
    """PyTorch eager: the same layers in ``nn.Sequential`` (NCHW), Adam, 2 threads. ``network``: a
    function building another ``nn.Sequential`` for MNIST-shaped images (``benchmarks/profile_cnn.py
    --net small``), with Adam's ``betas``."""

    def __init__(self, workload, network=None, betas=(0.9, 0.999)):
        import torch
        from torch import nn

        torch.set_num_threads(2)
        torch.manual_seed(0)
        self.torch, self.w = torch, workload
        self.model = network() if network is not None else nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
        self.model.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=workload.lr, betas=betas)
        x, y = random_images(workload)
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.y = torch.from_numpy(y.astype(np.int64))
        self.loss = nn.CrossEntropyLoss()

    def run_epoch(self):
        w = self.w
        count = 0
        for start in range(0, w.n - w.batch + 1, w.batch):
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.model(self.x[start:start + w.batch]), self.y[start:start + w.batch]).backward()
            self.opt.step()
            count += w.batch
        return count


CONTENDERS = {
    "fnnet-manual": lambda w: FnnetCNN(w, "manual"),
    "fnnet-monitor": lambda w: FnnetCNN(w, "manual", monitor=10),
    "fnnet-autodiff": lambda w: FnnetCNN(w, "autodiff"),
    "jax-scan": lambda w: JaxCNN(w),
    "jax-loop": lambda w: JaxCNN(w, loop=True),
    "torch-eager": TorchCNN,
}
