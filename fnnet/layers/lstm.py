"""The LSTM, PyTorch's ``nn.LSTM``, and its backprop through time (the conventions shared by every
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


class LSTMResiduals(NamedTuple):
    """What :func:`lstm_forward` keeps for :func:`lstm_backward` (``N`` sequences, time first): the input,
    each step's ``h_{t-1}`` and what each stage of the backward multiplies by. Those factors depend on the
    forward's values alone, so the forward's loop computes them while it holds the gates, and the reverse
    loop keeps only what is sequential (products with ``dh`` and ``dc``)."""
    x: jax.Array              # (T, N, F)   the input, time-major
    mask: jax.Array | None    # (T, N)      step t of sequence n is valid; None: all are
    h_prev: jax.Array         # (T, N, H)   h_{t-1} (h_prev[0] = h_0)
    c_last: jax.Array         # (N, H)      each sequence's c after its last valid step (c_0 with no steps)
    dc_per_dh: jax.Array      # (T, N, H)   o·(1 - tanh²(c_t))     through h = o·tanh(c):  dc += dh·this
    f: jax.Array              # (T, N, H)   the forget gate        through c = f·c_{t-1} + i·g:  dc_{t-1} = dc·f
    gate_factors: jax.Array   # (T, N, 4H)  (g·i(1-i), c_{t-1}·f(1-f), i·(1-g²), tanh(c_t)·o(1-o)), gate by gate:
    #                                       da = (dc, dc, dc, dh)·this  (written where a_x was, step by step)


def _step(w_hh, hidden: int, ax_t, h_prev, c_prev, m_t):
    """Stages 2-4 of one step of :func:`lstm_forward` (and :func:`lstm_apply`): ``(h_t, c_t, (i, f, g, o, tanh(c_t)))``."""
    # stage 2: (a_i, a_f, a_g, a_o) = a_x[t] + h_{t-1}·W_hh;  i, f, o = σ(·), g = tanh(·)
    a_i, a_f, a_g, a_o = split_gates(ax_t + h_prev @ w_hh, hidden, 4)
    i, f, g, o = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jnp.tanh(a_g), jax.nn.sigmoid(a_o)
    # stage 3: c_t = f·c_{t-1} + i·g  (past a sequence's end the carry stays)
    c = where_valid(m_t, f * c_prev + i * g, c_prev)
    # stage 4: h_t = o·tanh(c_t)
    tanh_c = jnp.tanh(c)
    return where_valid(m_t, o * tanh_c, h_prev), c, (i, f, g, o, tanh_c)


def _input_projection(params, x):
    """Stage 1: ``a_x = x·W_ih + b_ih + b_hh``, every step at once, ``(T, N, 4H)``."""
    return project(x, params["w_ih"], params["b_ih"] + params["b_hh"] if "b_ih" in params else None)


def lstm_apply(params, x, mask, carry0):
    """The forward alone, keeping nothing for a backward (the layer's ``apply``, what ``jax.grad``
    differentiates for ``grad="autodiff"`` and the checks): ``(h (T, N, H), h_T (N, H))``."""
    w_hh, hidden = params["w_hh"], params["w_hh"].shape[0]

    def step(carry, inputs):
        h, c, _ = _step(w_hh, hidden, inputs[0], *carry, inputs[1])
        return (h, c), h

    (h_last, _), h = lax.scan(step, carry0, (_input_projection(params, x), mask))
    return h, h_last


def lstm_forward(params, x, mask, carry0):
    """``x (T, N, F)``, ``mask (T, N)`` or None, ``carry0 = (h_0, c_0)`` each ``(N, H)`` ->
    ``(h (T, N, H), h_T (N, H), LSTMResiduals)``: :func:`lstm_apply`'s steps, each also computing what
    the backward multiplies by."""
    w_hh, hidden = params["w_hh"], params["w_hh"].shape[0]

    def step(carry, inputs):
        h_prev, c_prev, ax_or_factors = carry   # steps >= t: a_x (still to read); steps < t: their gate factors
        t, m_t = inputs
        h, c, (i, f, g, o, tanh_c) = _step(w_hh, hidden, ax_or_factors[t], h_prev, c_prev, m_t)
        # what the backward's stages multiply by (the derivatives of stages 4, 3 and 2), see lstm_backward;
        # the gates' factors take a_x[t]'s place (read above, never again): no buffer of their own to fill
        gate_factors = jnp.concatenate([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)],
                                       axis=-1)
        ax_or_factors = lax.dynamic_update_index_in_dim(ax_or_factors, gate_factors, t, 0)
        return (h, c, ax_or_factors), (h, o * (1 - tanh_c * tanh_c), f)

    steps = jnp.arange(x.shape[0])
    (h_last, c_last, gate_factors), (h, dc_per_dh, f) = lax.scan(step, (*carry0, _input_projection(params, x)),
                                                                 (steps, mask))
    return h, h_last, LSTMResiduals(x, mask, shifted(carry0[0], h), c_last, dc_per_dh, f, gate_factors)


def _lstm_scan(params, res: LSTMResiduals, dys, dh_last, carried: bool):
    """The reverse scan of :func:`lstm_backward` and :func:`lstm_through_time`: ``((dh_0, dc_0),
    da (T, N, 4H), dh (T, N, H) or None)``, ``dh`` (the ``∂L/∂h_t`` the scan carries into each step,
    zero past a sequence's end) emitted only when ``carried`` (a Python bool: the training backward
    emits nothing more)."""
    # da·W_hhᵀ, its transposed weights made once, outside the loop, in the form faster here (_recurrent_products)
    times_w_hh_t, hidden = gate_product(params["w_hh"], res.c_last.shape[0]), res.c_last.shape[-1]

    def step(carry, inputs):
        dh_next, dc_next, factors_or_da = carry   # ∂L/∂h_t and ∂L/∂c_t from the steps after t; steps > t: their da
        t, dc_per_dh_t, f_t, dy_t, m_t = inputs
        zero = jnp.zeros_like(dh_next)
        dh = where_valid(m_t, dh_next if dy_t is None else dh_next + dy_t, zero)  # past the end: nothing to the cell
        # stage 4, through  h = o * tanh_c:  dc += dh·o·(1 - tanh²(c_t))
        dc = where_valid(m_t, dc_next, zero) + dh * dc_per_dh_t
        # stages 3 and 2, through  c = f * c_prev + i * g  and the gates' σ and tanh:  da = (dc·g·i(1-i),
        # dc·c_{t-1}·f(1-f), dc·i(1-g²), dh·tanh(c_t)·o(1-o));  dc_{t-1} = dc·f
        gate_factors = split_gates(factors_or_da[t], hidden, 4)
        da = [grad * factor for grad, factor in zip((dc, dc, dc, dh), gate_factors)]
        #   and through  a = a_x[t] + h_prev @ w_hh:  dh_{t-1} = da·W_hhᵀ  (past the end the carry passes)
        factors_or_da = lax.dynamic_update_index_in_dim(factors_or_da, jnp.concatenate(da, axis=-1), t, 0)
        new_carry = (where_valid(m_t, times_w_hh_t(da), dh_next), where_valid(m_t, dc * f_t, dc_next), factors_or_da)
        return new_carry, dh if carried else None

    start = (jnp.zeros_like(res.c_last) if dh_last is None else dh_last, jnp.zeros_like(res.c_last), res.gate_factors)
    steps = jnp.arange(res.f.shape[0])
    (*dcarry0, da), dh = lax.scan(step, start, (steps, res.dc_per_dh, res.f, dys, res.mask), reverse=True)
    return tuple(dcarry0), da, dh     # da: the gates side by side, (T, N, 4H), where the factors were


def lstm_backward(params, res: LSTMResiduals, dys, dh_last):
    """:func:`lstm_forward` in reverse: ``dys (T, N, H)`` (or None: only the last step is an
    output, its gradient ``dh_last (N, H)``) -> ``(dparams, dx (T, N, F), (dh_0, dc_0))``."""
    dcarry0, da, _ = _lstm_scan(params, res, dys, dh_last, carried=False)
    # stage 1, through  ax = project(x, w_ih, b_ih + b_hh)  and  h_{t-1}·W_hh:  one product each over all steps
    return input_grads(params, res.x, res.h_prev, da, da), rows(da) @ params["w_ih"].T, dcarry0


def lstm_through_time(params, res: LSTMResiduals, dys, dh_last):
    """``∂L/∂h_t`` for every step, ``(T, N, H)``: what :func:`lstm_backward`'s reverse scan carries
    into step ``t`` (the output's own ``dy_t`` plus ``da_{t+1}·W_hhᵀ`` from step ``t + 1``), zero past a
    sequence's end (:mod:`fnnet.through_time`)."""
    return _lstm_scan(params, res, dys, dh_last, carried=True)[2]


def LSTM(hidden: int, return_sequences: bool = True, w_init=None, recurrent_init=None, b_init=None, dtype=None,
         use_bias: bool = True) -> Layer:
    """A long short-term memory layer, PyTorch's ``nn.LSTM``, gates ``i, f, g, o`` in that order::

        (a_i, a_f, a_g, a_o) = x_t·W_ih + b_ih + h_{t-1}·W_hh + b_hh
        i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
        c_t = f ⊙ c_{t-1} + i ⊙ g          h_t = o ⊙ tanh(c_t)

    On ``x`` of shape ``(..., T, F)`` (or a :class:`fnnet.Sequences`, whose ``initial`` is the pair
    ``(h_0, c_0)``), from zeros unless given; returns every ``h_t``, ``(..., T, H)``, or with
    ``return_sequences=False`` the last valid one, ``(..., H)`` (PyTorch's ``h_n``). Params
    ``{"w_ih": (F, 4H), "w_hh": (H, 4H), "b_ih": (4H,), "b_hh": (4H,)}``, PyTorch's transposed.

    Backward through time, from ``dh = ∂L/∂h_t`` and ``dc = ∂L/∂c_t`` carried back from step ``t + 1``
    (each stage undoes one line of the forward)::

        through h_t = o·tanh(c_t):           do = dh·tanh(c_t)      dc += dh·o·(1 - tanh²(c_t))
        through c_t = f·c_{t-1} + i·g:       dc_{t-1} = dc·f   df = dc·c_{t-1}   di = dc·g   dg = dc·i
        through the gates:                   da = (di·i(1-i), df·f(1-f), dg·(1-g²), do·o(1-o))
        through a = x_t·W_ih + h_{t-1}·W_hh: dh_{t-1} = da·W_hhᵀ
        once for all steps:  dW_ih = Σ x_tᵀ·da_t  dW_hh = Σ h_{t-1}ᵀ·da_t  db = Σ da_t  dx_t = da_t·W_ihᵀ

    The factors that depend on the forward alone (``o·(1 - tanh²(c_t))``, ``g·i(1-i)``, ...) are computed
    by ``forward``'s loop, which holds the gates anyway, so the reverse loop keeps only the products with
    ``dh`` and ``dc``. The four gates' factors take the place of ``a_x[t]`` once step ``t`` has read it, and
    the reverse loop writes ``da[t]`` over them in turn, so neither loop fills a buffer of its own (XLA zeroes
    every ``lax.scan`` output before the loop writes it). ``apply`` runs the forward alone (:func:`lstm_apply`),
    which is also what ``jax.grad`` differentiates. The reverse loop's ``da·W_hhᵀ`` is one
    ``(N, 4H)·(4H, H)`` product, or four ``(N, H)·(H, H)`` ones summed, whichever runs faster on this
    machine (``fnnet/layers/_recurrent_products.py``).

    Args:
      hidden: ``H``, the size of ``h`` and ``c``.
      return_sequences: ``True``: every step's ``h_t``; ``False``: the last valid step's only.
      w_init, recurrent_init, b_init: initialisers for ``w_ih``, ``w_hh`` (default: ``w_init``) and
        both biases; by default PyTorch's ``U(-1/√H, 1/√H)``.
      dtype: parameter dtype; ``None`` means JAX's default float.
      use_bias: ``False`` drops ``b_ih`` and ``b_hh`` (PyTorch's ``bias=False``).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> lstm = fnnet.LSTM(8, return_sequences=False)
      >>> out_shape, params = lstm.init(jax.random.PRNGKey(0), (5, 3))
      >>> out_shape, params["w_ih"].shape, params["b_hh"].shape
      ((8,), (3, 32), (32,))
      >>> h0, c0 = jnp.zeros((2, 8)), jnp.ones((2, 8))
      >>> lstm.apply(params, fnnet.Sequences(jnp.ones((2, 5, 3)), initial=(h0, c0))).shape
      (2, 8)
    """
    return recurrent_layer(Cell("LSTM", lstm_forward, lstm_backward, apply=lstm_apply), hidden, doc=LSTM.__doc__,
                           return_sequences=return_sequences, use_bias=use_bias, w_init=w_init,
                           recurrent_init=recurrent_init, b_init=b_init, dtype=dtype)
