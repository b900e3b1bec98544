"""The PyTorch equivalent of ``python examples/mnist_cnn.py`` (``--recipe classic``) and of ``fnnet train mnist
--model cnn`` (``--recipe fast``), for the end-to-end times.

Same data (read by fnnet's IDX reader), same network (Conv 3x3 32 (no bias) → BatchNorm → ReLU →
MaxPool 2 → Conv 3x3 64 (no bias) → BatchNorm → ReLU → MaxPool 2 → Flatten → Dropout(0.4) →
Linear(128, He-uniform) → ReLU → Linear(10)), softmax cross-entropy, Adam 2e-3 with a cosine
decay to 2e-3/20 over all steps, batch 128, a fresh shuffle every epoch, 12 epochs, the test
accuracy after each epoch; 2 threads. Prints a line per epoch (``epoch 3/12  eval_accuracy
0.9912 ...``, flushed, so ``benchmarks/e2e_cnn.py`` can time it) and a JSON line at the end.

``--recipe fast`` (fnnet.app.recipes.CNN_RECIPES["fast"]): Conv 5x5 24 (valid) → ReLU → MaxPool 2 → Conv 3x3 32
(valid) → ReLU → MaxPool 2 → Flatten → Linear(256, He-uniform) → ReLU → Linear(10); Adam (b1 0.7, b2 0.9) with
a one-cycle schedule (cosine warm-up from 0.005/25 to 0.005 over a quarter of the steps, then cosine down to
0.005/25/10⁴: ``optax.cosine_onecycle_schedule``'s defaults), batch 128, each training image shifted by up to
one pixel, 8 epochs.

Run: ``python benchmarks/pytorch_mnist_cnn.py [--recipe classic|fast] [--epochs N]``
"""

import time

STARTED = time.perf_counter()

import math  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import torch_common  # noqa: E402


def small_network():
    """The fast recipe's network (``fnnet.app.recipes.build_cnn(kind="small")``), NCHW."""
    model = nn.Sequential(nn.Conv2d(1, 24, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(24, 32, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10))
    nn.init.kaiming_uniform_(model[7].weight, nonlinearity="relu")
    nn.init.zeros_(model[7].bias)
    return model


def fast(args, data):
    """The fast recipe: the small network, one-cycle Adam, shifted images."""
    model = small_network()
    epochs = args.epochs or 8
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005, betas=(0.7, 0.9))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.005,
                                                   total_steps=epochs * math.ceil(len(data[0]) / 128),
                                                   pct_start=0.25, anneal_strategy="cos", cycle_momentum=False,
                                                   div_factor=25.0, final_div_factor=1e4)
    train_started = time.perf_counter()
    history = torch_common.train(model, optimizer, data, epochs=epochs, batch_size=128, schedule=schedule, augment=1)
    return history, time.perf_counter() - train_started


def main():
    args = torch_common.arguments(__doc__, epochs=None, recipe=("classic", "classic (examples/mnist_cnn.py) or fast "
                                                              "(fnnet train mnist --model cnn)"))
    data = torch_common.mnist(images=True)
    data_seconds = time.perf_counter() - STARTED
    if args.recipe == "fast":
        history, train_seconds = fast(args, data)
        torch_common.report(STARTED, data_seconds, train_seconds, history)
        return
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.4), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    nn.init.kaiming_uniform_(model[10].weight, nonlinearity="relu")
    nn.init.zeros_(model[10].bias)
    epochs = args.epochs or 12
    total = epochs * math.ceil(len(data[0]) / 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # optax.cosine_decay_schedule(2e-3, total, alpha=0.05)
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    train_started = time.perf_counter()
    history = torch_common.train(model, optimizer, data, epochs=epochs, schedule=schedule)
    torch_common.report(STARTED, data_seconds, time.perf_counter() - train_started, history)


if __name__ == "__main__":
    main()
