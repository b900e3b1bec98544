"""The one product of a gated recurrent layer's reverse loop, ``dh_{t-1} = da·W_hhᵀ``, in the form this
machine runs faster: one ``(N, G·H)·(G·H, H)`` product, or the ``G`` gates' ``(N, H)·(H, H)`` products
summed (``da·W_hhᵀ = Σ_gates da_gate·W_hh,gateᵀ``, the same sum in another order).

The two forms do the same arithmetic (in another order, so their results differ in rounding only), and
which is faster depends on the machine and the libraries underneath, not on the math. On the CPU, XLA
hands each product to YNNPACK, which splits a large enough product over its threads; for products this
small, one per step and each waiting for the one before, splitting can cost more than it saves.
Measured on a 2-core Xeon (``docs/performance.md``): char-rnn's ``(50, 512)·(512, 128)``, 50 dependent
steps, took 4.7 ms on 2 cores and 2.9 ms on one, and as four ``(50, 128)·(128, 128)`` products 3.0 ms
(the whole training step 39.6 → 32.7 ms); yet at ``N = 16`` or ``128``, or ``H = 64`` or ``256``, the single
product was as fast or faster. So the choice is measured, not guessed: the first time a layer's backward
is traced for a shape (``N``, ``H``, gates, dtype) on the CPU, both forms run a loop of that shape in
turns, and the per-gate form is kept only when its median time is under :data:`MARGIN` of the single
product's: a clear win, so that timing noise is unlikely to flip the choice between runs. The answer is
kept for the process. Products below :data:`SMALLEST` multiply-adds, and every other platform, take the
single product without timing.

``FNNET_RECURRENT_PRODUCT`` chooses instead: ``whole`` or ``per_gate`` (``auto``, the default,
measures); pin it where runs must agree to the last bit across processes or machines. The choice is
made when the backward is traced, so a program already compiled keeps the form it was traced with.
"""

from __future__ import annotations

import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp

from fnnet.layers._sequences import split_gates

MARGIN = 0.8
"""The per-gate form is kept only when it takes less than this fraction of the single product's time."""

SMALLEST = 1 << 20
"""Products of fewer multiply-adds per step (``N·G·H·H``) take the single product without timing."""

STEPS = 50
"""The length of the loop each form is timed on (char-rnn's windows)."""

ROUNDS, CALLS = 7, 3
"""Each form is timed ``ROUNDS`` times, in turns, on ``CALLS`` loops back to back; the medians are compared
(a median, not the best: one lucky round of the single product must not decide)."""


def gate_product(w_hh, n: int):
    """``da ↦ da·W_hhᵀ`` for ``da`` given as the gates' pieces, ``G`` arrays ``(n, H)``, in the form
    :func:`per_gate_is_faster` chose for this shape."""
    hidden, width = w_hh.shape
    return _times_w_hh_t(w_hh, per_gate_is_faster(n, hidden, width // hidden, jnp.dtype(w_hh.dtype).name))


def _times_w_hh_t(w_hh, per_gate: bool):
    """``da ↦ da·W_hhᵀ`` in the form asked; ``W_hhᵀ`` (or its gate blocks) transposed once, here, outside the loop."""
    hidden, width = w_hh.shape
    if per_gate:
        blocks = [block.T for block in split_gates(w_hh, hidden, width // hidden)]          # (H, H) each
        return lambda da: sum(piece @ block for piece, block in zip(da, blocks))
    w_hh_t = w_hh.T                                                                          # (G·H, H)
    return lambda da: jnp.concatenate(da, axis=-1) @ w_hh_t


def per_gate_is_faster(n: int, hidden: int, gates: int, dtype: str) -> bool:
    """Whether this process's reverse loops multiply ``da·W_hhᵀ`` gate by gate for this shape (see the module)."""
    chosen = os.environ.get("FNNET_RECURRENT_PRODUCT", "auto")
    if chosen not in ("auto", "whole", "per_gate"):
        raise ValueError(f"FNNET_RECURRENT_PRODUCT must be auto, whole or per_gate, got {chosen!r}")
    if chosen != "auto":
        return chosen == "per_gate"
    if gates == 1 or n * gates * hidden * hidden < SMALLEST or jax.default_backend() != "cpu":
        return False
    return _measured(n, hidden, gates, dtype)


@functools.lru_cache(maxsize=None)
def _measured(n: int, hidden: int, gates: int, dtype: str) -> bool:
    """Both forms timed on loops of :data:`STEPS` dependent steps of this shape, in turns: per gate
    when its median time is under :data:`MARGIN` of the single product's."""
    with jax.ensure_compile_time_eval():        # run now, even while an outer jax.jit traces the backward
        w_hh = jnp.full((hidden, gates * hidden), 1.0 / hidden, dtype)
        factors = jnp.full((STEPS, gates, n, hidden), 0.25, dtype)
        loops = {form: _loop(form == "per_gate", gates) for form in ("whole", "per_gate")}
        seconds = {form: [] for form in loops}
        for loop in loops.values():
            jax.block_until_ready(loop(w_hh, factors))                  # compiles
        for _ in range(ROUNDS):
            for form, loop in loops.items():
                started = time.perf_counter()
                for _ in range(CALLS):                                  # back to back, as training runs them
                    out = loop(w_hh, factors)
                jax.block_until_ready(out)
                seconds[form].append(time.perf_counter() - started)
    return statistics.median(seconds["per_gate"]) < MARGIN * statistics.median(seconds["whole"])


def _loop(per_gate: bool, gates: int):
    """A reverse loop's skeleton: each step's gate pieces come from the carried ``dh`` and that step's
    input (as the layers' loops read their factors), then ``da·W_hhᵀ`` as the layers compute it."""
    def run(w_hh, factors):
        times_w_hh_t = _times_w_hh_t(w_hh, per_gate)

        def step(dh, factors_t):
            product = times_w_hh_t([factors_t[k] * 0.5 + dh for k in range(gates)])
            return jnp.tanh(factors_t[0] + product), None

        return jax.lax.scan(step, jnp.zeros_like(factors[0, 0]), factors)[0]
    return jax.jit(run)
