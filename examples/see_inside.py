"""See inside: what the hand-written backward passes hold, step by step and while training.

1. The tutorials' 2-3-1 XOR network, from their published weights, traced (:func:`fnnet.trace`):
   every layer's input, weights, ``z``, activation, delta, ``dW`` and ``db`` as the tutorials print
   them, each backward checked against ``jax.vjp``.
2. One unit's gradient explained term by term (:func:`fnnet.explain`).
3. An MNIST MLP trained with a learning rate ten times too high, watched by the per-layer monitor
   (``fit(..., monitor=N)``): the warnings, and ``health.png``.
4. The same MLP with a learning rate that makes it diverge: ``fit`` replays the failing step layer
   by layer and names the first layer that produced a NaN or inf.

Run: ``python examples/see_inside.py`` (MNIST from ``FNNET_DATA``; breast cancer when it is missing).
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import optax

import fnnet
from fnnet import datasets, train
from fnnet.app import recipes


def load(limit: int):
    """(train, test, name): MNIST's first ``limit`` training images, or breast cancer without MNIST."""
    try:
        (x, y), test = datasets.mnist("train", flatten=True), datasets.mnist("test", flatten=True)
        return (x[:limit], y[:limit]), test, "mnist"
    except datasets.DataError:
        train_data, test = datasets.breast_cancer(seed=0)
        return train_data, test, "breast-cancer"


def main(verbose: bool = True, limit: int = 10_000, epochs: int = 3, out="runs/see_inside") -> dict:
    say = print if verbose else (lambda *args, **kwargs: None)
    out = pathlib.Path(out)

    say("== 1. The tutorials' XOR network, one step, every number ==")
    with jax.enable_x64(True):  # NumPy's float64, as the tutorials print it
        model, params, loss, x, y = recipes.tutorial_xor()
        xor = fnnet.trace(model, loss, params, x, y)
    say(xor)
    say()
    say(xor.tables())

    say("\n== 2. Where one delta comes from: layer 0, unit 2, example 1 ==")
    explained = fnnet.explain(xor, layer=0, unit=2, example=1)
    say(explained)

    (x_train, y_train), test, name = load(limit)
    classes = int(np.max(y_train)) + 1
    mlp = fnnet.serial(fnnet.Dense(128), fnnet.Relu, fnnet.Dense(64), fnnet.Relu,
                       fnnet.Dense(classes if classes > 2 else 2))
    loss = fnnet.losses.softmax_cross_entropy
    lr = 1.0  # about ten times what plain SGD wants here

    say(f"\n== 3. {name} MLP, SGD with lr {lr} (too high), watched every 10 steps ==")
    state, history = train.fit(mlp, loss, optax.sgd(lr), (x_train, y_train), epochs=epochs, batch_size=64,
                               key=jax.random.PRNGKey(0), eval_data=test, verbose=verbose, monitor=10)
    figure = history.plot_health(out / "health.png")
    say(f"wrote {figure}")

    say("\n== 4. lr 1e6: it diverges, and fit names the layer ==")
    try:
        train.fit(mlp, loss, optax.sgd(1e6), (x_train, y_train), epochs=1, batch_size=64,
                  key=jax.random.PRNGKey(0), verbose=False)
        diverged = None
    except train.TrainingDiverged as error:
        diverged = error
        say(f"TrainingDiverged: {error}")
        say(f"  step {error.step}, layer {error.layer_index} ({error.layer_name}), {error.where}")
    return {"xor_trace": xor, "explained": explained, "history": history, "health_png": str(figure),
            "warnings": [w["message"] for w in history.warnings], "diverged": diverged,
            "test_accuracy": history.eval_accuracy[-1], "dataset": name}


if __name__ == "__main__":
    main()
