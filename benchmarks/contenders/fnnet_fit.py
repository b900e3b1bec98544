"""fnnet on the MLP and XOR workloads: ``train.fit`` with the hand-written backward passes or
``jax.grad`` of the same layers, its progress bar or its per-layer monitor; XOR in one compiled call."""

from __future__ import annotations

import sys

from contenders._shared import fit_seconds, optax_for
from workloads import random_data


def _fnnet_model(workload):
    import fnnet

    layers = []
    for width in workload.sizes[1:-1]:
        layers += [fnnet.Dense(width), fnnet.Tanh if workload.kind != "mlp" else fnnet.Relu]
    layers.append(fnnet.Dense(workload.sizes[-1]))
    loss = fnnet.losses.softmax_cross_entropy if workload.kind == "mlp" else \
        fnnet.losses.sigmoid_binary_cross_entropy
    return fnnet.serial(*layers), loss


class FnnetFit:
    """fnnet: ``train.fit`` for the MLP workloads (its history times each epoch), and
    ``train.fit_compiled`` / ``train.fit_ensemble`` (all steps in one compiled call) for XOR."""

    def __init__(self, workload, grad, progress=False, monitor=None):
        self.w, self.grad, self.progress, self.monitor = workload, grad, progress, monitor
        self.data = random_data(workload)
        self.model, self.loss = _fnnet_model(workload)
        self.optimizer = optax_for(workload)
        self.calls = 0

    def measure_fit(self, epochs):
        """Per-epoch seconds of one ``fit`` run (the first includes compilation). With ``progress``,
        as on a terminal: the tqdm bar (on stderr) moved from inside each compiled epoch. With
        ``monitor``: fit's per-layer health recorded every ``monitor`` steps."""
        if self.progress:  # fit draws its bar only on a terminal: say the worker's streams are one
            sys.stdout.isatty = sys.stderr.isatty = lambda: True
        return fit_seconds(self.model, self.loss, self.optimizer, self.data, epochs=epochs,
                           batch_size=self.w.batch, grad=self.grad, verbose=self.progress, monitor=self.monitor)

    def run_epoch(self):
        import jax

        from fnnet import train

        self.calls += 1
        if self.w.kind == "xor":
            _, metrics = train.fit_compiled(self.model, self.loss, self.optimizer, self.data,
                                            key=jax.random.PRNGKey(self.calls), epochs=self.w.steps,
                                            grad=self.grad)
        else:
            keys = jax.random.split(jax.random.PRNGKey(self.calls), self.w.nets)
            _, metrics = train.fit_ensemble(self.model, self.loss, self.optimizer, self.data, keys=keys,
                                            epochs=self.w.steps, grad=self.grad)
        jax.block_until_ready(metrics["loss"])
        return self.w.steps * self.w.nets


CONTENDERS = {
    "fnnet-manual": lambda w: FnnetFit(w, "manual"),
    "fnnet-autodiff": lambda w: FnnetFit(w, "autodiff"),
    "fnnet-progress": lambda w: FnnetFit(w, "manual", progress=True),
    "fnnet-monitor": lambda w: FnnetFit(w, "manual", monitor=10),
}
