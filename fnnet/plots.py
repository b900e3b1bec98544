"""PNG figures (matplotlib): for classifiers a confusion matrix and a grid of misclassified images; for
recurrent layers the gradient norm reaching each time step."""

from __future__ import annotations

import pathlib
import threading

import numpy as np


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
    import matplotlib  # optional: only plotting needs it, and it loads slowly

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def preload() -> threading.Thread:
    """Starts importing matplotlib (about 0.3 s) in a background thread, so that a training job's
    first figure does not wait for it: XLA compiles without holding Python's lock, so the two
    overlap on a machine with two cores. Returns the thread (a daemon: it never delays exit)."""
    thread = threading.Thread(target=_import_quietly, name="fnnet-preload-matplotlib", daemon=True)
    thread.start()
    return thread


def _import_quietly():
    try:
        pyplot()
    except ImportError:  # no matplotlib: the figure itself will say so when it is drawn
        pass


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``, shape ``(num_classes, num_classes)``."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def plot_confusion_matrix(labels, predictions, path, *, class_names=None, title="confusion matrix"):
    """Writes the confusion matrix as a PNG; returns the path."""
    plt = pyplot()
    names = list(class_names) if class_names else [str(i) for i in range(int(max(np.max(labels), np.max(predictions))) + 1)]
    matrix = confusion_matrix(labels, predictions, len(names))
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max() / 2
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_misclassified(images, labels, predictions, path, *, class_names=None, max_images: int = 36,
                       title="misclassified"):
    """Writes a grid of misclassified images, each titled ``true → predicted``; returns the path."""
    plt = pyplot()
    images, labels, predictions = np.asarray(images), np.asarray(labels), np.asarray(predictions)
    wrong = np.flatnonzero(labels != predictions)[:max_images]
    side = int(np.ceil(np.sqrt(max(len(wrong), 1))))
    fig, axes = plt.subplots(side, side, figsize=(1.6 * side, 1.8 * side))
    name = (lambda i: class_names[i]) if class_names else str
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, index in zip(np.atleast_1d(axes).ravel(), wrong):
        image = images[index]
        if image.ndim == 1:
            width = int(np.sqrt(image.size))
            image = image.reshape(width, -1)
        ax.imshow(image, cmap="gray_r")
        ax.set_title(f"{name(labels[index])} → {name(predictions[index])}", fontsize=7)
    fig.suptitle(f"{title} ({len(np.flatnonzero(labels != predictions))} of {len(labels)})")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_through_time(curves: dict, path, *, title="gradient through time", styles: dict | None = None):
    """Writes ``‖∂L/∂h_t‖`` against ``t = 1 … T`` (log scale), one line per entry of ``curves``
    (``{label: norms (T,)}``; ``styles``: matplotlib keyword arguments per label); returns the path.
    A zero norm (a gradient that underflowed) is drawn at the bottom of the axis, not left out."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    positive = [v for norms in curves.values() for v in np.asarray(norms, np.float64) if v > 0 and np.isfinite(v)]
    floor = min(positive) / 10 if positive else 1e-30
    for label, norms in curves.items():
        norms = np.asarray(norms, np.float64)
        ax.plot(np.arange(1, len(norms) + 1), np.where(norms > 0, norms, floor), label=label,
                **(styles or {}).get(label, {}))
    ax.set(yscale="log", xlabel="time step t (T, the last, on the right)", ylabel="‖∂L/∂h_t‖", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path) -> pathlib.Path:
    """Writes a matplotlib figure as a PNG (creating its folder) and closes it; returns the path."""
    plt = pyplot()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
