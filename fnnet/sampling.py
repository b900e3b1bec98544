"""Drawing the next token from a language model's logits, shared by the GPT's and the char-rnn's
``generate`` (:func:`fnnet.gpt.generate`, :func:`fnnet.charrnn.generate`): one check of what the
caller asks for, and one draw.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from fnnet.sampling import check_request, pick_token
  >>> check_request([3, 1], vocab_size=5, temperature=0.8, top_k=2).tolist()
  [3, 1]
  >>> logits = jnp.array([0.0, 5.0, 4.0, -1.0, 0.0])
  >>> int(pick_token(logits, jax.random.PRNGKey(0), jnp.float32(1.0), top_k=1))   # the largest only
  1
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.layers.embedding import check_token_ids


def check_request(prompt_ids, *, vocab_size: int, temperature: float, top_k: int | None,
                  who: str = "generate") -> np.ndarray:
    """``prompt_ids`` as a 1-D NumPy array, after checking it and the sampling settings: a
    ValueError naming the argument for a temperature ≤ 0, a ``top_k`` that is not a positive int
    at most ``vocab_size``, an empty or not 1-D prompt, or an id outside ``[0, vocab_size)``."""
    if not temperature > 0:
        raise ValueError(f"{who}: temperature must be > 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"{who}: top_k must be a positive int or None, got {top_k!r}")
    if top_k is not None and top_k > vocab_size:
        raise ValueError(f"{who}: top_k {top_k} is larger than the vocabulary ({vocab_size})")
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 1 or prompt_ids.shape[0] == 0:
        raise ValueError(f"{who}: prompt_ids must be a non-empty 1-D array of ids, got shape {prompt_ids.shape}")
    check_token_ids(prompt_ids, vocab_size, f"{who}: prompt_ids")
    return prompt_ids


def pick_token(logits, key, temperature, top_k: int | None = None):
    """One id drawn from ``softmax(logits / temperature)`` (``logits (V,)``; ``temperature`` traced),
    over the ``top_k`` largest logits only when given (``top_k`` static), as an int32 scalar."""
    logits = logits / temperature.astype(logits.dtype)
    if top_k is not None:
        logits = jnp.where(logits < jax.lax.top_k(logits, top_k)[0][-1], -jnp.inf, logits)
    return jax.random.categorical(key, logits).astype(jnp.int32)
