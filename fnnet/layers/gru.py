"""The GRU, PyTorch's ``nn.GRU``, and its backprop through time (the conventions shared by every
recurrent layer, padded batches and the PyTorch mapping: :mod:`fnnet.layers.recurrent`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fnnet.layer import Layer
from fnnet.layers._recurrent_products import gate_product
from fnnet.layers._sequences import (Cell, input_grads, project, recurrent_layer, rows, shifted, split_gates,
                                     where_valid)


class GRUResiduals(NamedTuple):
    """What :func:`gru_forward` keeps for :func:`gru_backward` (``N`` sequences, time first)."""
    x: jax.Array             # (T, N, F)   the input, time-major
    mask: jax.Array | None   # (T, N)      step t of sequence n is valid; None: all are
    h_prev: jax.Array        # (T, N, H)   h_{t-1} (h_prev[0] = h_0)
    gates: jax.Array         # (T, N, 4H)  r, z, n (after their nonlinearities), u_n = h_{t-1}·W_hn + b_hn


def gru_forward(params, x, mask, h0):
    """``x (T, N, F)``, ``mask (T, N)`` or None, ``h0 (N, H)`` -> ``(h (T, N, H), h_T (N, H), GRUResiduals)``."""
    w_hh, b_hh, hidden = params["w_hh"], params.get("b_hh"), params["w_hh"].shape[0]
    # stage 1: a = x·W_ih + b_ih, every step at once (b_hh stays inside the loop: b_hn is multiplied by r)
    ax = project(x, params["w_ih"], params.get("b_ih"))

    def step(h_prev, inputs):
        ax_t, m_t = inputs
        a_r, a_z, a_n = split_gates(ax_t, hidden, 3)
        # stage 2: u = h_{t-1}·W_hh + b_hh
        u = h_prev @ w_hh if b_hh is None else h_prev @ w_hh + b_hh[None, :]
        u_r, u_z, u_n = split_gates(u, hidden, 3)
        # stage 3: r = σ(a_r + u_r), z = σ(a_z + u_z), n = tanh(a_n + r·u_n)
        r, z = jax.nn.sigmoid(a_r + u_r), jax.nn.sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * u_n)
        # stage 4: h_t = (1 - z)·n + z·h_{t-1}  (past a sequence's end the carry stays)
        h = where_valid(m_t, (1 - z) * n + z * h_prev, h_prev)
        return h, (h, jnp.concatenate([r, z, n, u_n], axis=-1))

    h_last, (h, gates) = lax.scan(step, h0, (ax, mask))
    return h, h_last, GRUResiduals(x, mask, shifted(h0, h), gates)


def _gru_scan(params, res: GRUResiduals, dys, dh_last, carried: bool):
    """The reverse scan of :func:`gru_backward` and :func:`gru_through_time`: ``(dh_0, (da_x, du)
    (T, N, 3H) each, dh (T, N, H) or None)``, ``dh`` (the ``∂L/∂h_t`` the scan carries into each step,
    zero past a sequence's end) emitted only when ``carried`` (a Python bool: the training backward
    emits nothing more)."""
    hidden = params["w_hh"].shape[0]
    # du·W_hhᵀ, its transposed weights made once, outside the loop, in the form faster here (_recurrent_products)
    times_w_hh_t = gate_product(params["w_hh"], res.h_prev.shape[1])

    def step(dh_next, inputs):
        gates_t, h_prev, dy_t, m_t = inputs
        r, z, n, u_n = split_gates(gates_t, hidden, 4)
        dh = where_valid(m_t, dh_next if dy_t is None else dh_next + dy_t, jnp.zeros_like(dh_next))
        # stage 4, through  h = (1 - z) * n + z * h_prev:  dn = dh·(1 - z), dz = dh·(h_{t-1} - n), dh_{t-1} = dh·z
        dn, dz, dh_prev = dh * (1 - z), dh * (h_prev - n), dh * z
        # stage 3, through  n = jnp.tanh(a_n + r * u_n):  da_n = dn·(1 - n²), dr = da_n·u_n, du_n = da_n·r
        #   and  r, z = σ(a_r + u_r), σ(a_z + u_z):  da_r = du_r = dr·r(1 - r), da_z = du_z = dz·z(1 - z)
        da_n = dn * (1 - n * n)
        da_r, da_z = da_n * u_n * r * (1 - r), dz * z * (1 - z)
        du = (da_r, da_z, da_n * r)
        # stage 2, through  u = h_prev @ w_hh + b_hh:  dh_{t-1} += du·W_hhᵀ  (past the end the carry passes)
        pieces = (da_r, da_z, da_n, du[2])
        return where_valid(m_t, dh_prev + times_w_hh_t(du), dh_next), (pieces, dh) if carried else pieces

    dh0, out = lax.scan(step, jnp.zeros_like(res.h_prev[0]) if dh_last is None else dh_last,
                        (res.gates, res.h_prev, dys, res.mask), reverse=True)
    (da_r, da_z, da_n, du_n), dh = out if carried else (out, None)
    # the gates side by side again, (T, N, 3H): da_x for W_ih, du (with du_n = da_n·r) for W_hh
    return dh0, (jnp.concatenate([da_r, da_z, da_n], axis=-1), jnp.concatenate([da_r, da_z, du_n], axis=-1)), dh


def gru_backward(params, res: GRUResiduals, dys, dh_last):
    """:func:`gru_forward` in reverse: ``dys (T, N, H)`` (or None: only the last step is an
    output, its gradient ``dh_last (N, H)``) -> ``(dparams, dx (T, N, F), dh_0 (N, H))``."""
    dh0, (da_x, du), _ = _gru_scan(params, res, dys, dh_last, carried=False)
    # stage 1, through  ax = project(x, w_ih, b_ih)  (and stage 2's u):  one product each over all steps
    return input_grads(params, res.x, res.h_prev, da_x, du), rows(da_x) @ params["w_ih"].T, dh0


def gru_through_time(params, res: GRUResiduals, dys, dh_last):
    """``∂L/∂h_t`` for every step, ``(T, N, H)``: what :func:`gru_backward`'s reverse scan carries
    into step ``t`` (the output's own ``dy_t`` plus, from step ``t + 1``, ``dh_{t+1}·z_{t+1}`` and
    ``du_{t+1}·W_hhᵀ``), zero past a sequence's end (:mod:`fnnet.through_time`)."""
    return _gru_scan(params, res, dys, dh_last, carried=True)[2]


def GRU(hidden: int, return_sequences: bool = True, w_init=None, recurrent_init=None, b_init=None, dtype=None,
        use_bias: bool = True) -> Layer:
    """A gated recurrent unit, PyTorch's ``nn.GRU``, gates ``r, z, n`` in that order::

        (a_r, a_z, a_n) = x_t·W_ih + b_ih        (u_r, u_z, u_n) = h_{t-1}·W_hh + b_hh
        r = σ(a_r + u_r)     z = σ(a_z + u_z)     n = tanh(a_n + r ⊙ u_n)
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    ``b_hn`` sits inside ``r ⊙ (h_{t-1}·W_hn + b_hn)``, as in PyTorch (and cuDNN), so the two
    biases are not one. On ``x`` of shape ``(..., T, F)`` (or a :class:`fnnet.Sequences`); returns
    every ``h_t`` or, with ``return_sequences=False``, the last valid one. Params
    ``{"w_ih": (F, 3H), "w_hh": (H, 3H), "b_ih": (3H,), "b_hh": (3H,)}``, PyTorch's transposed.

    Backward through time, from ``dh = ∂L/∂h_t``::

        through h_t = (1 - z)·n + z·h_{t-1}:   dn = dh·(1 - z)   dz = dh·(h_{t-1} - n)   dh_{t-1} = dh·z
        through n = tanh(a_n + r·u_n):          da_n = dn·(1 - n²)   dr = da_n·u_n   du_n = da_n·r
        through r, z = σ(·):                    da_r = du_r = dr·r(1 - r)   da_z = du_z = dz·z(1 - z)
        through u = h_{t-1}·W_hh + b_hh:        dh_{t-1} += du·W_hhᵀ
        once for all steps:  dW_ih = Σ x_tᵀ·da_t   dW_hh = Σ h_{t-1}ᵀ·du_t   db_ih = Σ da_t   db_hh = Σ du_t

    Args:
      hidden: ``H``, the number of hidden units.
      return_sequences: ``True``: every step's ``h_t``; ``False``: the last valid step's only.
      w_init, recurrent_init, b_init: initialisers for ``w_ih``, ``w_hh`` (default: ``w_init``) and
        both biases; by default PyTorch's ``U(-1/√H, 1/√H)``.
      dtype: parameter dtype; ``None`` means JAX's default float.
      use_bias: ``False`` drops ``b_ih`` and ``b_hh`` (PyTorch's ``bias=False``).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> gru = fnnet.GRU(4)
      >>> out_shape, params = gru.init(jax.random.PRNGKey(0), (7, 2))
      >>> out_shape, params["w_hh"].shape
      ((7, 4), (4, 12))
      >>> each = jax.vmap(gru.apply, in_axes=(None, 0))(params, jnp.ones((3, 7, 2)))  # vmap == batch
      >>> bool(jnp.allclose(each, gru.apply(params, jnp.ones((3, 7, 2))), atol=1e-6))
      True
    """
    return recurrent_layer(Cell("GRU", gru_forward, gru_backward), hidden, doc=GRU.__doc__,
                           return_sequences=return_sequences, use_bias=use_bias, w_init=w_init,
                           recurrent_init=recurrent_init, b_init=b_init, dtype=dtype)
