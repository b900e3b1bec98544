"""The contenders of the benchmark suite, each a way to train a workload's network (``workloads.py``).

Every contender builds a runner for a workload: ``run_epoch()`` trains one epoch (blocking until
done) and returns the number of examples (or net-steps) processed; the first call includes
compilation. Runners with ``measure_fit(epochs)`` return fit's per-epoch seconds instead, the first
timed from fit's call, so that it holds the compilation fit does while the model initialises
(``_shared.fit_seconds``). All
use float32 and the same shapes, batch size, optimizer and learning rate.

One module per contender for the MLP and XOR workloads (``fnnet_fit``, ``jax_scan``,
``numpy_scratch``, ``torch_eager``, ``flax_nnx``); ``cnn`` and ``gpt`` hold their workload's four
contenders each (fnnet manual and autodiff, plain JAX, PyTorch), ``lstm`` its three (fnnet manual
and autodiff, PyTorch's ``nn.LSTM``). A module is imported only when
its contender runs, so the worker's base memory and a skipped optional peer load nothing of it.
"""

from __future__ import annotations

import importlib

# Which modules hold the contenders of each kind of workload.
MODULES = {"mlp": ("fnnet_fit", "jax_scan", "numpy_scratch", "torch_eager", "flax_nnx"),
           "cnn": ("cnn",), "gpt": ("gpt",), "lstm": ("lstm",)}

# Which contenders run on which workload.
PLAN = {
    "mnist-sgd": ["fnnet-manual", "fnnet-autodiff", "jax-scan", "jax-scan-shuffled", "jax-loop", "numpy",
                  "torch-eager", "flax-nnx"],
    "mnist-adam": ["fnnet-manual", "fnnet-progress", "fnnet-monitor", "fnnet-autodiff", "jax-scan", "jax-scan-shuffled", "jax-loop",
                   "numpy", "torch-eager"],
    "wide-4096": ["fnnet-manual", "fnnet-autodiff", "jax-scan", "numpy", "torch-eager"],
    "tiny-batch-8": ["fnnet-manual", "jax-scan", "jax-loop", "numpy", "torch-eager"],
    "tiny-batch-1": ["fnnet-manual", "jax-scan", "jax-loop", "numpy", "torch-eager"],
    "cnn": ["fnnet-manual", "fnnet-monitor", "fnnet-autodiff", "jax-scan", "jax-loop", "torch-eager"],
    "gpt": ["fnnet-manual", "fnnet-autodiff", "jax-scan", "torch-eager"],
    "lstm": ["fnnet-manual", "fnnet-autodiff", "torch-eager"],
    "xor": ["fnnet-manual", "jax-scan", "numpy", "torch-eager"],
    "xor-ensemble": ["fnnet-manual", "jax-scan"],
}

OPTIONAL = {"torch-eager": "torch", "flax-nnx": "flax"}


def runner(contender: str, workload):
    """The runner of ``contender`` on ``workload``, its module imported now."""
    family = workload.kind if workload.kind in MODULES else "mlp"
    for name in MODULES[family]:
        module = importlib.import_module(f"contenders.{name}")
        if contender in module.CONTENDERS:
            return module.CONTENDERS[contender](workload)
    raise KeyError(f"no contender {contender!r} for the {workload.kind} workload {workload.name!r}")
