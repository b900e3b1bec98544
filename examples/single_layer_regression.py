"""The single-layer perceptron: learn ``outputs = inputs`` in 4 dimensions with MSE.

One ``Dense(4)`` layer, no activation: ``y = x @ w + b``. The hand-written
gradient is ``dW = xᵀ·(2(ŷ - y)/NK)``, ``db = Σ 2(ŷ - y)/NK``; plain gradient
descent drives the loss to ~0 and ``w`` to the identity matrix. It prints the
predictions before and after, as the tutorial does.

Run: ``python examples/single_layer_regression.py [--noise 0.0]``
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

import fnnet
from fnnet import datasets


def main(noise: float = 0.0, steps: int = 2000, lr: float = 0.5, verbose: bool = True) -> dict:
    (x_train, y_train), (x_test, y_test) = datasets.regression(n=256, dim=4, noise=noise, seed=0)
    model = fnnet.Dense(4)
    loss = fnnet.losses.mse
    _, params = model.init(jax.random.PRNGKey(0), (4,))
    grad_fn = jax.jit(fnnet.value_and_grad(model, loss))

    def show(title, params):
        print(title)
        for x, y, p in zip(x_test[:3], y_test[:3], np.asarray(model.apply(params, x_test[:3]))):
            print(f"  input {np.round(x, 3)} -> output {np.round(p, 3)} (target {np.round(y, 3)})")

    if verbose:
        show("before training:", params)
    first = None
    for step in range(steps):
        value, grads = grad_fn(params, x_train, y_train)
        first = float(value) if first is None else first
        params = jax.tree.map(lambda w, dw: w - lr * dw, params, grads)  # w -= lr * dw
        if verbose and step % 500 == 0:
            print(f"step {step:5d}  train MSE {float(value):.6f}")
    test_mse = float(loss.value(model.apply(params, x_test), y_test))
    if verbose:
        show("after training:", params)
        print(f"train MSE {first:.4f} -> {float(value):.2e}; test MSE {test_mse:.2e}")
        print("learned w (should be the identity):\n", np.round(np.asarray(params["w"]), 3))
    return {"initial_mse": first, "final_mse": float(value), "test_mse": test_mse,
            "w": np.asarray(params["w"]), "b": np.asarray(params["b"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    main(noise=args.noise, steps=args.steps)
