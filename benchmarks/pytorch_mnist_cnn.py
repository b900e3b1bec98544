"""The PyTorch equivalent of ``python examples/mnist_cnn.py``, for the end-to-end time to 99%.

Same data (read by fnnet's IDX reader), same network (Conv 3x3 32 (no bias) → BatchNorm → ReLU →
MaxPool 2 → Conv 3x3 64 (no bias) → BatchNorm → ReLU → MaxPool 2 → Flatten → Dropout(0.4) →
Linear(128, He-uniform) → ReLU → Linear(10)), softmax cross-entropy, Adam 2e-3 with a cosine
decay to 2e-3/20 over all steps, batch 128, a fresh shuffle every epoch, 12 epochs, the test
accuracy after each epoch; 2 threads. Prints a line per epoch (``epoch 3/12 ... eval_accuracy
0.9912 ...``, flushed, so ``benchmarks/e2e_cnn.py`` can time it) and a JSON line at the end.

Run: ``python benchmarks/pytorch_mnist_cnn.py [--epochs 12]``
"""

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from fnnet import datasets  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_train, y_train = datasets.mnist("train")
    x_test, y_test = datasets.mnist("test")
    x_train, x_test = torch.from_numpy(x_train[:, None]), torch.from_numpy(x_test[:, None])  # NCHW
    y_train, y_test = torch.from_numpy(y_train.astype(np.int64)), torch.from_numpy(y_test.astype(np.int64))
    data_seconds = time.perf_counter() - STARTED

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.4), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    nn.init.kaiming_uniform_(model[10].weight, nonlinearity="relu")
    nn.init.zeros_(model[10].bias)
    steps_per_epoch = math.ceil(len(x_train) / 128)
    total = args.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # optax.cosine_decay_schedule(2e-3, total, alpha=0.05)
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    loss_fn = nn.CrossEntropyLoss()
    history = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(x_train), 128):
            index = order[start:start + 128]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x_train[index]), y_train[index]).backward()
            optimizer.step()
            schedule.step()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x_test[s:s + 1000]).argmax(1) == y_test[s:s + 1000]).sum())
                          for s in range(0, len(x_test), 1000))
        accuracy = correct / len(x_test)
        history.append(accuracy)
        print(f"epoch {epoch + 1}/{args.epochs}  eval_accuracy {accuracy:.4f}  {seconds:.2f} s", flush=True)
    print(json.dumps({"test_accuracy": history[-1], "history": history, "data_seconds": data_seconds,
                      "wall_seconds": time.perf_counter() - STARTED}))


if __name__ == "__main__":
    main()
