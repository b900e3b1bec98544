"""The LSTM workload (issue 31): char-rnn's size, a 2-layer LSTM language model, trained three ways.

Embedding(65, 128) → LSTM(128) → LSTM(128) → Dense(65), softmax cross-entropy over every step,
windows of ``T = 50`` characters, batch ``B = 50``, each window from a zero state (the sizes of
Karpathy's char-rnn and of PyTorch's ``word_language_model`` example, whose embedding width is the
hidden size); Adam 2e-3 after each gradient clipped to ±5 elementwise (char-rnn's ``grad_clip``),
float32. Each "epoch" is ``n / batch`` steps on random windows of a random token stream,
throughput in tokens per second (``B·T = 2,500`` a step):

* ``fnnet-manual`` / ``fnnet-autodiff``: :func:`fnnet.train.language.make_interval` (the loop of
  ``fit_language_model``: steps in one jitted ``lax.scan``, windows drawn on the device) with
  the LSTM's hand-written backprop through time, or with ``jax.grad`` of the same layers'
  ``apply`` (the forward ``lax.scan``, differentiated by JAX); data-parallel over one CPU device a
  core, as ``fnnet train shakespeare`` trains a char-rnn (:func:`fnnet.app.process.core_mesh`: each
  device its share of the batch, the gradients averaged);
* ``torch-eager``: ``nn.Embedding`` → ``nn.LSTM(num_layers=2, batch_first=True)`` (on the CPU in
  float32 PyTorch runs it as oneDNN's fused LSTM, ``aten::mkldnn_rnn_layer``) → ``nn.Linear``,
  ``torch.optim.Adam`` after ``clip_grad_value_``, ``torch.set_num_threads`` = the cores this
  process may run on (:func:`cores`, the size of JAX's CPU thread pool).

The sizes come from the workload: ``sizes = (vocab, H, ..., H, vocab)`` (one LSTM per ``H``) and
``block`` = ``T`` (``--smoke`` shrinks both).
"""

from __future__ import annotations

import os

import numpy as np

CLIP = 5.0
"""Each gradient entry is clipped to ``[-CLIP, CLIP]`` before Adam (char-rnn's ``grad_clip``)."""


def cores() -> int:
    """The cores this process may run on: JAX's CPU client sizes its thread pool to them, and the
    PyTorch contender sets ``torch.set_num_threads`` to the same number."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def random_tokens(vocab, seed=0, n=200_000):
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)


def sizes(workload):
    """``(vocab, hidden, layers, T, B)`` of the workload."""
    hidden = workload.sizes[1:-1]
    assert len(set(hidden)) == 1, hidden
    return workload.sizes[0], hidden[0], len(hidden), workload.block, workload.batch


def fnnet_model(vocab, hidden, layers):
    """Embedding(vocab, H) → LSTM(H) × layers → Dense(vocab), as a :func:`fnnet.serial`."""
    import fnnet

    return fnnet.serial(fnnet.Embedding(vocab, hidden), *[fnnet.LSTM(hidden) for _ in range(layers)],
                        fnnet.Dense(vocab))


def optimizer(lr):
    """Every gradient entry clipped to ±5, then Adam (optax's defaults: b1 0.9, b2 0.999, eps 1e-8, as torch's)."""
    import optax

    return optax.chain(optax.clip(CLIP), optax.adam(lr))


class FnnetLSTM:
    """The model through ``fnnet.train.language.make_interval``: ``steps`` steps in one jitted scan."""

    def __init__(self, workload, grad, data_parallel: bool = True):
        import jax

        from fnnet import distributed, train
        from fnnet.app import process
        from fnnet.train import language

        vocab, hidden, layers, self.block, batch = sizes(workload)
        if data_parallel:  # as `fnnet train shakespeare` trains a char-rnn: one CPU device a core, each its
            process.use_every_core()  # share of the batch (one device where JAX runs already)
        mesh = process.core_mesh(batch) if data_parallel else None
        self.w, self.steps = workload, max(1, workload.n // batch)
        model = fnnet_model(vocab, hidden, layers)
        opt = optimizer(workload.lr)
        state = train.init_state(model, opt, jax.random.PRNGKey(0), (self.block,))
        interval = language.make_interval(model, opt, block_size=self.block, batch_size=batch, grad=grad, mesh=mesh)
        if mesh is None:
            self.state, self.tokens = state, jax.device_put(random_tokens(vocab))
            self.interval = jax.jit(interval, static_argnums=2, donate_argnums=0)
        else:
            placement = distributed.DataParallel(mesh, batch)
            self.state, self.tokens = placement.put_state(state), placement.put_data(random_tokens(vocab))
            self.interval = jax.jit(interval, static_argnums=2, donate_argnums=0, out_shardings=placement.replicated)

    def run_epoch(self):
        import jax

        self.state, losses = self.interval(self.state, self.tokens, self.steps)
        jax.block_until_ready(losses)
        return self.steps * self.w.batch * self.block


def torch_model(torch, vocab, hidden, layers):
    """``nn.Embedding`` → ``nn.LSTM(layers, batch_first=True)`` → ``nn.Linear``: logits ``(B, T, vocab)``."""
    from torch import nn

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, hidden)
            self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, ids):
            return self.head(self.lstm(self.embed(ids))[0])

    return CharLSTM()


class TorchLSTM:
    """PyTorch eager: the same model with ``nn.LSTM``, clipping and Adam; threads = :func:`cores`."""

    def __init__(self, workload):
        import torch

        torch.set_num_threads(cores())
        torch.manual_seed(0)
        vocab, hidden, layers, self.block, self.batch = sizes(workload)
        self.torch, self.w = torch, workload
        self.steps = max(1, workload.n // self.batch)
        self.model = torch_model(torch, vocab, hidden, layers)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=workload.lr)
        self.tokens = torch.from_numpy(random_tokens(vocab).astype(np.int64))
        self.generator = torch.Generator().manual_seed(1)

    def step(self):
        torch, block = self.torch, self.block
        starts = torch.randint(len(self.tokens) - block, (self.batch,), generator=self.generator)
        windows = torch.stack([self.tokens[s:s + block + 1] for s in starts.tolist()])
        x, y = windows[:, :-1], windows[:, 1:]
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(self.model.parameters(), CLIP)
        self.opt.step()
        return loss

    def run_epoch(self):
        for _ in range(self.steps):
            self.step()
        return self.steps * self.batch * self.block


CONTENDERS = {
    "fnnet-manual": lambda w: FnnetLSTM(w, "manual"),
    "fnnet-autodiff": lambda w: FnnetLSTM(w, "autodiff"),
    "torch-eager": TorchLSTM,
}
