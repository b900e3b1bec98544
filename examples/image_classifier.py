"""Shared by mnist.py and fashion_mnist.py: train an MLP on 28x28 images and write the figures.

The model is the classic 784-512-512-10 ReLU MLP (He-uniform weights; built by
:func:`fnnet.app.recipes.build_model`, as ``fnnet train mnist`` builds it) with softmax cross-entropy on
logits, trained with Adam (learning rate 1e-3 with a cosine decay to 5e-5) by :func:`fnnet.train.fit` (hand-written backward,
whole epochs compiled in one ``lax.scan``). After training it writes:
``curves.png`` (loss and accuracy per epoch), ``confusion.png`` and
``misclassified.png`` (a grid of test images the model gets wrong).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from fnnet import plots, train
from fnnet.app import recipes


def build_model(hidden=(512, 512), in_shape=(784,)):
    """784-512-512-10: ``Dense(h)`` (He-uniform) + ReLU per hidden width, then ``Dense(10)`` (logits)."""
    return recipes.build_model(hidden, "relu", 10, in_shape)


def run(name: str, load, *, epochs: int, out: str, class_names=None, limit=None, lr=1e-3,
        batch_size=128, seed=0, verbose=True, figures=True) -> dict:
    """Trains on ``load(split)`` data; returns metrics (test accuracy, seconds...)."""
    started = time.perf_counter()
    x_train, y_train = load("train")
    x_test, y_test = load("test")
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    data_seconds = time.perf_counter() - started
    model = build_model(in_shape=x_train.shape[1:])
    loss = fnnet.losses.softmax_cross_entropy
    if verbose:
        print(fnnet.summary(model, x_train.shape[1:]))
    steps = epochs * -(-len(x_train) // batch_size)
    optimizer = recipes.build_optimizer("adam", lr, schedule="cosine", total_steps=steps)  # lr -> lr/20
    state, history = train.fit(model, loss, optimizer, (x_train, y_train), epochs=epochs,
                               batch_size=batch_size, key=jax.random.PRNGKey(seed),
                               eval_data=(x_test, y_test), verbose=verbose)
    result = train.evaluate(model, loss, state.params, (x_test, y_test))
    metrics = {"dataset": name, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
               "epochs": epochs, "train_examples": len(x_train), "data_seconds": data_seconds,
               "train_seconds": float(sum(history.seconds)),
               "total_seconds": time.perf_counter() - started}
    if figures:
        out_dir = pathlib.Path(out)
        predictions = np.asarray(jnp.argmax(train.predict(model, state.params, x_test), axis=-1))
        write_figures(out_dir, name, history, x_test, y_test, predictions, class_names, metrics)
    if verbose:
        report(name, metrics)
    return metrics


def write_figures(out_dir, label, history, images, labels, predictions, class_names, metrics):
    """curves.png, confusion.png, misclassified.png and metrics.json in ``out_dir``; their paths go
    into ``metrics["figures"]``. Shared by the MLP and the CNN examples."""
    out_dir = pathlib.Path(out_dir)
    history.plot(out_dir / "curves.png")
    plots.plot_confusion_matrix(labels, predictions, out_dir / "confusion.png",
                                class_names=class_names, title=f"{label} test confusion matrix")
    plots.plot_misclassified(images, labels, predictions, out_dir / "misclassified.png",
                             class_names=class_names, title=f"{label} misclassified test images")
    (out_dir / "metrics.json").write_text(json.dumps(dict(metrics, history=history.to_dict()), indent=2))
    metrics["figures"] = [str(out_dir / f) for f in ("curves.png", "confusion.png", "misclassified.png")]


def report(label, metrics):
    """One line with the test figures and training time, then the files written."""
    print(f"{label}: test accuracy {metrics['test_accuracy']:.2%}, test loss {metrics['test_loss']:.4f}, "
          f"{metrics['train_seconds']:.1f} s training ({metrics['total_seconds']:.1f} s in all)")
    for figure in metrics.get("figures", []):
        print(f"  wrote {figure}")


def main(name, load, *, epochs, bar, class_names=None):
    parser = argparse.ArgumentParser(description=f"Train a 784-512-512-10 MLP on {name}.")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--out", default=f"runs/{name}")
    args = parser.parse_args()
    metrics = run(name, load, epochs=args.epochs, out=args.out, class_names=class_names, limit=args.limit)
    if args.limit is None and args.epochs >= epochs and metrics["test_accuracy"] < bar:
        raise SystemExit(f"{name}: test accuracy {metrics['test_accuracy']:.2%} is below the {bar:.1%} bar")
