"""Shared by mnist_cnn.py, fashion_mnist_cnn.py and resnet_mnist.py: a small CNN on 28x28 images.

The model is :func:`fnnet.app.recipes.build_cnn`: two blocks of Conv 3x3 → BatchNorm → ReLU →
MaxPool (32 then 64 channels; ``resnet`` adds a residual Conv-ReLU-Conv branch to each
block), Dropout, Dense(128), Dense(10). Every backward pass is hand-written (the
convolution's ``dW`` a correlation of the input with ``dy``, its ``dx`` a transposed
convolution, BatchNorm's through the batch mean and variance, max-pool's routing to the
first maximum of each window). Adam (2e-3) with a cosine decay; whole epochs compiled into one
``lax.scan``; BatchNorm's running statistics and the dropout keys flow through
``TrainState.model_state`` and ``TrainState.key``. After training it writes
``curves.png``, ``confusion.png`` and ``misclassified.png`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from fnnet import train
from fnnet.app import recipes
from image_classifier import report, write_figures


def run(name: str, load, *, epochs: int, out: str, kind: str = "cnn", class_names=None, limit=None,
        lr=2e-3, batch_size=128, seed=0, verbose=True, figures=True, test_limit=None) -> dict:
    """Trains on ``load(split)`` images; returns metrics (test accuracy, seconds...)."""
    started = time.perf_counter()
    x_train, y_train = load("train")
    x_test, y_test = load("test")
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    if test_limit:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    x_train, x_test = x_train.reshape(-1, 28, 28, 1), x_test.reshape(-1, 28, 28, 1)
    data_seconds = time.perf_counter() - started
    model = recipes.build_cnn(10, (28, 28, 1), kind=kind)
    loss = fnnet.losses.softmax_cross_entropy
    if verbose:
        print(fnnet.summary(model, x_train.shape[1:]))
    steps = epochs * -(-len(x_train) // batch_size)
    optimizer = recipes.build_optimizer("adam", lr, schedule="cosine", total_steps=steps)
    state, history = train.fit(model, loss, optimizer, (x_train, y_train), epochs=epochs,
                               batch_size=batch_size, key=jax.random.PRNGKey(seed),
                               eval_data=(x_test, y_test), verbose=verbose)
    result = train.evaluate(model, loss, state.params, (x_test, y_test), model_state=state.model_state)
    metrics = {"dataset": name, "model": kind, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
               "epochs": epochs, "train_examples": len(x_train), "data_seconds": data_seconds,
               "train_seconds": float(sum(history.seconds)), "total_seconds": time.perf_counter() - started,
               "examples_per_second": len(x_train) * len(history.seconds[1:]) / sum(history.seconds[1:])
               if len(history) > 1 else None}
    if figures:
        out_dir = pathlib.Path(out)
        logits = train.predict(model, state.params, x_test, model_state=state.model_state)
        predictions = np.asarray(jnp.argmax(logits, axis=-1))
        write_figures(out_dir, f"{name} {kind}", history, x_test[..., 0], y_test, predictions, class_names,
                      metrics)
    if verbose:
        report(f"{name} {kind}", metrics)
    return metrics


def main(name, load, *, epochs, bar, kind="cnn", class_names=None):
    parser = argparse.ArgumentParser(description=f"Train a small {kind.upper()} on {name}.")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    parser.add_argument("--out", default=f"runs/{name}-{kind}")
    args = parser.parse_args()
    metrics = run(name, load, epochs=args.epochs, out=args.out, kind=kind, class_names=class_names,
                  limit=args.limit, test_limit=args.test_limit)
    if args.limit is None and args.test_limit is None and args.epochs >= epochs and metrics["test_accuracy"] < bar:
        raise SystemExit(f"{name}: test accuracy {metrics['test_accuracy']:.2%} is below the {bar:.1%} bar")
