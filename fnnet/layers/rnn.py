"""The Elman RNN, PyTorch's ``nn.RNN``, and its backprop through time (the conventions shared by
every recurrent layer, padded batches and the PyTorch mapping: :mod:`fnnet.layers.recurrent`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fnnet.layer import Layer
from fnnet.layers._sequences import Cell, input_grads, project, recurrent_layer, rows, shifted, where_valid


class RNNResiduals(NamedTuple):
    """What :func:`rnn_forward` keeps for :func:`rnn_backward` (``N`` sequences, time first)."""
    x: jax.Array             # (T, N, F)  the input, time-major
    mask: jax.Array | None   # (T, N)     step t of sequence n is valid; None: all are
    h_prev: jax.Array        # (T, N, H)  h_{t-1}, the carry step t starts from (h_prev[0] = h_0)
    h: jax.Array             # (T, N, H)  h_t, the carry after step t (= h_{t-1} past the end)


def rnn_forward(params, x, mask, h0, activation: str = "tanh"):
    """``x (T, N, F)``, ``mask (T, N)`` or None, ``h0 (N, H)`` -> ``(h (T, N, H), h_T (N, H), RNNResiduals)``."""
    act = jnp.tanh if activation == "tanh" else jax.nn.relu
    w_hh = params["w_hh"]
    # stage 1: a_x = x·W_ih + b_ih + b_hh, every step at once
    ax = project(x, params["w_ih"], params["b_ih"] + params["b_hh"] if "b_ih" in params else None)

    # stage 2: h_t = act(a_x[t] + h_{t-1}·W_hh), step by step; past a sequence's end h_t = h_{t-1}
    def step(h_prev, inputs):
        ax_t, m_t = inputs
        h = where_valid(m_t, act(ax_t + h_prev @ w_hh), h_prev)
        return h, h

    h_last, h = lax.scan(step, h0, (ax, mask))
    return h, h_last, RNNResiduals(x, mask, shifted(h0, h), h)


def _rnn_scan(params, res: RNNResiduals, dys, dh_last, activation: str, carried: bool):
    """The reverse scan of :func:`rnn_backward` and :func:`rnn_through_time`: ``(dh_0, da (T, N, H),
    dh (T, N, H) or None)``, ``dh`` (what the scan carries into each step, zero past a sequence's
    end) emitted only when ``carried`` (a Python bool: the training backward emits nothing more)."""
    w_hh_t = params["w_hh"].T                   # loop-invariant: transposed once

    # stage 2, through  h = where_valid(m_t, act(ax_t + h_prev @ w_hh), h_prev):
    #   dh_t = dh_next + dy_t (what step t + 1 sends back, and the output's own gradient)
    #   da_t = dh_t·act'(a_t): tanh' = 1 - h_t², relu' = [h_t > 0];   dh_{t-1} = da_t·W_hhᵀ
    #   past a sequence's end the carry passed through: dh_{t-1} = dh_next, da_t = 0
    def step(dh_next, inputs):
        h_t, dy_t, m_t = inputs
        dh = dh_next if dy_t is None else dh_next + dy_t
        slope = 1 - h_t * h_t if activation == "tanh" else (h_t > 0).astype(h_t.dtype)
        zero = jnp.zeros_like(dh)
        da = where_valid(m_t, dh * slope, zero)
        emitted = (da, where_valid(m_t, dh, zero)) if carried else da
        return where_valid(m_t, da @ w_hh_t, dh_next), emitted

    dh0, out = lax.scan(step, jnp.zeros_like(res.h[0]) if dh_last is None else dh_last,
                        (res.h, dys, res.mask), reverse=True)
    return (dh0,) + (out if carried else (out, None))


def rnn_backward(params, res: RNNResiduals, dys, dh_last, activation: str = "tanh"):
    """:func:`rnn_forward` in reverse: ``dys (T, N, H)`` (or None: only the last step is an
    output, its gradient ``dh_last (N, H)``) -> ``(dparams, dx (T, N, F), dh_0 (N, H))``."""
    dh0, da, _ = _rnn_scan(params, res, dys, dh_last, activation, carried=False)
    # stage 1, through  ax = project(x, w_ih, b_ih + b_hh)  and  h_{t-1}·W_hh:  one product each over all steps
    return input_grads(params, res.x, res.h_prev, da, da), rows(da) @ params["w_ih"].T, dh0


def rnn_through_time(params, res: RNNResiduals, dys, dh_last, activation: str = "tanh"):
    """``∂L/∂h_t`` for every step, ``(T, N, H)``: what :func:`rnn_backward`'s reverse scan carries
    into step ``t`` (the output's own ``dy_t`` plus ``da_{t+1}·W_hhᵀ`` from step ``t + 1``), zero past a
    sequence's end (:mod:`fnnet.through_time`)."""
    return _rnn_scan(params, res, dys, dh_last, activation, carried=True)[2]


def RNN(hidden: int, activation: str = "tanh", return_sequences: bool = True, w_init=None, recurrent_init=None,
        b_init=None, dtype=None, use_bias: bool = True) -> Layer:
    """An Elman RNN, PyTorch's ``nn.RNN``: ``h_t = tanh(x_t·W_ih + b_ih + h_{t-1}·W_hh + b_hh)``.

    On ``x`` of shape ``(..., T, F)`` (or a :class:`fnnet.Sequences`: padded lengths, an initial
    ``h_0`` of shape ``(..., H)``), from ``h_0 = 0`` unless given; returns every ``h_t``,
    ``(..., T, H)``, or with ``return_sequences=False`` the last valid one, ``(..., H)``. Params
    ``{"w_ih": (F, H), "w_hh": (H, H), "b_ih": (H,), "b_hh": (H,)}`` (PyTorch's ``weight_ih_l0.T``,
    ``weight_hh_l0.T``, ``bias_ih_l0``, ``bias_hh_l0``).

    Backward through time, from ``dh = ∂L/∂h_t`` (the output's gradient plus what step ``t + 1``
    sends back)::

        da_t = dh ⊙ (1 - h_t²)        (relu: dh ⊙ [h_t > 0])
        dh_{t-1} = da_t·W_hhᵀ         dW_hh = Σ_t h_{t-1}ᵀ·da_t     dW_ih = Σ_t x_tᵀ·da_t
        db_ih = db_hh = Σ_t da_t      dx_t = da_t·W_ihᵀ

    Args:
      hidden: ``H``, the number of hidden units.
      activation: ``"tanh"`` or ``"relu"`` (PyTorch's ``nonlinearity``).
      return_sequences: ``True``: every step's ``h_t``; ``False``: the last valid step's only.
      w_init, recurrent_init, b_init: initialisers ``(key, shape, dtype) -> array`` for ``w_ih``,
        ``w_hh`` (default: ``w_init``) and both biases; by default PyTorch's ``U(-1/√H, 1/√H)``.
      dtype: parameter dtype; ``None`` means JAX's default float.
      use_bias: ``False`` drops ``b_ih`` and ``b_hh`` (PyTorch's ``bias=False``).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> rnn = fnnet.RNN(4)
      >>> out_shape, params = rnn.init(jax.random.PRNGKey(0), (6, 3))   # T = 6 steps of 3 features
      >>> out_shape, params["w_ih"].shape, params["w_hh"].shape
      ((6, 4), (3, 4), (4, 4))
      >>> rnn.apply(params, jnp.ones((2, 6, 3))).shape
      (2, 6, 4)

    To batch, pass ``x`` with any leading axes, or ``jax.vmap`` over single sequences.
    """
    if activation not in ("tanh", "relu"):
        raise ValueError(f"RNN: activation must be 'tanh' or 'relu' (PyTorch's nonlinearity), got {activation!r}")
    return recurrent_layer(Cell("RNN", rnn_forward, rnn_backward, (("activation", activation),)), hidden,
                           doc=RNN.__doc__, return_sequences=return_sequences, use_bias=use_bias, w_init=w_init,
                           recurrent_init=recurrent_init, b_init=b_init, dtype=dtype)
