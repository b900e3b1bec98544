"""A character-level recurrent network (Karpathy's char-rnn) from fnnet's layers, and sampling from it
one character at a time with the recurrent carry handed on.

The model, every backward a hand-written one (the embedding's scatter-add, backprop through time
in each recurrent layer, Dense)::

    ids (B, T) ─ Embedding(V, H) ─ LSTM(H) ─ [Dropout] ─ LSTM(H) ─ ... ─ Dense(V) ─ logits (B, T, V)

with ``RNN`` or ``GRU`` in place of ``LSTM`` (``CharRNNConfig.cell``). With ``stream_batch=B``
each recurrent layer is :func:`fnnet.layers.recurrent.Stateful`: in training it starts every window
from the carry the previous window of the same row ended with (truncated backprop through time over
``B`` streams, :func:`fnnet.train.language.stream_windows`); the params are the same either way.

Example:
  >>> import jax, jax.numpy as jnp, fnnet
  >>> config = fnnet.charrnn.CharRNNConfig(vocab_size=11, cell="lstm", num_layers=2, hidden=8)
  >>> model = fnnet.charrnn.CharRNN(config)
  >>> out_shape, params = model.init(jax.random.PRNGKey(0), (5,))
  >>> out_shape, model.apply(params, jnp.zeros((2, 5), jnp.int32)).shape
  ((5, 11), (2, 5, 11))
  >>> text = fnnet.charrnn.generate(model, params, jnp.array([1, 2]), 6, key=jax.random.PRNGKey(0))
  >>> text.shape, text[:2].tolist()
  ((8,), [1, 2])
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fnnet.combinators import serial
from fnnet.layer import Layer, abstract_init
from fnnet.layers import GRU, LSTM, RNN, Dense, Dropout, Embedding
from fnnet.sampling import check_request, pick_token
from fnnet.layers.recurrent import Stateful, carry_forward

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
"""The recurrent layer of each ``CharRNNConfig.cell``."""


class CharRNNConfig(NamedTuple):
    """The size and form of a char-rnn. Defaults: Karpathy's char-rnn (2 layers of 128 LSTM units)."""
    vocab_size: int = 65
    cell: str = "lstm"
    """``"rnn"`` (tanh), ``"lstm"`` or ``"gru"``: :data:`CELLS`."""
    num_layers: int = 2
    hidden: int = 128
    """The units of every recurrent layer, and the width of the embedding."""
    dropout: float = 0.0
    """A :func:`fnnet.Dropout` between recurrent layers (PyTorch's ``dropout=``); 0: none."""
    stream_batch: int | None = None
    """Keep each recurrent layer's carry between training windows for this many streams
    (:func:`fnnet.layers.recurrent.Stateful`); ``None``: every window starts from zeros."""

    def check(self) -> "CharRNNConfig":
        """Raises ValueError naming the field that cannot make a char-rnn."""
        for field in ("vocab_size", "num_layers", "hidden"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"CharRNNConfig: {field} must be a positive int, got {value!r}")
        if self.cell not in CELLS:
            raise ValueError(f"CharRNNConfig: cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or \
                not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CharRNNConfig: dropout must be in [0, 1), got {self.dropout!r}")
        batch = self.stream_batch
        if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0):
            raise ValueError(f"CharRNNConfig: stream_batch must be a positive int or None, got {batch!r}")
        return self


def CharRNN(config: CharRNNConfig) -> Layer:
    """The whole model: token ids ``(..., T)`` (any ``T``) to logits ``(..., T, vocab)``.

    ``serial(Embedding(V, H), cell(H), [Dropout], cell(H), ..., Dense(V))``; the cells start from
    PyTorch's ``U(-1/√H, 1/√H)``, the embedding from ``N(0, 1)``. Init with any ``in_shape=(T,)``.
    """
    config = config.check()
    layers = [Embedding(config.vocab_size, config.hidden)]
    for index in range(config.num_layers):
        if index and config.dropout:
            layers.append(Dropout(config.dropout))
        cell = CELLS[config.cell](config.hidden)
        layers.append(cell if config.stream_batch is None else Stateful(cell, config.stream_batch))
    layers.append(Dense(config.vocab_size))
    return serial(*layers)


def optimizer(steps: int, *, lr: float = 2e-3, min_lr: float | None = None, clip: float = 5.0,
              b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
    """char-rnn's recipe in optax: gradients clipped to global norm ``clip`` (char-rnn's
    ``grad_clip`` 5), then Adam with a cosine decay from ``lr`` to ``min_lr`` (default ``lr / 10``)
    over ``steps``."""
    min_lr = lr / 10 if min_lr is None else min_lr
    schedule = optax.cosine_decay_schedule(lr, decay_steps=max(steps, 1), alpha=min_lr / lr)
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(schedule, b1=b1, b2=b2))


def generate(model: Layer, params, prompt_ids, num_tokens: int, *, key, temperature: float = 1.0,
             top_k: int | None = None):
    """Samples ``num_tokens`` ids after ``prompt_ids`` (1-D); returns prompt + new ids (1-D).

    The prompt runs once through the model (:func:`fnnet.layers.recurrent.carry_forward`), then
    each new character is one step of every layer from the carry the last one left: a jitted
    ``lax.scan`` whose cost per character is one step, however long the text (the GPT's
    :func:`fnnet.gpt.generate` runs its whole window again per character).
    """
    vocab_size = int(abstract_init(model, (1,))[0][-1])
    prompt_ids = check_request(prompt_ids, vocab_size=vocab_size, temperature=temperature, top_k=top_k)
    new = _sample_loop(model, params, jnp.asarray(prompt_ids, jnp.int32), key, jnp.asarray(temperature, jnp.float32),
                       num_tokens=int(num_tokens), top_k=top_k)
    return jnp.concatenate([jnp.asarray(prompt_ids, jnp.int32), new])


@functools.partial(jax.jit, static_argnums=0, static_argnames=("num_tokens", "top_k"))
def _sample_loop(model, params, prompt_ids, key, temperature, *, num_tokens, top_k):
    """The jitted loop of :func:`generate`: the prompt, then one step per new character (compiled once
    per model, prompt length and count; the temperature is traced)."""
    def pick(logits, index):
        return pick_token(logits, jax.random.fold_in(key, index), temperature, top_k)

    logits, carry = carry_forward(model, params, prompt_ids[None])

    def body(state, index):
        logits, carry = state
        token = pick(logits, index)
        logits, carry = carry_forward(model, params, token.reshape(1, 1), carry)
        return (logits[0, -1], carry), token

    _, tokens = jax.lax.scan(body, (logits[0, -1], carry), jnp.arange(num_tokens))
    return tokens
