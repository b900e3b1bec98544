"""What the PyTorch end-to-end scripts share: arguments, threads and seed, MNIST as tensors, and
the training loop of ``fnnet train`` (a fresh shuffle every epoch, the full test set after each).

``pytorch_mnist.py`` (the MLP) and ``pytorch_mnist_cnn.py`` (the CNN) differ only in their network,
optimizer and schedule; each prints a line per epoch (``epoch 3/12  eval_accuracy 0.9912  14.1 s``,
flushed, so ``e2e_cnn.py`` can time it as it arrives) and one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fnnet import datasets


def arguments(description: str, epochs: int | None = 12, **options) -> argparse.Namespace:
    """``--epochs`` (``epochs``) and ``--threads`` (2), and ``options`` (``name=(default, help)``, e.g. a
    recipe's choice); sets torch's threads and seed 0."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--threads", type=int, default=2)
    for name, (default, text) in options.items():
        parser.add_argument(f"--{name}", default=default, help=text)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def mnist(*, images: bool):
    """``(x_train, y_train, x_test, y_test)`` as tensors, read by fnnet's IDX reader: images as
    N×1×28×28 (NCHW) when ``images``, else flattened rows of 784; labels int64."""
    (x_train, y_train), (x_test, y_test) = (datasets.mnist(split, flatten=not images) for split in ("train", "test"))
    if images:
        x_train, x_test = x_train[:, None], x_test[:, None]
    return (torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.int64)),
            torch.from_numpy(x_test), torch.from_numpy(y_test.astype(np.int64)))


def random_translation(images, max_shift: int):
    """Each N×C×H×W image shifted by its own random (dy, dx) in [-max_shift, max_shift], zeros coming in
    (``fnnet.train.random_translation``'s rule)."""
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    corner = torch.randint(0, 2 * max_shift + 1, (n, 2))
    rows = (corner[:, 0, None] + torch.arange(height))[:, :, None]          # N, H, 1
    cols = (corner[:, 1, None] + torch.arange(width))[:, None, :]           # N, 1, W
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def train(model, optimizer, data, *, epochs: int, batch_size: int = 128, schedule=None,
          augment: int = 0) -> list[float]:
    """Softmax cross-entropy, ``epochs`` epochs of shuffled batches (``schedule.step()`` after each
    step when given; each batch's images shifted by up to ``augment`` pixels), the test accuracy after
    each epoch (in batches of 1,000): that list."""
    x_train, y_train, x_test, y_test = data
    loss_fn = torch.nn.CrossEntropyLoss()
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(x_train), batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            images = x_train[index] if not augment else random_translation(x_train[index], augment)
            loss_fn(model(images), y_train[index]).backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x_test[s:s + 1000]).argmax(1) == y_test[s:s + 1000]).sum())
                          for s in range(0, len(x_test), 1000))
        history.append(correct / len(x_test))
        print(f"epoch {epoch + 1}/{epochs}  eval_accuracy {history[-1]:.4f}  {seconds:.2f} s", flush=True)
    return history


def report(started: float, data_seconds: float, train_seconds: float, history: list[float]) -> None:
    """The last line: JSON with the final test accuracy, the history and the wall seconds since ``started``."""
    print(json.dumps({"test_accuracy": history[-1], "history": history, "epochs": len(history),
                      "train_seconds": train_seconds, "data_seconds": data_seconds,
                      "wall_seconds": time.perf_counter() - started, "torch": torch.__version__}))
