"""A GPT (decoder-only transformer) from fnnet's layers, and sampling text from it.

The model is nanoGPT's, put together with :func:`fnnet.serial` and :func:`fnnet.Residual`,
so every backward pass in it is a hand-written one (embeddings, LayerNorm, attention,
Dense, GELU) and the chain rule through the two residual branches of each block
(``dx = dy + d(branch)``) is the combinators' own::

    ids (B, T) ─ Embedding ─ + PositionalEmbedding ─┬─ [block] × layers ─ LayerNorm ─ Dense(vocab) ─ logits (B, T, V)
    block:  x + CausalSelfAttention(LayerNorm(x)),  then  x + Dense(C)(GELU(Dense(4C)(LayerNorm(x))))

By default the output head is a separate ``Dense``; ``GPTConfig(tie_embeddings=True)`` reads the
token embedding's table backwards instead (:func:`fnnet.Unembed` inside :func:`fnnet.Tied`: the
table's gradient is the sum of its two uses), as GPT-2 and nanoGPT do. ``bias=False`` drops the
biases of every Dense, attention projection and LayerNorm, and ``gelu_approximate=False`` uses
the exact (erf) GELU: with all three, the model is nanoGPT's exactly
(:func:`fnnet.interop.from_nanogpt` loads its checkpoints).

The speedrun's pieces (modded-nanogpt's; each off by default, each a layer with its backward by
hand): ``norm="rms"`` (:func:`fnnet.RMSNorm` instead of LayerNorm), ``rope=True`` (rotary
positions in attention instead of the learned :func:`fnnet.PositionalEmbedding`), ``qk_norm=True``,
``mlp_activation="relu2"`` (:data:`fnnet.ReluSquared` instead of GELU), ``logit_cap=c``
(:func:`fnnet.SoftCap` on the logits) and ``zero_init=True`` (the two projections back into the
residual stream start at zero, so each block starts as the identity).

Example:
  >>> import jax, jax.numpy as jnp, fnnet
  >>> config = fnnet.gpt.GPTConfig(vocab_size=11, block_size=8, num_layers=1, num_heads=2, features=8)
  >>> model = fnnet.gpt.GPT(config)
  >>> out_shape, params = model.init(jax.random.PRNGKey(0), (8,))
  >>> out_shape, model.apply(params, jnp.zeros((2, 8), jnp.int32)).shape
  ((8, 11), (2, 8, 11))
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

from fnnet import initializers
from fnnet.combinators import Residual, serial
from fnnet.tied import Tied
from fnnet.layer import Layer, abstract_init, apply_with_state, is_combinator_kind, layer_children
from fnnet.layers import (CausalSelfAttention, Dense, Dropout, Embedding, Gelu, LayerNorm,
                          PositionalEmbedding, ReluSquared, RMSNorm, SoftCap, Unembed)
from fnnet.sampling import check_request, pick_token


class GPTConfig(NamedTuple):
    """The size and form of a GPT. Defaults: nanoGPT's CPU recipe for Tiny Shakespeare, with
    biases, the tanh GELU and a separate output head (nanoGPT itself: ``bias`` as its config
    says, ``tie_embeddings=True``, ``gelu_approximate=False``)."""
    vocab_size: int = 65
    block_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    features: int = 128
    dropout: float = 0.0
    bias: bool = True
    """Biases in every Dense, attention projection and LayerNorm (``False``: none, nanoGPT's ``bias=False``)."""
    tie_embeddings: bool = False
    """The output head is the token embedding's table, transposed (and has no bias)."""
    gelu_approximate: bool = True
    """The MLP's GELU: the tanh form (``True``) or the exact erf form (``False``, PyTorch's ``nn.GELU()``)."""
    norm: str = "layer"
    """``"layer"`` (LayerNorm) or ``"rms"`` (:func:`fnnet.RMSNorm`, with a scale; no offset)."""
    rope: bool = False
    """Rotary positions on q and k in every attention layer, instead of a learned positional embedding."""
    qk_norm: bool = False
    """RMS-normalise each head's q and k before the scores."""
    mlp_activation: str = "gelu"
    """The MLP's activation: ``"gelu"`` or ``"relu2"`` (:data:`fnnet.ReluSquared`)."""
    logit_cap: float = 0.0
    """``> 0``: logits ``c · tanh(z / c)`` (:func:`fnnet.SoftCap`); 0: none."""
    zero_init: bool = False
    """The attention's output projection and the MLP's second Dense start at zero (else GPT-2's scaled normal)."""

    def check(self) -> "GPTConfig":
        """Raises ValueError naming the field that cannot make a GPT."""
        for field in ("vocab_size", "block_size", "num_layers", "num_heads", "features"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig: {field} must be a positive int, got {value!r}")
        if self.features % self.num_heads:
            raise ValueError(f"GPTConfig: features {self.features} are not divisible by num_heads "
                             f"{self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout!r}")
        for field in ("bias", "tie_embeddings", "gelu_approximate", "rope", "qk_norm", "zero_init"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"GPTConfig: {field} must be True or False, got {getattr(self, field)!r}")
        for field, allowed in (("norm", NORMS), ("mlp_activation", MLP_ACTIVATIONS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"GPTConfig: {field} must be one of {', '.join(allowed)}, got {getattr(self, field)!r}")
        if isinstance(self.logit_cap, bool) or not isinstance(self.logit_cap, (int, float)) or \
                not 0 <= self.logit_cap < math.inf:
            raise ValueError(f"GPTConfig: logit_cap must be a number >= 0 (0: no cap), got {self.logit_cap!r}")
        if self.rope and (self.features // self.num_heads) % 2:
            raise ValueError(f"GPTConfig: rope turns pairs of features, so the head size features / num_heads "
                             f"= {self.features // self.num_heads} must be even")
        return self


NORMS = ("layer", "rms")
MLP_ACTIVATIONS = ("gelu", "relu2")


def _norm(config: GPTConfig) -> Layer:
    """The block's and the final norm: LayerNorm (with ``bias``'s offset) or RMSNorm."""
    return RMSNorm() if config.norm == "rms" else LayerNorm(use_bias=config.bias)


def TransformerBlock(config: GPTConfig) -> Layer:
    """Pre-LayerNorm block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))`` with a 4x GELU MLP.

    Weights ``N(0, 0.02²)``; the two projections back into the residual stream
    ``N(0, (0.02 / √(2·layers))²)`` (GPT-2's scaling, so the stream's variance does not
    grow with depth), or zeros with ``zero_init``. The norm, the MLP's activation, rotary
    positions and QK-norm as ``config`` says.
    """
    weights = initializers.normal(0.02)
    into_residual = initializers.zeros if config.zero_init else \
        initializers.normal(0.02 / math.sqrt(2 * config.num_layers))
    bias = config.bias
    activation = ReluSquared if config.mlp_activation == "relu2" else Gelu(approximate=config.gelu_approximate)
    attention = [_norm(config), CausalSelfAttention(config.num_heads, max_length=config.block_size, w_init=weights,
                                                    out_init=into_residual, use_bias=bias, rope=config.rope,
                                                    qk_norm=config.qk_norm)]
    mlp = [_norm(config), Dense(4 * config.features, w_init=weights, use_bias=bias),
           activation, Dense(config.features, w_init=into_residual, use_bias=bias)]
    if config.dropout:
        attention.append(Dropout(config.dropout))
        mlp.append(Dropout(config.dropout))
    return serial(Residual(serial(*attention)), Residual(serial(*mlp)))


def GPT(config: GPTConfig) -> Layer:
    """The whole model: token ids ``(..., T)`` (``T <= block_size``) to logits ``(..., T, vocab)``.

    Init with ``in_shape=(config.block_size,)``. With ``dropout > 0`` the model takes a key
    and the train/eval mode (:func:`fnnet.apply_with_state`).

    The layers: ``serial(Embedding, PositionalEmbedding, [Dropout], blocks..., LayerNorm,
    Dense(vocab), [SoftCap])``; with ``tie_embeddings``, ``Tied(Embedding, serial(PositionalEmbedding,
    [Dropout], blocks..., LayerNorm), Unembed)``. With ``rope`` there is no PositionalEmbedding
    (attention turns q and k by position instead).
    """
    config = config.check()
    embedding = Embedding(config.vocab_size, config.features, w_init=initializers.normal(0.02))
    body = [] if config.rope else [PositionalEmbedding(config.block_size)]
    if config.dropout:
        body.append(Dropout(config.dropout))
    body += [TransformerBlock(config) for _ in range(config.num_layers)]
    body.append(_norm(config))
    cap = [SoftCap(config.logit_cap)] if config.logit_cap else []
    if config.tie_embeddings:
        model = Tied(embedding, serial(*body), Unembed(config.vocab_size, config.features))
        return serial(model, *cap) if cap else model
    head = Dense(config.vocab_size, w_init=initializers.normal(0.02), use_bias=config.bias)
    return serial(embedding, *body, head, *cap)


def hidden_matrices(config: GPTConfig):
    """A tree shaped as the params of ``GPT(config)``: ``True`` at the 2-D weights inside the transformer
    blocks (q/k/v and output projections, the MLP's two Dense), ``False`` everywhere else (embeddings,
    head, norms, biases): the leaves Muon optimises (:func:`optimizer`), the others AdamW's."""
    model = GPT(config)
    _, like, _ = abstract_init(model, (config.block_size,))
    if config.tie_embeddings:
        return jax.tree.map(lambda leaf: False, like)  # a tied model's blocks sit inside Tied's body
    blocks = [is_combinator_kind(child, "serial") for child in layer_children(model)]  # the rest are single layers
    return type(like)(jax.tree.map(lambda leaf, inside=block: inside and leaf.ndim == 2, layer_params)
                      for block, layer_params in zip(blocks, like))


def decay_mask(params):
    """nanoGPT's weight-decay rule: decay every matrix (weights, embeddings), not the vectors
    (biases, LayerNorm scales and offsets)."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


SCHEDULES = ("cosine", "wsd")


def learning_rate_schedule(steps: int, lr: float, *, min_lr: float, warmup: int, schedule: str = "cosine",
                           cooldown: float = 0.3):
    """The learning rate of each step: a linear warmup over ``warmup`` steps to ``lr``, then
    ``"cosine"``: a cosine decay to ``min_lr`` at ``steps`` (nanoGPT's), or ``"wsd"``
    (warmup-stable-decay): ``lr`` until the last ``cooldown`` fraction of the steps, then a linear
    decay to ``min_lr`` (modded-nanogpt's)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    warmup = min(warmup, max(steps - 1, 0))
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=max(steps, 1),
                                                  end_value=min_lr)
    if not 0 < cooldown <= 1:
        raise ValueError(f"cooldown must be a fraction of the steps in (0, 1], got {cooldown!r}")
    decay = max(1, round(cooldown * steps))
    stable = max(steps - decay - warmup, 0)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr),
                                 optax.linear_schedule(lr, min_lr, decay)], [warmup, warmup + stable])


def optimizer(steps: int, *, lr: float = 1e-3, min_lr: float = 1e-4, warmup: int = 100,
              weight_decay: float | None = None, b1: float = 0.9, b2: float = 0.99,
              clip: float = 1.0, schedule: str = "cosine", cooldown: float = 0.3,
              muon_lr: float | None = None, hidden=None, muon_ns_steps: int = 5) -> optax.GradientTransformation:
    """nanoGPT's recipe in optax: gradients clipped to global norm ``clip``, then AdamW with a
    linear warmup over ``warmup`` steps to ``lr`` and a cosine decay to ``min_lr`` at ``steps``;
    weight decay ``weight_decay`` (default 0.1, nanoGPT's) on the matrices only (:func:`decay_mask`).
    ``schedule="wsd"``: warmup, stable, then a linear decay over the last ``cooldown`` of the steps
    (:func:`learning_rate_schedule`).

    With ``muon_lr``, the leaves where ``hidden`` (:func:`hidden_matrices`) is True are optimised
    by Muon (``optax.contrib.muon``: momentum 0.95, Nesterov, the update orthogonalised by
    ``muon_ns_steps`` Newton-Schulz steps, peak rate ``muon_lr``, no weight decay) and the rest (embeddings, head,
    norms, biases) by optax's AdamW inside it (Nesterov, ``b1``, ``b2``, peak rate ``lr``, no weight
    decay); both rates follow the same schedule. Muon's ``muon_weight_dimension_numbers`` are given
    explicitly, a ``MuonDimensionNumbers()`` (rows reduced, columns out: ``x @ W``) per hidden matrix
    and None elsewhere: optax's default would send every 2-D leaf, embeddings and head included, to Muon.
    Weight decay with Muon is refused, not ignored: optax's Muon would decay its AdamW's vectors (norms,
    biases) too, against :func:`decay_mask`.
    """
    rate = learning_rate_schedule(steps, lr, min_lr=min_lr, warmup=warmup, schedule=schedule, cooldown=cooldown)
    if muon_lr is None:
        return optax.chain(optax.clip_by_global_norm(clip),
                           optax.adamw(rate, b1=b1, b2=b2, weight_decay=0.1 if weight_decay is None else weight_decay,
                                       mask=decay_mask))
    if weight_decay:
        raise ValueError(f"optimizer: weight_decay={weight_decay} with muon_lr: Muon's optimizer has no weight decay "
                         f"here (pass weight_decay=0 or None)")
    if hidden is None:
        raise ValueError("optimizer: muon_lr needs hidden, the tree of which leaves are hidden matrices "
                         "(fnnet.gpt.hidden_matrices(config))")
    dimension_numbers = jax.tree.map(lambda is_hidden: MuonDimensionNumbers() if is_hidden else None, hidden)
    muon_rate = learning_rate_schedule(steps, muon_lr, min_lr=min_lr * muon_lr / lr, warmup=warmup,
                                       schedule=schedule, cooldown=cooldown)
    return optax.chain(optax.clip_by_global_norm(clip),
                       optax.contrib.muon(muon_rate, ns_steps=muon_ns_steps, adam_learning_rate=rate,
                                          adam_b1=b1, adam_b2=b2,
                                          muon_weight_dimension_numbers=dimension_numbers))


def generate(model: Layer, params, prompt_ids, num_tokens: int, *, block_size: int, key,
             temperature: float = 1.0, top_k: int | None = None, state=()):
    """Samples ``num_tokens`` ids after ``prompt_ids`` (1-D); returns prompt + new ids (1-D).

    One jitted loop (``lax.fori_loop``) over the new positions. Each position runs the
    whole model on the last ``block_size`` ids (no key/value cache): a window of fixed
    shape, padded on the right while the text is shorter than the block, which the causal
    mask makes harmless, so it compiles once per model and sizes (not per call). Cost: a full forward pass of ``block_size``
    positions per new token.
    """
    vocab_size = int(abstract_init(model, (int(block_size),))[0][-1])  # the logits' width, traced from init alone
    prompt_ids = check_request(prompt_ids, vocab_size=vocab_size, temperature=temperature, top_k=top_k)
    prompt_ids = jnp.asarray(prompt_ids, jnp.int32)
    return _generate(model, params, state, prompt_ids, int(num_tokens), int(block_size), key,
                     float(temperature), top_k)


def _generate(model, params, state, prompt_ids, num_tokens, block_size, key, temperature, top_k):
    prompt_length = prompt_ids.shape[0]
    total = prompt_length + num_tokens
    buffer = jnp.zeros((max(total, block_size),), jnp.int32).at[:prompt_length].set(prompt_ids)
    return _sample_loop(model, params, state, buffer, key, jnp.asarray(temperature, jnp.float32),
                        prompt_length=prompt_length, total=total, block_size=block_size, top_k=top_k)[:total]


@functools.partial(jax.jit, static_argnums=0, static_argnames=("prompt_length", "total", "block_size", "top_k"))
def _sample_loop(model, params, state, buffer, key, temperature, *, prompt_length, total, block_size, top_k):
    """The jitted loop of :func:`generate`, compiled once per model and sizes (the temperature is traced,
    so a new one does not recompile)."""
    def body(position, buffer):
        start = jnp.maximum(position - block_size, 0)           # the window ends at `position`
        window = jax.lax.dynamic_slice(buffer, (start,), (block_size,))
        logits, _ = apply_with_state(model, params, state, window[None], train=False)
        token = pick_token(logits[0, position - 1 - start], jax.random.fold_in(key, position), temperature, top_k)
        return buffer.at[position].set(token)

    return jax.lax.fori_loop(prompt_length, total, body, buffer)
