"""Plain JAX on the MLP and XOR workloads: ``jax.grad`` and optax, the epoch in one jitted
``lax.scan`` (in order or reshuffled every epoch) or a jitted step called from a Python loop."""

from __future__ import annotations

import numpy as np

from contenders._shared import optax_for
from workloads import random_data


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
        optimizer = optax_for(workload)

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


CONTENDERS = {
    "jax-scan": lambda w: JaxScan(w),
    "jax-scan-shuffled": lambda w: JaxScan(w, shuffle=True),
    "jax-loop": lambda w: JaxScan(w, loop=True),
}
