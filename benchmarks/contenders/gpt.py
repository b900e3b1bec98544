"""The GPT workload: nanoGPT's CPU recipe for Tiny Shakespeare, trained four ways.

4 layers, 4 heads, 128 features, context 64, batch 12 (65-character vocabulary, 0.82M
parameters), AdamW (β₂ 0.99, weight decay 0.1 on matrices) with gradient clipping at 1.0;
each "epoch" is ``n / batch`` steps on random windows of a random token stream, throughput
in tokens per second:

* ``fnnet-manual`` / ``fnnet-autodiff``: :func:`fnnet.train.language.make_interval` (the loop of
  ``fnnet train shakespeare``: steps in one jitted ``lax.scan``, windows drawn on the device)
  with the hand-written backward passes, or ``jax.grad`` of the same layers;
* ``jax-scan``: the same GPT in plain JAX (einsum attention, ``jax.nn`` functions,
  ``jax.grad``), the same scan and windows;
* ``torch-eager``: a nanoGPT-style ``nn.Module`` (``F.scaled_dot_product_attention`` with
  ``is_causal=True``, as nanoGPT), ``torch.optim.AdamW``, 2 threads.
"""

from __future__ import annotations

import math

import numpy as np

VOCAB, BLOCK, LAYERS, HEADS, FEATURES = 65, 64, 4, 4, 128


def random_tokens(seed=0, n=200_000):
    return np.random.default_rng(seed).integers(0, VOCAB, n).astype(np.int32)


def _optimizer():
    from fnnet import gpt

    return gpt.optimizer(10_000, lr=1e-3)


class _ScannedSteps:
    """Runs ``steps`` training steps per epoch through a jitted ``interval(state, tokens, length)``."""

    def run_epoch(self):
        import jax

        self.state, losses = self.interval(self.state, self.tokens, self.steps)
        jax.block_until_ready(losses)
        return self.steps * self.w.batch * BLOCK


class FnnetGPT(_ScannedSteps):
    """``fnnet.gpt.GPT`` through ``fnnet.train.language.make_interval``."""

    def __init__(self, workload, grad):
        import jax

        from fnnet import gpt, train
        from fnnet.train import language

        self.w, self.steps = workload, max(1, workload.n // workload.batch)
        model = gpt.GPT(gpt.GPTConfig(VOCAB, BLOCK, LAYERS, HEADS, FEATURES))
        optimizer = _optimizer()
        self.state = train.init_state(model, optimizer, jax.random.PRNGKey(0), (BLOCK,))
        self.tokens = jax.device_put(random_tokens())
        self.interval = jax.jit(language.make_interval(model, optimizer, block_size=BLOCK, batch_size=workload.batch,
                                                       grad=grad), static_argnums=2, donate_argnums=0)


def plain_jax_gpt(key):
    """``(params, loss(params, x, y))``: the same GPT in plain JAX, for ``jax.grad``."""
    import jax
    import jax.numpy as jnp

    keys = iter(jax.random.split(key, 4 + 4 * LAYERS))
    normal = lambda shape, std=0.02: std * jax.random.normal(next(keys), shape)  # noqa: E731
    proj = 0.02 / math.sqrt(2 * LAYERS)
    ln = lambda: {"scale": jnp.ones(FEATURES), "offset": jnp.zeros(FEATURES)}  # noqa: E731
    params = {
        "wte": normal((VOCAB, FEATURES)), "wpe": normal((BLOCK, FEATURES)),
        "blocks": [{"ln1": ln(), "w_qkv": normal((FEATURES, 3 * FEATURES)), "b_qkv": jnp.zeros(3 * FEATURES),
                    "w_out": normal((FEATURES, FEATURES), proj), "b_out": jnp.zeros(FEATURES),
                    "ln2": ln(), "w_fc": normal((FEATURES, 4 * FEATURES)), "b_fc": jnp.zeros(4 * FEATURES),
                    "w_proj": normal((4 * FEATURES, FEATURES), proj), "b_proj": jnp.zeros(FEATURES)}
                   for _ in range(LAYERS)],
        "ln_f": ln(), "w_head": normal((FEATURES, VOCAB)), "b_head": jnp.zeros(VOCAB)}

    def layer_norm(p, x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["offset"]

    def attention(p, x):
        b, t, c = x.shape
        q, k, v = jnp.split(x @ p["w_qkv"] + p["b_qkv"], 3, axis=-1)
        q, k, v = (a.reshape(b, t, HEADS, c // HEADS).transpose(0, 2, 1, 3) for a in (q, k, v))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(c // HEADS)
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -jnp.inf)
        out = (jax.nn.softmax(scores, -1) @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
        return out @ p["w_out"] + p["b_out"]

    def loss(params, x, y):
        h = params["wte"][x] + params["wpe"][: x.shape[1]]
        for p in params["blocks"]:
            h = h + attention(p, layer_norm(p["ln1"], h))
            m = jax.nn.gelu(layer_norm(p["ln2"], h) @ p["w_fc"] + p["b_fc"], approximate=True)
            h = h + m @ p["w_proj"] + p["b_proj"]
        logits = layer_norm(params["ln_f"], h) @ params["w_head"] + params["b_head"]
        picked = jnp.take_along_axis(logits, y[..., None], -1)[..., 0]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - picked)

    return params, loss


class JaxGPT(_ScannedSteps):
    """Plain JAX with ``jax.grad``, the same scanned loop and on-device windows."""

    def __init__(self, workload):
        import jax
        import optax

        from fnnet.train.language import random_windows

        self.w, self.steps = workload, max(1, workload.n // workload.batch)
        params, loss = plain_jax_gpt(jax.random.PRNGKey(0))
        optimizer = _optimizer()
        batch = workload.batch

        def interval(carry, tokens, length):
            def body(carry, _):
                params, opt_state, step = carry
                x, y = random_windows(tokens, jax.random.fold_in(jax.random.PRNGKey(1), step), batch, BLOCK)
                value, grads = jax.value_and_grad(loss)(params, x, y)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state, step + 1), value

            return jax.lax.scan(body, carry, None, length=length)

        self.state = (params, optimizer.init(params), jax.numpy.zeros((), jax.numpy.int32))
        self.tokens = jax.device_put(random_tokens())
        self.interval = jax.jit(interval, static_argnums=2, donate_argnums=0)


def torch_gpt(vocab=VOCAB, block=BLOCK, layers=LAYERS, heads=HEADS, features=FEATURES):
    """A nanoGPT-style ``nn.Module`` (pre-LayerNorm blocks, fused QKV, ``F.scaled_dot_product_attention``
    with ``is_causal=True``, tanh GELU, an untied head), initialised as nanoGPT, and its AdamW
    param groups (decay on matrices only)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(features), nn.LayerNorm(features)
            self.c_attn, self.c_proj = nn.Linear(features, 3 * features), nn.Linear(features, features)
            self.mlp = nn.Sequential(nn.Linear(features, 4 * features), nn.GELU(approximate="tanh"),
                                     nn.Linear(4 * features, features))

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(features, dim=2)
            q, k, v = (a.view(b, t, heads, c // heads).transpose(1, 2) for a in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, features), nn.Embedding(block, features)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f, self.head = nn.LayerNorm(features), nn.Linear(features, vocab)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "mlp.2.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx):
            h = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.blocks:
                h = block(h)
            return self.head(self.ln_f(h))

    model = GPT()
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    return model, groups


def torch_train_step(torch, model, opt, tokens, generator, batch, block=BLOCK):
    """One nanoGPT step: random windows, cross-entropy, backward, clip at 1.0, AdamW."""
    from torch.nn import functional as F

    starts = torch.randint(len(tokens) - block, (batch,), generator=generator)
    x = torch.stack([tokens[s:s + block] for s in starts])
    y = torch.stack([tokens[s + 1:s + 1 + block] for s in starts])
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


class TorchGPT:
    """The nanoGPT-style model in PyTorch eager, AdamW and clipping as nanoGPT, 2 threads."""

    def __init__(self, workload):
        import torch

        torch.set_num_threads(2)
        torch.manual_seed(0)
        self.torch, self.w = torch, workload
        self.steps = max(1, workload.n // workload.batch)
        self.model, groups = torch_gpt()
        self.opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
        self.tokens = torch.from_numpy(random_tokens().astype(np.int64))
        self.generator = torch.Generator().manual_seed(1)

    def run_epoch(self):
        for _ in range(self.steps):
            torch_train_step(self.torch, self.model, self.opt, self.tokens, self.generator, self.w.batch)
        return self.steps * self.w.batch * BLOCK


CONTENDERS = {
    "fnnet-manual": lambda w: FnnetGPT(w, "manual"),
    "fnnet-autodiff": lambda w: FnnetGPT(w, "autodiff"),
    "jax-scan": JaxGPT,
    "torch-eager": TorchGPT,
}
