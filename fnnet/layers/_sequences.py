"""What every recurrent layer shares (:mod:`fnnet.layers.recurrent`): the :class:`Sequences` input and
its checks, the ``(T, N, ·)`` layout the scans run in, the products over all steps, and
:func:`recurrent_layer`, which makes a :class:`fnnet.Layer` of a cell's forward and backward
(:mod:`fnnet.layers.rnn`, :mod:`fnnet.layers.lstm`, :mod:`fnnet.layers.gru`)."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet import initializers
from fnnet.layer import Layer, as_shape, make_layer, spec
from fnnet.layers._checks import check_param_keys, param_dtype

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
"""How many blocks of ``H`` columns each kind's weights have (PyTorch's gate count)."""


class Sequences(NamedTuple):
    """A batch of sequences for a recurrent layer: the steps, where each ends, and the carry to
    start from. The rules are in :mod:`fnnet.layers.recurrent`.

    Example:
      >>> import jax.numpy as jnp, fnnet
      >>> batch = fnnet.Sequences(jnp.zeros((3, 6, 2)), lengths=jnp.array([6, 1, 4]))
      >>> batch.x.shape, batch.initial is None
      ((3, 6, 2), True)
    """

    x: Any
    """``(..., T, F)``: the steps, padded to ``T``."""
    lengths: Any = None
    """Integers of ``x``'s batch shape ``(...)``, each in ``0..T``; ``None``: every sequence has ``T`` steps."""
    initial: Any = None
    """The carry before step 0: ``(..., H)``; an LSTM's ``(h_0, c_0)``; a
    :func:`fnnet.Bidirectional`'s ``(forward's, reverse's)``; ``None``: zeros."""


# -- the layout: (..., T, F) outside, (T, N, F) inside -----------------------------------------------

def time_major(t):
    """``(..., T, K)`` -> ``(T, N, K)``: the leading axes as one axis ``N``, time first."""
    return jnp.swapaxes(t.reshape((-1,) + t.shape[-2:]), 0, 1)


def batch_major(t, batch: tuple):
    """``(T, N, K)`` -> ``(*batch, T, K)``, the inverse of :func:`time_major`."""
    return jnp.swapaxes(t, 0, 1).reshape(tuple(batch) + (t.shape[0], t.shape[2]))


def rows(t):
    """``(..., K)`` -> ``(M, K)``: every step of every sequence a row (one 2-D matmul)."""
    return t.reshape(-1, t.shape[-1])


def project(x, w, b):
    """``x·W + b`` for every step at once: ``(T, N, F)`` -> ``(T, N, G·H)``; ``b`` may be ``None``."""
    out = (rows(x) @ w).reshape(x.shape[:2] + (w.shape[1],))
    return out if b is None else out + b[None, None, :]


def shifted(first, stacked):
    """``(first, stacked[0], ..., stacked[T-2])``: the carry each step starts from, ``(T, N, H)``."""
    return jnp.concatenate([first[None], stacked], axis=0)[:-1]


def where_valid(mask, new, old):
    """``new`` where the step is valid, ``old`` past a sequence's end (``mask`` ``(N,)``; ``None``: all valid)."""
    return new if mask is None else jnp.where(mask[:, None], new, old)


def split_gates(a, hidden: int, count: int):
    """The ``count`` blocks of ``hidden`` columns of ``a`` ``(N, count·H)``, in PyTorch's gate order."""
    return [a[:, k * hidden:(k + 1) * hidden] for k in range(count)]


def input_grads(params, x, h_prev, da_x, da_h):
    """The backward's last stage, once for all steps: through ``x_t·W_ih + b_ih`` and
    ``h_{t-1}·W_hh + b_hh`` (``da_x``, ``da_h``: the gradients of those products, ``(T, N, G·H)``)::

        dW_ih = Σ_t x_tᵀ·da_x[t]    dW_hh = Σ_t h_{t-1}ᵀ·da_h[t]    db_ih = Σ da_x    db_hh = Σ da_h

    one matrix product each over the stacked steps (``dx = da_x·W_ihᵀ`` is the caller's)."""
    grads = {"w_ih": rows(x).T @ rows(da_x), "w_hh": rows(h_prev).T @ rows(da_h)}
    if "b_ih" in params:
        grads["b_ih"] = jnp.sum(da_x, axis=(0, 1))
        grads["b_hh"] = grads["b_ih"] if da_h is da_x else jnp.sum(da_h, axis=(0, 1))
    return grads


# -- the input: an array or a Sequences, checked ------------------------------------------------------

class ParsedInput(NamedTuple):
    data: Any       # (..., T, F) the steps
    lengths: Any    # (...) integers, or None
    initial: Any    # the carry as given (arrays of shape (..., H)), or None
    batch: tuple    # the leading axes


def unpack(x):
    """``(data, lengths, initial)`` of an array or a :class:`Sequences`."""
    return (x.x, x.lengths, x.initial) if isinstance(x, Sequences) else (x, None, None)


def _carry_text(kind: str, shape: tuple) -> str:
    return f"the pair (h_0, c_0), each of shape {shape}" if kind == "LSTM" else f"h_0 of shape {shape}"


def _carry_fits(kind: str, carry, shape: tuple) -> bool:
    pieces = tuple(carry) if kind == "LSTM" and isinstance(carry, (tuple, list)) else (carry,)
    return len(pieces) == (2 if kind == "LSTM" else 1) and all(
        hasattr(p, "shape") and tuple(jnp.shape(p)) == shape for p in pieces)


def parse_input(name: str, kind: str, x, features: int, hidden: int, *, pair_of_carries: bool = False) -> ParsedInput:
    """``x`` (an array or a :class:`Sequences`) split and checked against the layer's sizes; a
    ValueError naming the layer and the shapes otherwise. Concrete lengths are checked to be in
    ``0..T``; traced ones (under ``jax.jit``) cannot be."""
    data, lengths, initial = unpack(x)
    shape = tuple(jnp.shape(data))
    if len(shape) < 2 or shape[-1] != features:
        raise ValueError(f"{name}: expected input of shape (..., T, {features}) (T steps of {features} features, "
                         f"any leading batch axes), got {shape}")
    batch, steps = shape[:-2], shape[-2]
    if lengths is not None:
        if tuple(jnp.shape(lengths)) != batch:
            raise ValueError(f"{name}: lengths must have the input's batch shape {batch} (one length per "
                             f"sequence of the input of shape {shape}), got lengths of shape {jnp.shape(lengths)}")
        if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
            raise ValueError(f"{name}: lengths must be integers, got {jnp.result_type(lengths)}")
        if not isinstance(lengths, jax.core.Tracer):
            values = np.asarray(lengths)
            bad = np.argwhere((values < 0) | (values > steps))
            if bad.size:
                where = tuple(int(i) for i in bad[0])
                raise ValueError(f"{name}: lengths must be in 0..{steps} (the input has T = {steps} steps, "
                                 f"shape {shape}), got {values[where]} at index {where}")
    if initial is not None:
        carry, want = batch + (hidden,), _carry_text(kind, batch + (hidden,))
        if pair_of_carries:
            want = f"the pair (forward's, reverse's), each {want}"
            fits = isinstance(initial, (tuple, list)) and len(initial) == 2 and \
                all(_carry_fits(kind, part, carry) for part in initial)
        else:
            fits = _carry_fits(kind, initial, carry)
        if not fits:
            got = jax.tree.map(lambda a: tuple(jnp.shape(a)), initial)
            raise ValueError(f"{name}: initial must be {want} for input of shape {shape}, got {got}")
    return ParsedInput(data, lengths, initial, batch)


def check_params(name: str, kind: str, params, hidden: int, use_bias: bool) -> int:
    """The params fit the layer: an error naming the layer if not, else ``F``, the input features."""
    keys = ("w_ih", "w_hh", "b_ih", "b_hh") if use_bias else ("w_ih", "w_hh")
    check_param_keys(name, params, keys)
    width = GATES[kind] * hidden
    features = jnp.shape(params["w_ih"])[0] if jnp.ndim(params["w_ih"]) == 2 else -1
    expected = {"w_ih": (features, width), "w_hh": (hidden, width), "b_ih": (width,), "b_hh": (width,)}
    if features < 0 or any(tuple(jnp.shape(params[k])) != expected[k] for k in keys):
        shapes = ", ".join(f"{k} {tuple(jnp.shape(params[k]))}" for k in keys)
        raise ValueError(f"{name}: params of shapes {shapes} do not fit w_ih (F, {width}), w_hh ({hidden}, {width})"
                         f"{f', b_ih ({width},), b_hh ({width},)' if use_bias else ''}")
    return features


def no_cotangent(lengths):
    """The ``float0`` cotangent of integer ``lengths`` (``None`` for none): they are not differentiable."""
    return None if lengths is None else np.zeros(jnp.shape(lengths), jax.dtypes.float0)


def _compute_dtype(data, params):
    """The input's and the params' dtypes promoted (bfloat16 params on float32 data compute in
    float32, as :func:`fnnet.Dense` does); integer input becomes JAX's default float."""
    dtype = jnp.result_type(jnp.result_type(data), *(jnp.result_type(p) for p in params.values()))
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.result_type(float)


def _cast(params, dtype):
    return {k: v.astype(dtype) for k, v in params.items()}


def _valid_steps(lengths, steps: int):
    """``(T, N)`` booleans, True where step ``t`` of sequence ``n`` is inside it; ``None`` without lengths."""
    return None if lengths is None else jnp.arange(steps)[:, None] < lengths.reshape(1, -1)


# -- a layer of a cell --------------------------------------------------------------------------------

class Cell(NamedTuple):
    """A recurrent cell as :func:`recurrent_layer` runs it, time-major, ``N`` sequences of ``H`` units:

    * ``forward(params, x (T, N, F), mask (T, N) or None, carry0) -> (h (T, N, H), h_T (N, H), residuals)``,
      ``carry0`` ``h_0 (N, H)`` or an LSTM's ``(h_0, c_0)``; past a sequence's end the carry stays;
    * ``backward(params, residuals, dys (T, N, H) or None, dh_T (N, H) or None) -> (dparams, dx (T, N, F), dcarry0)``:
      ``dys`` the outputs' gradients (sequence mode), or ``dh_T`` the last step's (last-step mode);
    * ``apply`` (optional): ``forward`` without the residuals, ``(h, h_T)``, for a cell whose ``forward``
      computes more than the outputs (the LSTM's computes the backward's factors, and in place: autodiff
      of that loop would keep its whole buffer at every step).
    """
    kind: str
    forward: Callable
    backward: Callable
    options: tuple = ()   # keyword arguments of each, as (name, value) pairs (the RNN's activation)
    apply: Callable | None = None  # (params, x, mask, carry0) -> (h, h_T): the forward alone (None: forward's)


class RecurrentResiduals(NamedTuple):
    """What a recurrent layer's ``forward`` keeps: the input as given (``dx``'s structure and
    shapes), its cell's residuals (``RNNResiduals``, ``LSTMResiduals``, ``GRUResiduals``) and the
    carry it ended with (what :func:`fnnet.layers.recurrent.carry_forward` hands to the next window)."""
    inputs: Any        # the layer's input as given: an array (..., T, F) or a Sequences
    cell: Any          # the cell's residuals, time-major (T, N, ...)
    carry: Any = None  # the carry after each sequence's last valid step, shaped as `initial`: (..., H), an LSTM's pair


class _Setup(NamedTuple):
    name: str
    cell: Cell
    hidden: int
    return_sequences: bool
    use_bias: bool


def _last_carry(kind: str, residuals, h_last, batch: tuple):
    """The carry after each sequence's last valid step, in the batch layout ``initial`` takes: ``h_T``
    ``(..., H)``, for an LSTM the pair ``(h_T, c_T)`` (``c_T`` is the LSTM's last ``c``, which stays put
    past a sequence's end; with no steps at all, the carry is the one given)."""
    h_last = h_last.reshape(batch + h_last.shape[-1:])
    if kind != "LSTM":
        return h_last
    return h_last, residuals.c_last.reshape(batch + residuals.c_last.shape[-1:])


def _forward(setup: _Setup, params, x, keep: bool = True):
    """``(y, RecurrentResiduals)``: the input checked and laid out ``(T, N, F)``, the cell's scan, the
    outputs laid out again (zero past each sequence's end) or the last valid step's. ``keep=False``
    (``apply``): the cell's ``apply`` where it has one, and ``(y, None)``."""
    name, cell, hidden = setup.name, setup.cell, setup.hidden
    given = parse_input(name, cell.kind, x, check_params(name, cell.kind, params, hidden, setup.use_bias), hidden)
    dt = _compute_dtype(given.data, params)
    xs = time_major(jnp.asarray(given.data).astype(dt))
    mask = _valid_steps(given.lengths, xs.shape[0])
    if mask is not None:  # the padding is never read: not even a NaN there reaches dW_ih = Σ x_tᵀ·da_t
        xs = jnp.where(mask[:, :, None], xs, 0)
    if given.initial is None:  # zeros like the input's: under jax.shard_map they vary over devices as it does
        zeros = jnp.zeros_like(xs[0, :, :1], dt, shape=(xs.shape[1], hidden))
        carry0 = (zeros, zeros) if cell.kind == "LSTM" else zeros
    else:
        carry0 = jax.tree.map(lambda a: jnp.asarray(a).astype(dt).reshape(xs.shape[1], hidden), given.initial)
        carry0 = tuple(carry0) if cell.kind == "LSTM" else carry0
    if not keep and cell.apply is not None:
        h, h_last = cell.apply(_cast(params, dt), xs, mask, carry0, **dict(cell.options))
    else:
        h, h_last, residuals = cell.forward(_cast(params, dt), xs, mask, carry0, **dict(cell.options))
    if not setup.return_sequences:
        y = h_last.reshape(given.batch + (hidden,))
    else:
        y = batch_major(h if mask is None else jnp.where(mask[:, :, None], h, 0), given.batch)
        y = y if given.lengths is None else Sequences(y, given.lengths)  # the lengths go on to the next layer
    if not keep:
        return y, None
    return y, RecurrentResiduals(x, residuals, _last_carry(cell.kind, residuals, h_last, given.batch))


def _backward(setup: _Setup, params, residuals: RecurrentResiduals, dy):
    """``(dparams, dx)``: ``dy`` laid out ``(T, N, H)`` (or the last step's ``(N, H)``), the cell's
    reverse scan, and ``dx`` in the input's form (a :class:`Sequences`: ``float0`` for the lengths,
    the initial carry's gradient)."""
    inputs, cell_residuals = residuals.inputs, residuals.cell
    data, lengths, initial = unpack(inputs)
    cell, dt = setup.cell, cell_residuals.x.dtype
    dy = (dy.x if isinstance(dy, Sequences) else dy).astype(dt)
    dys, dh_last = (time_major(dy), None) if setup.return_sequences else (None, dy.reshape(-1, setup.hidden))
    grads, dx_rows, dcarry0 = cell.backward(_cast(params, dt), cell_residuals, dys, dh_last, **dict(cell.options))
    grads = {k: grads[k].astype(params[k].dtype) for k in params}
    steps, n = cell_residuals.x.shape[:2]
    dx = batch_major(dx_rows.reshape(steps, n, -1), jnp.shape(data)[:-2]).astype(jnp.result_type(data))
    if not isinstance(inputs, Sequences):
        return grads, dx
    dinitial = None
    if initial is not None:  # dh_0 (and dc_0), shaped and typed as the carry given
        lstm = cell.kind == "LSTM"
        dinitial = jax.tree.map(lambda d, a: d.reshape(jnp.shape(a)).astype(jnp.result_type(a)),
                                tuple(dcarry0) if lstm else dcarry0, tuple(initial) if lstm else initial)
    return grads, Sequences(dx, no_cotangent(lengths), dinitial)


def recurrent_layer(cell: Cell, hidden: int, *, doc: str, return_sequences: bool = True, use_bias: bool = True,
                    w_init=None, recurrent_init=None, b_init=None, dtype=None) -> Layer:
    """The :class:`fnnet.Layer` of ``cell`` with ``hidden`` units (the arguments are :func:`fnnet.RNN`'s);
    its ``apply`` is the cell's forward alone (``Cell.apply``, else its ``forward``'s output: a forward
    ``lax.scan`` in plain JAX, which autodiff differentiates for the checks), its ``backward`` the cell's
    reverse scan."""
    kind = cell.kind
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden <= 0:
        raise ValueError(f"{kind}: hidden must be a positive int, got {hidden!r}")
    options = dict(cell.options)
    details = [v for v in options.values() if v != "tanh"] + ([] if return_sequences else ["last step"]) + \
        ([] if use_bias else ["no bias"])
    setup = _Setup(f"{kind}({', '.join([str(hidden)] + details)})", cell, hidden, return_sequences, use_bias)
    width = GATES[kind] * hidden
    default_init = initializers.uniform(1.0 / math.sqrt(hidden))  # PyTorch's: U(-1/√H, 1/√H), biases too
    w_init = default_init if w_init is None else w_init
    recurrent_init = w_init if recurrent_init is None else recurrent_init
    b_init = default_init if b_init is None else b_init

    def init(key, in_shape):
        in_shape = as_shape(in_shape, setup.name)
        if len(in_shape) < 2:
            raise ValueError(f"{setup.name}: expected in_shape (T, features) (one sequence, no batch axis), "
                             f"got {in_shape}")
        k_ih, k_hh, k_bi, k_bh = jax.random.split(key, 4)
        dtype_ = param_dtype(dtype)
        params = {"w_ih": w_init(k_ih, (in_shape[-1], width), dtype_),
                  "w_hh": recurrent_init(k_hh, (hidden, width), dtype_)}
        if use_bias:
            params["b_ih"] = b_init(k_bi, (width,), dtype_)
            params["b_hh"] = b_init(k_bh, (width,), dtype_)
        return (in_shape[:-1] if return_sequences else in_shape[:-2]) + (hidden,), params

    def forward(params, x):
        return _forward(setup, params, x)

    def apply(params, x):
        return _forward(setup, params, x, keep=False)[0]

    def backward(params, residuals, dy):
        return _backward(setup, params, residuals, dy)

    return make_layer(setup.name, init, apply, forward, backward, doc=doc,
                      spec=spec(kind, hidden=hidden, **options, return_sequences=return_sequences, use_bias=use_bias))
