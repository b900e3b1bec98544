"""Cheap random permutations on the device, for shuffling a data set every epoch.

``jax.random.permutation`` runs several rounds of sorting random keys drawn from
threefry; compiling those (and the generator) was most of the difference between
the compile time of :func:`fnnet.train.fit`'s epoch and a plain scan. Here the
sort keys are a keyed hash of the index instead: three rounds of the murmur3
finaliser, each a bijection on uint32, so the keys are all distinct (no ties,
an exact permutation) and one key-value sort orders the indices. The result
changes completely with the PRNG key or the nonce (fit uses the step count, so
every epoch gets a new order).

This is a shuffle for training, not for cryptography.

Example:
  >>> import jax.numpy as jnp
  >>> from fnnet import shuffle
  >>> order = shuffle.permutation(jnp.array([1, 2], jnp.uint32), 0, 10)
  >>> sorted(order.tolist()) == list(range(10))
  True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _fmix32(h):
    """The murmur3 32-bit finaliser: a cheap, well-mixing bijection on uint32."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _round_keys(key_data, nonce, rounds: int = 3):
    words = jnp.ravel(jnp.asarray(key_data)).astype(jnp.uint32)
    seed = jnp.uint32(0x9E3779B9) * (jnp.asarray(nonce).astype(jnp.uint32) + jnp.uint32(1))
    for word in words:
        seed = _fmix32(seed ^ word)
    return [_fmix32(seed + jnp.uint32(0x632BE5AB) * jnp.uint32(r + 1)) for r in range(rounds)]


def permutation(key_data, nonce, n: int):
    """A pseudo-random permutation of ``0 .. n-1`` (int32), determined by ``key_data`` (a PRNG
    key's uint32 data) and ``nonce`` (an integer such as the epoch or step count)."""
    index = jnp.arange(n, dtype=jnp.uint32)
    k0, k1, k2 = _round_keys(key_data, nonce)
    sort_key = _fmix32(_fmix32(_fmix32(index ^ k0) ^ k1) + k2)  # a keyed bijection: no ties
    return jax.lax.sort_key_val(sort_key, index.astype(jnp.int32))[1]
