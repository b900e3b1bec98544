"""PyTorch eager on the MLP and XOR workloads (optional: ``pip install -e '.[bench]'``)."""

from __future__ import annotations

import numpy as np

from contenders._shared import EagerLoop
from workloads import random_data


class TorchEager(EagerLoop):
    """PyTorch eager, nn.Sequential and torch.optim, 2 threads."""

    def __init__(self, workload):
        import torch

        torch.set_num_threads(2)
        torch.manual_seed(0)
        self.torch, self.w = torch, workload
        layers = []
        for i, (a, b) in enumerate(zip(workload.sizes[:-1], workload.sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(workload.sizes) - 2:
                layers.append(torch.nn.ReLU() if workload.kind == "mlp" else torch.nn.Tanh())
        self.model = torch.nn.Sequential(*layers)
        self.opt = (torch.optim.Adam if workload.optimizer == "adam" else torch.optim.SGD)(
            self.model.parameters(), lr=workload.lr)
        x, y = random_data(workload)
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y.astype(np.int64) if workload.kind == "mlp" else y)
        self.loss = torch.nn.CrossEntropyLoss() if workload.kind == "mlp" else torch.nn.BCEWithLogitsLoss()

    def _step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(x), y).backward()
        self.opt.step()


CONTENDERS = {"torch-eager": TorchEager}
