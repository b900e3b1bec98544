"""The tutorials' from-scratch NumPy MLP, the baseline every learner starts from."""

from __future__ import annotations

import numpy as np

from contenders._shared import EagerLoop
from workloads import random_data


class NumpyScratch(EagerLoop):
    """The tutorials' from-scratch NumPy MLP: forward, deltas, dW = hᵀ·δ, hand-written SGD/Adam."""

    def __init__(self, workload):
        self.w = workload
        self.x, self.y = random_data(workload)
        rng = np.random.default_rng(0)
        self.params = []
        for a, b in zip(workload.sizes[:-1], workload.sizes[1:]):
            limit = np.sqrt(6 / (a + b))
            self.params.append([rng.uniform(-limit, limit, (a, b)).astype(np.float32),
                                np.zeros(b, np.float32)])
        self.m = [[np.zeros_like(p) for p in layer] for layer in self.params]
        self.v = [[np.zeros_like(p) for p in layer] for layer in self.params]
        self.t = 0

    def _step(self, x, y):
        w = self.w
        hs, zs = [x], []
        for i, (W, b) in enumerate(self.params):
            z = hs[-1] @ W + b
            zs.append(z)
            if i < len(self.params) - 1:
                hs.append(np.maximum(z, 0) if w.kind == "mlp" else np.tanh(z))
        logits = zs[-1]
        n = x.shape[0]
        if w.kind == "mlp":
            e = np.exp(logits - logits.max(1, keepdims=True))
            p = e / e.sum(1, keepdims=True)
            p[np.arange(n), y] -= 1
            delta = p / n                                   # delta_out = y_hat - y
        else:
            delta = (1 / (1 + np.exp(-logits)) - y) / n
        grads = [None] * len(self.params)
        for i in reversed(range(len(self.params))):
            grads[i] = (hs[i].T @ delta, delta.sum(0))       # dW = h.T @ delta
            if i:
                back = delta @ self.params[i][0].T
                delta = back * (zs[i - 1] > 0) if w.kind == "mlp" else back * (1 - hs[i] ** 2)
        if w.optimizer == "adam":
            self.t += 1
            for layer, g_layer, m_layer, v_layer in zip(self.params, grads, self.m, self.v):
                for j in range(2):
                    m_layer[j] = 0.9 * m_layer[j] + 0.1 * g_layer[j]
                    v_layer[j] = 0.999 * v_layer[j] + 0.001 * g_layer[j] ** 2
                    m_hat = m_layer[j] / (1 - 0.9 ** self.t)
                    v_hat = v_layer[j] / (1 - 0.999 ** self.t)
                    layer[j] -= w.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        else:
            for layer, g_layer in zip(self.params, grads):
                layer[0] -= w.lr * g_layer[0]
                layer[1] -= w.lr * g_layer[1]


CONTENDERS = {"numpy": NumpyScratch}
