"""Flax NNX on the MLP workloads (optional: ``pip install -e '.[bench]'``)."""

from __future__ import annotations

from contenders._shared import optax_for
from workloads import random_data


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
        optimizer = optax_for(workload)

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


CONTENDERS = {"flax-nnx": FlaxNNX}
