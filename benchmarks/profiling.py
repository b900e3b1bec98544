"""Shared by ``profile_cnn.py`` and ``profile_gpt.py``: a layer's forward and hand-written backward
timed inside one jitted ``lax.scan``, and a jitted function timed the same way."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

from fnnet.layer import forward_with_state, init_with_state

REPEAT = 10
"""Iterations inside each timed scan; times are reported per iteration."""


def timed(fn, *args, rounds: int = 5, per: int = REPEAT) -> float:
    """Milliseconds per iteration of ``fn(*args)`` (which runs ``per`` of them): the median of
    ``rounds`` timings after one warm-up call (which compiles)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - started)
    return statistics.median(times) / per * 1e3


def eager_ms(fn, repeat: int = REPEAT, rounds: int = 5) -> float:
    """Milliseconds per call of ``fn()`` run eagerly (PyTorch's products): the median of ``rounds``
    timings of ``repeat`` calls each, after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - started) / repeat * 1e3)
    return statistics.median(times)


def layer_ms(layer, x, key) -> float:
    """Milliseconds of ``layer``'s forward (training mode) and hand-written backward on the batch
    ``x``, ``REPEAT`` times inside one jitted scan. Each iteration perturbs the input (or, for
    integer inputs such as token ids, the params) by the previous one's result, so XLA can hoist
    nothing out of the loop."""
    init_key, dy_key = jax.random.split(key)
    out_shape, params, state = init_with_state(layer, init_key, x.shape[1:])
    dy = jax.random.normal(dy_key, (x.shape[0],) + tuple(out_shape))
    floating = jnp.issubdtype(x.dtype, jnp.floating)

    def scanned(params, x, dy):
        def body(carry, i):
            inputs = x + carry if floating else x
            weights = params if floating else jax.tree.map(lambda p: p + carry, params)
            y, residuals, _ = forward_with_state(layer, weights, state, inputs, key=jax.random.PRNGKey(i), train=True)
            grads, dx = layer.backward(weights, residuals, dy)
            leaves = [leaf for leaf in jax.tree.leaves((y, dx, grads)) if jnp.issubdtype(leaf.dtype, jnp.floating)]
            return carry + 1e-9 * sum(jnp.sum(leaf) for leaf in leaves), None
        return jax.lax.scan(body, jnp.zeros((), jnp.float32), jnp.arange(REPEAT))[0]

    return timed(jax.jit(scanned), params, x, dy)
