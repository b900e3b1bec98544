"""Per-example gradients with ``jax.vmap`` over the hand-written backward: DP-SGD-style clipping.

:func:`fnnet.per_example_grads` gives one gradient per example (a leading example
axis on every leaf). This example uses them the way DP-SGD does: clip each
example's gradient to norm C, average, add Gaussian noise, then step. It also
prints gradient-noise statistics (how much examples disagree), which a batch
gradient hides. Data: scikit-learn's breast-cancer set.

Run: ``python examples/per_example_clipping.py``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import fnnet
from fnnet import datasets, train


def clipped_noisy_grad(per_example_fn, clip_norm: float, noise_multiplier: float):
    """Returns f(params, x, y, key) -> the DP-SGD gradient estimate and per-example norms."""

    def f(params, x, y, key):
        grads = per_example_fn(params, x, y)                        # leaves: (N, ...)
        norms = jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                             for g in jax.tree.leaves(grads)))      # (N,)
        factor = jnp.minimum(1.0, clip_norm / (norms + 1e-12))      # clip each example to C
        clipped = jax.tree.map(lambda g: jnp.einsum("n,n...->...", factor, g), grads)
        leaves, treedef = jax.tree.flatten(clipped)
        keys = jax.random.split(key, len(leaves))
        noisy = [(g + noise_multiplier * clip_norm * jax.random.normal(k, g.shape, g.dtype)) / x.shape[0]
                 for g, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, noisy), norms

    return f


def main(steps: int = 300, batch_size: int = 64, verbose: bool = True) -> float:
    (x_train, y_train), (x_test, y_test) = datasets.breast_cancer()
    model = fnnet.serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(1))
    loss = fnnet.losses.sigmoid_binary_cross_entropy
    _, params = model.init(jax.random.PRNGKey(0), x_train.shape[1:])
    optimizer = optax.sgd(0.5)
    opt_state = optimizer.init(params)
    grad_fn = jax.jit(clipped_noisy_grad(fnnet.per_example_grads(model, loss), clip_norm=1.0,
                                         noise_multiplier=0.5))
    key = jax.random.PRNGKey(1)
    for step in range(steps):
        key, batch_key, noise_key = jax.random.split(key, 3)
        idx = jax.random.choice(batch_key, x_train.shape[0], (batch_size,), replace=False)
        grads, norms = grad_fn(params, x_train[idx], y_train[idx], noise_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if verbose and step % 100 == 0:
            print(f"step {step:4d}  per-example grad norm: median {float(jnp.median(norms)):.3f}, "
                  f"max {float(norms.max()):.3f}, clipped {float(jnp.mean(norms > 1.0)):.0%}")
    accuracy = train.evaluate(model, loss, params, (x_test, y_test))["accuracy"]
    if verbose:
        print(f"test accuracy with clipped, noised per-example gradients: {accuracy:.1%}")
    return accuracy


if __name__ == "__main__":
    main()
