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

import torch  # noqa: E402

import torch_common  # noqa: E402


def main():
    args = torch_common.arguments(__doc__)
    data = torch_common.mnist(images=False)
    data_seconds = time.perf_counter() - STARTED
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                layer.bias.zero_()
    train_started = time.perf_counter()
    history = torch_common.train(model, torch.optim.Adam(model.parameters(), lr=1e-3), data, epochs=args.epochs)
    torch_common.report(STARTED, data_seconds, time.perf_counter() - train_started, history)


if __name__ == "__main__":
    main()
