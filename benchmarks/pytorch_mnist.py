"""The PyTorch equivalent of ``fnnet train mnist``, for an end-to-end wall-time comparison.

Same data (read by fnnet's IDX reader), same 784-512-512-10 ReLU MLP with He-uniform
weights and zero biases, softmax cross-entropy, Adam (lr 1e-3), batch 128, 12 epochs,
a fresh shuffle every epoch and a test-set evaluation after each epoch; 2 threads.
Prints the test accuracy and the wall time from interpreter start (imports, data
loading and training included).

Run: ``python benchmarks/pytorch_mnist.py [--epochs 12]``
"""

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fnnet import datasets  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_train, y_train = datasets.mnist("train", flatten=True)
    x_test, y_test = datasets.mnist("test", flatten=True)
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.int64))
    x_test, y_test = torch.from_numpy(x_test), torch.from_numpy(y_test.astype(np.int64))
    data_seconds = time.perf_counter() - STARTED

    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                layer.bias.zero_()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    train_started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(x_train), 128):
            index = order[start:start + 128]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x_train[index]), y_train[index]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}", flush=True)
    train_seconds = time.perf_counter() - train_started
    result = {"test_accuracy": accuracy, "epochs": args.epochs, "train_seconds": train_seconds,
              "data_seconds": data_seconds, "wall_seconds": time.perf_counter() - STARTED,
              "torch": torch.__version__}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
