"""The PyTorch equivalent of ``python examples/mnist_cnn.py``, for the end-to-end time to 99%.

Same data (read by fnnet's IDX reader), same network (Conv 3x3 32 (no bias) → BatchNorm → ReLU →
MaxPool 2 → Conv 3x3 64 (no bias) → BatchNorm → ReLU → MaxPool 2 → Flatten → Dropout(0.4) →
Linear(128, He-uniform) → ReLU → Linear(10)), softmax cross-entropy, Adam 2e-3 with a cosine
decay to 2e-3/20 over all steps, batch 128, a fresh shuffle every epoch, 12 epochs, the test
accuracy after each epoch; 2 threads. Prints a line per epoch (``epoch 3/12  eval_accuracy
0.9912 ...``, flushed, so ``benchmarks/e2e_cnn.py`` can time it) and a JSON line at the end.

Run: ``python benchmarks/pytorch_mnist_cnn.py [--epochs 12]``
"""

import time

STARTED = time.perf_counter()

import math  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import torch_common  # noqa: E402


def main():
    args = torch_common.arguments(__doc__)
    data = torch_common.mnist(images=True)
    data_seconds = time.perf_counter() - STARTED
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.4), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    nn.init.kaiming_uniform_(model[10].weight, nonlinearity="relu")
    nn.init.zeros_(model[10].bias)
    total = args.epochs * math.ceil(len(data[0]) / 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # optax.cosine_decay_schedule(2e-3, total, alpha=0.05)
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    train_started = time.perf_counter()
    history = torch_common.train(model, optimizer, data, epochs=args.epochs, schedule=schedule)
    torch_common.report(STARTED, data_seconds, time.perf_counter() - train_started, history)


if __name__ == "__main__":
    main()
