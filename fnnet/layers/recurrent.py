"""Recurrent layers, RNN, LSTM and GRU (and :func:`Bidirectional`), with backprop through time by hand.

Each kind has its file, its backward beside its forward: :mod:`fnnet.layers.rnn`,
:mod:`fnnet.layers.lstm`, :mod:`fnnet.layers.gru`; what they share (the :class:`Sequences` input,
its checks, the layout, the layer around a cell) is in ``fnnet/layers/_sequences.py``, and
:func:`Bidirectional` is here.

Each layer reads a sequence ``x`` of shape ``(..., T, F)`` (any leading batch axes, ``T`` steps of
``F`` features, batch first as PyTorch's ``batch_first=True``) and returns every step's hidden
state, ``(..., T, H)``, or with ``return_sequences=False`` only the last one, ``(..., H)`` (PyTorch's
``h_n``). The cells are PyTorch's, gate for gate (``σ`` the logistic sigmoid, ``⊙`` elementwise)::

    RNN    h_t = tanh(x_t·W_ih + b_ih + h_{t-1}·W_hh + b_hh)              (or relu)
    LSTM   (a_i, a_f, a_g, a_o) = x_t·W_ih + b_ih + h_{t-1}·W_hh + b_hh     four blocks of H columns
           i, f, o = σ(a_i), σ(a_f), σ(a_o),  g = tanh(a_g)
           c_t = f ⊙ c_{t-1} + i ⊙ g,      h_t = o ⊙ tanh(c_t)
    GRU    (a_r, a_z, a_n) = x_t·W_ih + b_ih,  (u_r, u_z, u_n) = h_{t-1}·W_hh + b_hh
           r = σ(a_r + u_r),  z = σ(a_z + u_z),  n = tanh(a_n + r ⊙ u_n)   b_hn inside r ⊙ (·)
           h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

Params, for ``G`` gates (1, 4, 3) of ``H`` units on ``F`` input features, are
``{"w_ih": (F, G·H), "w_hh": (H, G·H), "b_ih": (G·H,), "b_hh": (G·H,)}`` (no biases with
``use_bias=False``), their columns in PyTorch's gate order. They are PyTorch's tensors, transposed
for the ``x·W`` of :func:`fnnet.Dense`::

    w_ih = weight_ih_l0.T      w_hh = weight_hh_l0.T      b_ih = bias_ih_l0      b_hh = bias_hh_l0

(and ``_reverse`` for the second direction of :func:`Bidirectional`, whose params are
``{"forward": ..., "reverse": ...}``). A stack of ``num_layers`` is :func:`fnnet.serial` of as many
layers, with :func:`fnnet.Dropout` between them where PyTorch has ``dropout=`` (on a padded batch
Dropout takes the :class:`Sequences` a layer passes on: it drops steps and passes the lengths).
Every weight and bias starts as PyTorch's: uniform in ``±1/√H``.

Padded batches and an initial carry
-----------------------------------
Instead of an array, a layer takes a :class:`Sequences` (a NamedTuple, so a pytree):
``Sequences(x, lengths=None, initial=None)``:

* ``lengths``, integers of ``x``'s batch shape, each in ``0..T``: sequence ``n`` is
  ``x[n, :lengths[n]]`` and the rest is padding. Outputs past a sequence's end are zero, the
  carry stops at its last valid step (so the last-step output is that step's, and a padded batch
  gives each sequence what it gives alone), and no gradient flows from the padding (not even a
  NaN there). With lengths, a layer in sequence mode returns ``Sequences(y, lengths)``, so that
  the next recurrent layer of a :func:`fnnet.serial` stack knows them too (read the outputs as
  ``.x``); without, an array. The lengths get JAX's ``float0`` cotangent
  (``np.zeros(shape, jax.dtypes.float0)``), as token ids do.
* ``initial``, the carry before step 0 (zeros when ``None``): ``h_0`` of shape ``(..., H)``, for
  an LSTM the pair ``(h_0, c_0)``, for :func:`Bidirectional` the pair ``(forward's, reverse's)``.
  Its gradient is returned in the same place of ``dx``. Only the first layer of a stack gets it.

This is what PyTorch's ``pack_padded_sequence`` does (there the lengths must be at least 1; here
a length 0 returns the initial carry as the last step), and ``jax.vmap`` over a
``Sequences`` maps over its sequences as over an array's.

The backward, through time
--------------------------
Only what is sequential runs step by step. The input projection ``x·W_ih + b`` of every step is one
matrix product before the forward ``lax.scan``. The backward is a reverse ``lax.scan`` carrying
``∂L/∂h`` (and ``∂L/∂c`` for an LSTM) from step ``t`` to step ``t - 1``; each step adds the output's
own ``dy_t``, goes through the cell and emits the gradient of the gates' pre-activations ``da_t``.
Then, once for all steps (sums over ``t`` and every sequence)::

    dW_ih = Σ_t x_tᵀ·da_t      dW_hh = Σ_t h_{t-1}ᵀ·da_t      db = Σ_t da_t      dx_t = da_t·W_ihᵀ

(for the GRU, ``dW_hh`` and ``db_hh`` use the gates as ``W_hh`` sees them, where ``du_n = r ⊙ da_n``).
Inside, the leading batch axes are one axis ``N`` and time comes first: ``(T, N, ·)``.

Example:
  >>> import jax, jax.numpy as jnp, fnnet
  >>> gru = fnnet.GRU(5)
  >>> _, params = gru.init(jax.random.PRNGKey(0), (4, 3))
  >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 3))
  >>> y = gru.apply(params, fnnet.Sequences(x, lengths=jnp.array([4, 2])))
  >>> y.x.shape, y.lengths.tolist(), float(jnp.abs(y.x[1, 2:]).max())   # zero past the end
  ((2, 4, 5), [4, 2], 0.0)
  >>> alone = gru.apply(params, x[1:, :2])                               # the second one alone
  >>> bool(jnp.allclose(y.x[1, :2], alone[0], atol=1e-6))
  True
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fnnet.layer import Layer, as_shape, at_layer, is_combinator_kind, layer_children, layer_kind, make_layer, spec
from fnnet.layers._checks import check_param_keys
from fnnet.layers._sequences import GATES, Sequences, check_params, no_cotangent, parse_input, unpack
from fnnet.layers.gru import GRU
from fnnet.layers.lstm import LSTM
from fnnet.layers.rnn import RNN

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Sequences", "Stateful", "carry_forward", "reverse_sequences"]


def reverse_sequences(x, lengths=None):
    """``x`` ``(..., T, K)`` with each sequence reversed within its valid length (``lengths``, of
    ``x``'s batch shape), the padding left in place: what PyTorch's packed sequences do for the
    second direction. A permutation that is its own inverse, so it is also its own backward.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.arange(4.0).reshape(1, 4, 1)
      >>> reverse_sequences(x, jnp.array([3]))[0, :, 0].tolist()
      [2.0, 1.0, 0.0, 3.0]
    """
    if lengths is None:
        return jnp.flip(x, axis=-2)
    steps = x.shape[-2]
    t = jnp.arange(steps).reshape((1,) * (x.ndim - 2) + (steps,))
    last = lengths[..., None] - 1
    index = jnp.where(t <= last, last - t, t)                       # (..., T): step t reads step index[t]
    return jnp.take_along_axis(x, index[..., None], axis=-2)


class BidirectionalResiduals(NamedTuple):
    """What :func:`Bidirectional`'s forward keeps: the input as given, and each direction's residuals."""
    inputs: Any    # the layer's input as given: an array (..., T, F) or a Sequences
    forward: Any   # the forward copy's RecurrentResiduals (on x)
    reverse: Any   # the reverse copy's RecurrentResiduals (on x reversed within each length)


class _Both(NamedTuple):
    name: str
    inner: Layer
    hidden: int
    sequences: bool   # the inner layer's return_sequences


def _inner_input(data, lengths, initial):
    return data if lengths is None and initial is None else Sequences(data, lengths, initial)


def _bidirectional_forward(both: _Both, params, x):
    """Both directions' forwards: the reverse one on each sequence reversed within its length, its
    outputs reversed back; ``(y, BidirectionalResiduals)``."""
    inner = both.inner
    check_param_keys(both.name, params, ("forward", "reverse"))
    features = check_params(f"{both.name}, params['forward']", inner.spec.kind, params["forward"], both.hidden,
                            inner.spec["use_bias"])
    given = parse_input(both.name, inner.spec.kind, x, features, both.hidden, pair_of_carries=True)
    initial = (None, None) if given.initial is None else tuple(given.initial)
    y_forward, res_forward = inner.forward(params["forward"], _inner_input(given.data, given.lengths, initial[0]))
    y_reverse, res_reverse = inner.forward(params["reverse"], _inner_input(
        reverse_sequences(given.data, given.lengths), given.lengths, initial[1]))
    if both.sequences:   # step t: the forward copy's h_t next to the reverse copy's, reversed back
        y_forward, y_reverse = unpack(y_forward)[0], reverse_sequences(unpack(y_reverse)[0], given.lengths)
    y = jnp.concatenate([y_forward, y_reverse], axis=-1)
    if both.sequences and given.lengths is not None:
        y = Sequences(y, given.lengths)
    return y, BidirectionalResiduals(x, res_forward, res_reverse)


def _bidirectional_backward(both: _Both, params, residuals: BidirectionalResiduals, dy):
    """Through ``y = concat(y_forward, reverse(y_reverse))``: ``dy`` split in halves, the reverse
    half reversed (the reversal is its own inverse), each copy's backward, and
    ``dx = dx_forward + reverse(dx_reverse)``."""
    inputs, res_forward, res_reverse = residuals
    _, lengths, initial = unpack(inputs)
    dy = unpack(dy)[0]
    dy_forward, dy_reverse = dy[..., :both.hidden], dy[..., both.hidden:]
    if both.sequences:
        dy_reverse = reverse_sequences(dy_reverse, lengths)
    grads_forward, dx_forward = both.inner.backward(params["forward"], res_forward, dy_forward)
    grads_reverse, dx_reverse = both.inner.backward(params["reverse"], res_reverse, dy_reverse)
    grads = {"forward": grads_forward, "reverse": grads_reverse}
    dx = unpack(dx_forward)[0] + reverse_sequences(unpack(dx_reverse)[0], lengths)
    if not isinstance(inputs, Sequences):
        return grads, dx
    dinitial = None if initial is None else (dx_forward.initial, dx_reverse.initial)
    return grads, Sequences(dx, no_cotangent(lengths), dinitial)


def Bidirectional(layer: Layer) -> Layer:
    """Runs ``layer`` (an :func:`RNN`, :func:`LSTM` or :func:`GRU`) forwards and a second copy, with
    params of its own, backwards in time, and concatenates their features: ``(..., T, 2H)``, each
    step's forward ``h_t`` next to the reverse one (PyTorch's ``bidirectional=True``).

    The reverse copy reads each sequence reversed within its length (:func:`reverse_sequences`, as
    PyTorch's packed sequences), and its outputs are reversed back; with
    ``return_sequences=False`` the result is the forward copy's last valid step next to the reverse
    copy's output at ``t = 0`` (PyTorch's ``h_n`` of both directions, concatenated). Params
    ``{"forward": ..., "reverse": ...}``, each the layer's (PyTorch's ``..._l0`` and
    ``..._l0_reverse``); a :class:`Sequences` input's ``initial`` is the pair
    ``(forward's, reverse's)``.

    Backward: the inner layer's, twice: ``dy`` is split in its two halves, the reverse half
    reversed, and ``dx = dx_forward + reverse(dx_reverse)``.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> bi = fnnet.Bidirectional(fnnet.LSTM(4))
      >>> out_shape, params = bi.init(jax.random.PRNGKey(0), (6, 3))
      >>> reverse = params["reverse"]                # the second copy's own LSTM params
      >>> out_shape, sorted(params), reverse["w_ih"].shape
      ((6, 8), ['forward', 'reverse'], (3, 16))
      >>> bi.apply(params, jnp.ones((2, 6, 3))).shape
      (2, 6, 8)
    """
    if not isinstance(layer, Layer) or layer.spec is None or layer.spec.kind not in GATES:
        raise ValueError(f"Bidirectional: expected an RNN, LSTM or GRU layer, got "
                         f"{getattr(layer, 'name', None) or type(layer).__name__}")
    both = _Both(f"Bidirectional({layer.name})", layer, layer.spec["hidden"], layer.spec["return_sequences"])

    def init(key, in_shape):
        in_shape = as_shape(in_shape, both.name)
        forward_key, reverse_key = jax.random.split(key)
        out_shape, forward_params = layer.init(forward_key, in_shape)
        _, reverse_params = layer.init(reverse_key, in_shape)
        return tuple(out_shape[:-1]) + (2 * both.hidden,), {"forward": forward_params, "reverse": reverse_params}

    def forward(params, x):
        return _bidirectional_forward(both, params, x)

    def apply(params, x):
        return _bidirectional_forward(both, params, x)[0]

    def backward(params, residuals, dy):
        return _bidirectional_backward(both, params, residuals, dy)

    return make_layer(both.name, init, apply, forward, backward, doc=Bidirectional.__doc__,
                      spec=spec("Bidirectional", layer=layer.spec))


# -- carries handed from one window to the next: sampling, and truncated backprop through time --------

def carry_forward(layer: Layer, params, x, initial=None):
    """``(y, carry)``: ``layer`` on ``x`` from the carry ``initial`` (``None``: zeros), in evaluation
    mode, and the carry it ends with, to start the next window from. What sampling runs, one
    character a call, instead of the whole text again for every new character.

    ``layer``: an :func:`RNN`, :func:`LSTM` or :func:`GRU` (the carry as its ``initial``: ``h``, an
    LSTM's ``(h, c)``), a :func:`Stateful` one (the same), or a :func:`fnnet.serial` stack, whose carry
    is a tuple with one entry per layer (``None`` for a layer without one; every other layer runs its
    ``apply``: :func:`fnnet.Dropout` is the identity). Forward only: a carry crosses windows in
    training through :func:`Stateful`'s state, which the backward treats as a constant.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> from fnnet.layers.recurrent import carry_forward
      >>> stack = fnnet.serial(fnnet.LSTM(4), fnnet.Dropout(0.2), fnnet.GRU(3))
      >>> _, params = stack.init(jax.random.PRNGKey(0), (6, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 2))
      >>> whole, _ = carry_forward(stack, params, x)
      >>> first, carry = carry_forward(stack, params, x[:, :4])          # 4 steps, then 2 more
      >>> second, _ = carry_forward(stack, params, x[:, 4:], carry)
      >>> [tuple(c.shape) for c in carry[0]], carry[1], carry[2].shape    # LSTM (h, c), Dropout, GRU h
      ([(2, 4), (2, 4)], None, (2, 3))
      >>> bool(jnp.allclose(jnp.concatenate([first, second], axis=1), whole, atol=1e-6))
      True
    """
    kind = layer_kind(layer)
    if kind in GATES:
        if initial is not None:
            data, lengths, _ = unpack(x)
            x = Sequences(data, lengths, initial)
        y, residuals = layer.forward(params, x)
        return y, residuals.carry
    if kind == "Stateful":
        return carry_forward(layer_children(layer)[0], params, x, initial)
    if is_combinator_kind(layer, "serial"):
        children = layer_children(layer)
        initial = (None,) * len(children) if initial is None else tuple(initial)
        carries = []
        for index, (child, child_params, child_initial) in enumerate(zip(children, params, initial)):
            with at_layer(index, child):
                x, carry = carry_forward(child, child_params, x, child_initial)
            carries.append(carry)
        return x, tuple(carries)
    if kind == "Bidirectional" or _holds_recurrent(layer):
        raise ValueError(f"carry_forward: {layer.name} holds a recurrent layer whose carry cannot be handed on "
                         f"({'its reverse direction reads the window from its end' if kind == 'Bidirectional' else 'only serial stacks are walked'})")
    return layer.apply(params, x), None


def _holds_recurrent(layer: Layer) -> bool:
    return any(layer_kind(child) in GATES or _holds_recurrent(child) for child in layer_children(layer))


class _Kept(NamedTuple):
    name: str
    inner: Layer
    kind: str        # RNN, LSTM or GRU
    hidden: int
    batch_size: int  # the sequences whose carries the state keeps


def _zero_carry(kept: _Kept, dtype):
    zeros = jnp.zeros((kept.batch_size, kept.hidden), dtype)
    return (zeros, zeros) if kept.kind == "LSTM" else zeros


def _stateful_forward(kept: _Kept, params, state, x, *, key=None, train=False):
    """``(y, residuals, new_state)``: in training from the kept carry (a constant), leaving the last one."""
    if isinstance(x, Sequences):
        raise ValueError(f"{kept.name}: expected an array (batch_size, T, F): the carry it keeps is the start of "
                         f"each row's next window, which lengths or an initial carry would break")
    if not train:
        y, residuals = kept.inner.forward(params, x)
        return y, residuals, state
    if jnp.ndim(x) != 3 or jnp.shape(x)[0] != kept.batch_size:
        raise ValueError(f"{kept.name}: in training it continues the carries of {kept.batch_size} sequences, so it "
                         f"needs input of shape ({kept.batch_size}, T, F), got {jnp.shape(x)}")
    y, residuals = kept.inner.forward(params, Sequences(x, initial=jax.lax.stop_gradient(state)))
    new_state = jax.tree.map(lambda a, old: jax.lax.stop_gradient(a).astype(old.dtype), residuals.carry, state)
    return y, residuals, new_state


def Stateful(layer: Layer, batch_size: int) -> Layer:
    """``layer`` (an :func:`RNN`, :func:`LSTM` or :func:`GRU`) keeping its last carry as state, for
    truncated backprop through time over ``batch_size`` streams of text (Keras's ``stateful=True``; the
    ``hidden = repackage_hidden(hidden)`` of PyTorch's word language model).

    In training (``train=True``: :func:`fnnet.train.fit_language_model`'s steps), each call starts row
    ``n`` from the carry that row ``n`` of the previous call ended with (zeros at init), and leaves its
    own last carry as the new state, as :func:`fnnet.BatchNorm` leaves its running statistics: windows
    that continue each other read as one long sequence. The kept carry is a constant, so gradients stop
    at the window's start, and the backward is the layer's own, its ``dinitial`` dropped::

        (y, carry_T) = layer(x, initial=stop_gradient(state))     new state = carry_T
        (dparams, dx) = layer.backward(...)                        no gradient to the kept carry

    In evaluation (``train=False``), and in the plain ``apply``, it starts from zeros as the layer does
    and keeps its state as it is. State: ``h`` ``(batch_size, H)``, an LSTM's ``(h, c)``; params: the
    layer's.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> from fnnet.layers.recurrent import Stateful
      >>> lstm = Stateful(fnnet.LSTM(4), batch_size=2)
      >>> _, params, state = fnnet.init_with_state(lstm, jax.random.PRNGKey(0), (6, 3))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 12, 3))
      >>> first, state = fnnet.apply_with_state(lstm, params, state, x[:, :6], train=True)
      >>> second, state = fnnet.apply_with_state(lstm, params, state, x[:, 6:], train=True)
      >>> whole = fnnet.LSTM(4).apply(params, x)                  # one sequence of 12 steps
      >>> bool(jnp.allclose(jnp.concatenate([first, second], axis=1), whole, atol=1e-6))
      True
    """
    kind = layer_kind(layer) if isinstance(layer, Layer) else None
    if kind not in GATES:
        raise ValueError(f"Stateful: expected an RNN, LSTM or GRU layer, got "
                         f"{getattr(layer, 'name', None) or type(layer).__name__}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"Stateful: batch_size must be a positive int, got {batch_size!r}")
    kept = _Kept(f"Stateful({layer.name}, batch {batch_size})", layer, kind, layer.spec["hidden"], batch_size)

    def stateful_init(key, in_shape):
        out_shape, params = layer.init(key, in_shape)
        return out_shape, params, _zero_carry(kept, params["w_hh"].dtype)

    def forward(params, x):
        return _stateful_forward(kept, params, None, x)[:2]

    def apply(params, x):
        return forward(params, x)[0]

    def stateful_forward(params, state, x, *, key=None, train=False):
        return _stateful_forward(kept, params, state, x, key=key, train=train)

    def stateful_apply(params, state, x, *, key=None, train=False):
        y, _, state = _stateful_forward(kept, params, state, x, key=key, train=train)
        return y, state

    def backward(params, residuals, dy):
        grads, dx = layer.backward(params, residuals, dy)
        return grads, unpack(dx)[0]   # the kept carry is a constant: its gradient goes nowhere

    return make_layer(kept.name, layer.init, apply, forward, backward, children=(layer,), doc=Stateful.__doc__,
                      stateful_init=stateful_init, stateful_apply=stateful_apply, stateful_forward=stateful_forward,
                      spec=spec("Stateful", layer=layer.spec, batch_size=batch_size))
