"""Backprop through time, seen: the gradient ``∂L/∂h_t`` that reaches each step of a recurrent layer.

The reverse scan of an :func:`fnnet.RNN`, :func:`fnnet.LSTM` or :func:`fnnet.GRU` carries, into step
``t``, the total gradient at its hidden state::

    ∂L/∂h_t = dy_t (from the output at t) + (from step t + 1, through W_hh)

(the GRU also passes ``∂L/∂h_{t+1}·z_{t+1}`` straight through). :func:`carried` reads it from the
layer's own hand-written backward (each cell module's ``*_through_time``, which shares the scan body
of its backward); :func:`reference` computes it independently, in plain JAX, as ``jax.grad`` of
the loss with respect to a zero perturbation ``ε_t`` added to ``h_t`` after each step; and
:func:`through_time` keeps both for one traced layer (:attr:`fnnet.tracing.LayerTrace.time`),
checked against each other step by step in float64 (a NaN or inf is never ``OK``).

Steps are counted ``t = 1 … T``: ``h_0`` is the initial carry, ``h_t`` the output at position
``t − 1`` (so ``dh[:, t - 1]`` is ``∂L/∂h_t``). Two gradients are kept:

* the total one above (what a trace shows): in sequence mode every step also gets its own
  output's gradient, so it stays up even where what comes *through time* dies;
* ``from_last``: the gradient of the last step's output alone, carried back (``dys`` zero but at
  each sequence's last valid step). Its first/last ratio is the classic vanishing/exploding
  measure; in last-step mode (``return_sequences=False``) the two are the same.

:func:`time_health` gives the training monitor ``time_ratio`` (that ratio) and ``time_factor``
(its ``(T − 1)``-th root: the average factor per step back), and :data:`TIME_VANISHING` /
:data:`TIME_EXPLODING` are where :func:`fnnet.train.monitor.health_warnings` warns. A
:func:`fnnet.Bidirectional` layer is not covered (its two directions run in opposite times).

Example:
  >>> import jax, jax.numpy as jnp, fnnet
  >>> from fnnet.through_time import through_time
  >>> rnn = fnnet.RNN(4, return_sequences=False)
  >>> _, params = rnn.init(jax.random.PRNGKey(0), (6, 3))
  >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 3))
  >>> seen = through_time(rnn, params, x, jnp.ones((2, 4)))
  >>> seen.dh.shape, seen.passed, bool(seen.norms()[0] < seen.norms()[-1])
  ((2, 6, 4), True, True)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet.gradcheck._numerics import describe_counts, errors, nonfinite_counts, to_float64, worst
from fnnet.gradcheck._one_layer import RTOL
from fnnet.layer import Layer
from fnnet.layers._sequences import Sequences, time_major, unpack
from fnnet.layers.gru import gru_through_time
from fnnet.layers.lstm import lstm_through_time
from fnnet.layers.rnn import rnn_through_time

TIME_VANISHING = 0.25
"""The monitor warns that gradients vanish through time when the last output's gradient shrinks
by more than this factor per step back, on average (1000× within 5 steps), for three records in
a row. An LSTM or a tanh RNN at PyTorch's initialisation shrinks by about 0.5-0.6 per step."""
TIME_EXPLODING = 2.0
"""... and that they explode when it grows by more than this factor per step back (1000× within 10 steps)."""

_CARRIED = {"RNN": rnn_through_time, "LSTM": lstm_through_time, "GRU": gru_through_time}


def core(layer: Layer) -> Layer:
    """The RNN, LSTM or GRU itself: ``layer``, or the one a :func:`fnnet.layers.recurrent.Stateful` keeps."""
    stateful = layer.spec is not None and layer.spec.kind == "Stateful" and layer.children
    return layer.children[0] if stateful else layer


def is_recurrent(layer: Layer) -> bool:
    """Whether ``layer`` is an :func:`fnnet.RNN`, :func:`fnnet.LSTM` or :func:`fnnet.GRU`, or a
    :func:`fnnet.layers.recurrent.Stateful` one (by its spec)."""
    return core(layer).spec is not None and core(layer).spec.kind in _CARRIED


def _core(layer: Layer, x, state, train: bool):
    """``(the RNN, LSTM or GRU, its input)``: a Stateful layer's inner one, from the kept carry in training."""
    inner = core(layer)
    return inner, Sequences(x, initial=state) if inner is not layer and train else x


def _activation(layer: Layer) -> dict:
    return {"activation": layer.spec["activation"]} if layer.spec.kind == "RNN" else {}


def _lengths(x):
    lengths = unpack(x)[1]
    return None if lengths is None else jnp.reshape(jnp.asarray(lengths), (-1,))


def _last_valid(seq, lengths):
    """``seq`` ``(T, N, H)`` at each sequence's last valid step, ``(N, H)`` (zeros for a length 0)."""
    if lengths is None:
        return seq[-1]
    picked = seq[jnp.clip(lengths - 1, 0), jnp.arange(seq.shape[1])]
    return jnp.where((lengths > 0)[:, None], picked, 0)


def _cotangents(layer: Layer, dy, lengths, hidden: int, from_last: bool):
    """``(dys (T, N, H) or None, dh_last (N, H) or None)``, as the layer's backward takes them."""
    dy = jnp.asarray(unpack(dy)[0])
    if not layer.spec["return_sequences"]:
        return None, dy.reshape(-1, hidden)
    dys = time_major(dy)
    return (None, _last_valid(dys, lengths)) if from_last else (dys, None)


def carried(layer: Layer, params, x, dy, *, from_last: bool = False):
    """``∂L/∂h_t`` for every step, ``(N, T, H)`` (``N``: the leading axes flattened), from the layer's
    hand-written backward scan at ``(params, x)`` along ``dy`` (its output's gradient); zero past a
    sequence's end. ``from_last``: of the gradient of each sequence's last output alone."""
    _, residuals = layer.forward(params, x)
    cell = residuals.cell
    dt, hidden = cell.x.dtype, layer.spec["hidden"]
    dys, dh_last = _cotangents(layer, dy, _lengths(x), hidden, from_last)
    cast = (lambda a: None if a is None else a.astype(dt))
    dh = _CARRIED[layer.spec.kind]({k: v.astype(dt) for k, v in params.items()}, cell, cast(dys), cast(dh_last),
                                   **_activation(layer))
    return jnp.swapaxes(dh, 0, 1)


# -- the reference: plain JAX, the cell written once more, and jax.grad through a zero ε_t --------------

def _reference_cell(layer: Layer, params):
    """``(recurrent, after)``: ``u = h_{t-1}·W_hh + b_hh``, and the rest of step ``t`` given ``u``,
    ``after(u, x_t, carry_{t-1}) -> carry_t`` (PyTorch's equations, as :mod:`fnnet.layers.recurrent` writes them)."""
    kind, w_ih, w_hh = layer.spec.kind, params["w_ih"], params["w_hh"]
    b_ih, b_hh = (params[k][None] if k in params else 0.0 for k in ("b_ih", "b_hh"))   # (1, G·H): rows of N
    sigmoid, act = jax.nn.sigmoid, jnp.tanh if _activation(layer).get("activation", "tanh") == "tanh" else jax.nn.relu

    def recurrent(h_prev):
        return h_prev @ w_hh + b_hh

    def after(u, x_t, carry):
        ax = x_t @ w_ih + b_ih
        if kind == "RNN":
            return act(ax + u)
        if kind == "LSTM":
            a_i, a_f, a_g, a_o = jnp.split(ax + u, 4, axis=-1)
            c = sigmoid(a_f) * carry[1] + sigmoid(a_i) * jnp.tanh(a_g)
            return sigmoid(a_o) * jnp.tanh(c), c
        (x_r, x_z, x_n), (u_r, u_z, u_n) = jnp.split(ax, 3, axis=-1), jnp.split(u, 3, axis=-1)
        r, z = sigmoid(x_r + u_r), sigmoid(x_z + u_z)
        return (1 - z) * jnp.tanh(x_n + r * u_n) + z * carry

    return recurrent, after


def reference_inputs(layer: Layer, params, x):
    """``(xs (T, N, F), mask (T, N), carry_0)`` of ``x`` for the reference: the padding zeroed, the
    initial carry (``h_0``, an LSTM's ``(h_0, c_0)``, zeros when not given) of shape ``(N, H)``."""
    data, lengths, initial = unpack(x)
    dt = jnp.result_type(jnp.asarray(data).dtype, *(jnp.result_type(v) for v in params.values()))
    xs = time_major(jnp.asarray(data).astype(dt))
    steps, n, hidden = xs.shape[0], xs.shape[1], layer.spec["hidden"]
    mask = jnp.ones((steps, n), bool) if lengths is None else jnp.arange(steps)[:, None] < _lengths(x)[None, :]
    xs = jnp.where(mask[:, :, None], xs, 0)
    if initial is None:
        initial = (jnp.zeros((n, hidden), dt),) * (2 if layer.spec.kind == "LSTM" else 1)
        initial = initial if layer.spec.kind == "LSTM" else initial[0]
    carry0 = jax.tree.map(lambda a: jnp.asarray(a).astype(dt).reshape(n, hidden), initial)
    return xs, mask, tuple(carry0) if layer.spec.kind == "LSTM" else carry0


def reference_run(layer: Layer, params, xs, mask, carry0, eps):
    """The layer's forward in plain JAX with ``eps`` (``(T, N, H)``; an LSTM's pair, for ``h`` and
    ``c``) added to each step's new carry: ``(last carry, carries (T, N, H) or pairs)``; past a
    sequence's end the carry stays (and its ``ε`` is not added)."""
    recurrent, after = _reference_cell(layer, params)
    lstm = layer.spec.kind == "LSTM"

    def body(carry, inputs):
        x_t, m_t, e_t = inputs
        new = jax.tree.map(jnp.add, after(recurrent(carry[0] if lstm else carry), x_t, carry), e_t)
        carry = jax.tree.map(lambda a, b: jnp.where(m_t[:, None], a, b), new, carry)
        return carry, carry

    return lax.scan(body, carry0, (xs, mask, eps))


def reference(layer: Layer, params, x, dy, *, from_last: bool = False):
    """``(∂L/∂h_t (N, T, H), ∂L/∂c_t (an LSTM's, else None), y)`` by ``jax.grad`` of ``Σ dy·y`` with
    respect to a zero ``ε_t`` added to ``h_t`` (and ``c_t``) in :func:`reference_run`, independent of
    the hand-written backward; ``y`` is the reference's output, to compare with the layer's apply."""
    xs, mask, carry0 = reference_inputs(layer, params, x)
    lstm, hidden = layer.spec.kind == "LSTM", layer.spec["hidden"]
    dys, dh_last = _cotangents(layer, dy, _lengths(x), hidden, from_last)

    def outputs(eps):
        last, carries = reference_run(layer, params, xs, mask, carry0, eps)
        hs, h_last = (carries[0], last[0]) if lstm else (carries, last)
        return jnp.where(mask[:, :, None], hs, 0) if layer.spec["return_sequences"] else h_last

    def loss(eps):  # Σ dy·y: its gradient with respect to what y depends on is dy's backward
        y = outputs(eps)
        if dys is not None:
            return jnp.sum(y * dys)
        return jnp.sum((_last_valid(y, _lengths(x)) if y.ndim == 3 else y) * dh_last)

    zero = jnp.zeros(xs.shape[:2] + (hidden,), xs.dtype)
    eps = (zero, zero) if lstm else zero
    grads = jax.grad(loss)(eps)
    dh, dc = grads if lstm else (grads, None)
    y = outputs(eps)
    return jnp.swapaxes(dh, 0, 1), None if dc is None else jnp.swapaxes(dc, 0, 1), \
        jnp.swapaxes(y, 0, 1) if y.ndim == 3 else y


def step_terms(layer: Layer, params, x, dh, dc=None):
    """``(through (N, T, H), du (N, T, G·H))``: for each step ``t``, what reaches ``h_t`` from step
    ``t + 1`` given ``∂L/∂h_{t+1}`` (``dh``, batch-major; an LSTM's ``∂L/∂c_{t+1}`` too, ``dc``), by
    ``jax.vjp`` of the reference cell's step ``t + 1`` at the reference forward's ``h_t``: ``du`` the
    gradient of ``u_{t+1} = h_t·W_hh + b_hh`` (every gate's pre-activation, in PyTorch's order) and
    ``through = du·W_hhᵀ`` (plus, for a GRU, ``∂L/∂h_{t+1}·z_{t+1}`` straight through). Zero at the
    last step and where step ``t + 1`` is past a sequence's end."""
    xs, mask, carry0 = reference_inputs(layer, params, x)
    lstm = layer.spec.kind == "LSTM"
    zero = jnp.zeros(xs.shape[:2] + (layer.spec["hidden"],), xs.dtype)
    _, carries = reference_run(layer, params, xs, mask, carry0, (zero, zero) if lstm else zero)
    recurrent, after = _reference_cell(layer, params)

    def one(carry_t, x_next, cotangent):
        u = recurrent(carry_t[0] if lstm else carry_t)
        du, dcarry = jax.vjp(lambda u_, c_: after(u_, x_next, c_), u, carry_t)[1](cotangent)
        return du, du @ params["w_hh"].T + (dcarry[0] if lstm else dcarry)   # RNN, LSTM: dcarry's h part is 0

    cot = (time_major(dh), time_major(dc)) if lstm else time_major(dh)
    du, through = jax.vmap(one)(jax.tree.map(lambda a: a[:-1], carries), xs[1:], jax.tree.map(lambda a: a[1:], cot))
    valid = mask[1:, :, None]
    through = jnp.concatenate([jnp.where(valid, through, 0), jnp.zeros_like(zero[:1])])
    du = jnp.concatenate([jnp.where(valid, du, 0), jnp.zeros((1,) + du.shape[1:], du.dtype)])
    return jnp.swapaxes(through, 0, 1), jnp.swapaxes(du, 0, 1)


def derived(layer: Layer, params, x, dy, *, state=(), train: bool = False) -> dict:
    """What :func:`fnnet.explain` derives for a recurrent layer, independent of its hand-written
    backward (float64 NumPy, batch-major): ``dh`` (:func:`reference`'s ``∂L/∂h_t``), ``y`` (the
    reference's outputs), ``through`` and ``du`` (:func:`step_terms` along ``dh``), ``w_hh``."""
    layer, x = _core(layer, x, state, train)
    with jax.enable_x64(True):
        params, x, dy = to_float64(params), to_float64(x), to_float64(unpack(dy)[0])

        def run(params, x, dy):
            dh, dc, y = reference(layer, params, x, dy)
            through, du = step_terms(layer, params, x, dh, dc)
            return {"dh": dh, "y": y, "through": through, "du": du, "w_hh": params["w_hh"]}

        return {k: np.asarray(v) for k, v in jax.device_get(jax.jit(run)(params, x, dy)).items()}


# -- one traced layer: the hand-written gradients, checked against the reference ------------------------

@dataclasses.dataclass
class ThroughTime:
    """A recurrent layer's gradients through time in a traced step (float64, ``N`` sequences: the
    leading axes flattened). ``dh[n, t - 1]`` is ``∂L/∂h_t``, from the hand-written backward scan.

    A :func:`fnnet.trace` keeps one for each RNN, LSTM or GRU layer (``LayerTrace.time``;
    ``LayerTrace.through_time`` is its :meth:`norms`), and draws them with ``Trace.plot_through_time``.

    Example:
      >>> import pathlib, tempfile, jax, fnnet
      >>> model = fnnet.serial(fnnet.LSTM(4), fnnet.Dense(2))
      >>> _, params = model.init(jax.random.PRNGKey(0), (5, 3))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 3))
      >>> traced = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, (x[..., 0] > 0).astype(int))
      >>> seen = traced.layers[0].time
      >>> seen.dh.shape, traced.layers[0].through_time.shape, seen.passed
      ((2, 5, 4), (5,), True)
      >>> traced.plot_through_time(pathlib.Path(tempfile.mkdtemp()) / "time.png").suffix
      '.png'
    """

    dh: np.ndarray
    """``(N, T, H)``: ``∂L/∂h_t``, the total (the output at ``t`` plus step ``t + 1``); zero past each end."""
    dh_from_last: np.ndarray
    """``(N, T, H)``: the same for the gradient of each sequence's last output alone."""
    lengths: np.ndarray | None = None
    """``(N,)`` the valid lengths (``None``: all ``T``)."""
    error: float = math.nan
    """The largest relative difference of ``dh`` and ``dh_from_last`` from :func:`reference`'s, step
    by step (each step scaled by its own largest entry, so a vanished step is checked too); ``nan``
    when not checked; ``inf`` when one side has a NaN or inf the other has not."""
    problem: str | None = None
    """What the check found wrong, in words (``None``: nothing, or not checked)."""
    reference: np.ndarray | None = None
    """``(N, T, H)``: :func:`reference`'s ``∂L/∂h_t`` (``None`` when not checked)."""
    reference_c: np.ndarray | None = None
    """``(N, T, H)``: an LSTM's ``∂L/∂c_t`` by the reference (else ``None``)."""

    @property
    def passed(self) -> bool:
        """Checked or not, nothing found wrong, and every number finite."""
        return self.problem is None and not self.error > RTOL

    def _ends(self, dh) -> np.ndarray:
        steps = dh.shape[1]
        lengths = np.full(dh.shape[0], steps) if self.lengths is None else self.lengths
        last = dh[np.arange(dh.shape[0]), np.clip(lengths - 1, 0, steps - 1)]
        return np.where((lengths > 0)[:, None], last, 0.0)

    def norms(self, from_last: bool = False) -> np.ndarray:
        """``(T,)``: ``‖∂L/∂h_t‖`` at ``t = 1 … T``, the Euclidean norm over every sequence and unit of
        the step (per sequence: ``np.linalg.norm(dh, axis=-1)``)."""
        dh = self.dh_from_last if from_last else self.dh
        return np.sqrt(np.sum(np.square(dh), axis=(0, 2)))

    def ratio(self, from_last: bool = False) -> float:
        """``‖∂L/∂h_1‖ / ‖∂L/∂h_T‖``: the first step's over each sequence's last valid step's (norms
        over the batch); ``nan`` when no gradient reached the last step."""
        dh = self.dh_from_last if from_last else self.dh
        last = float(np.sqrt(np.sum(np.square(self._ends(dh)))))
        return float(np.sqrt(np.sum(np.square(dh[:, 0])))) / last if last > 0 else math.nan

    def summary(self, label: str) -> str:
        """One line for ``print(trace)``: the norms at ``t = T`` and ``t = 1``, both ratios, the check."""
        norms = self.norms()
        check = "not checked" if math.isnan(self.error) and self.problem is None else \
            f"OK ({self.error:.1e})" if self.passed else f"NOT OK: {self.problem or f'{self.error:.1e}'}"
        return (f"through time, {label}: ‖∂L/∂h_t‖ {norms[-1]:.3g} at t = T = {len(norms)}, {norms[0]:.3g} at "
                f"t = 1: first/last {self.ratio():.3g} (of the last output's gradient alone: "
                f"{self.ratio(from_last=True):.3g}); backward scan vs jax.grad through ε_t: {check}")


def _step_error(manual, ref) -> tuple[float, int]:
    """The worst per-step relative error of ``manual`` against ``ref`` (``(N, T, H)``) and its step (1-based)."""
    per_step = [errors(manual[:, t], ref[:, t])[1] for t in range(manual.shape[1])]
    worst_step = int(np.argmax([math.inf if math.isnan(e) else e for e in per_step])) if per_step else 0
    return worst(per_step), worst_step + 1


def _problem(values: dict, error: float, step: int, forward_error: float) -> str | None:
    counts = nonfinite_counts([values["dh"], values["dh_from_last"]])
    if counts != (0, 0):
        return f"through time: ∂L/∂h_t of the backward scan has {describe_counts(*counts)}"
    if forward_error > RTOL:
        return (f"through time: the plain-JAX reference cell disagrees with the layer's apply (max rel error "
                f"{forward_error:.1e}), so ∂L/∂h_t is not checked")
    if error > RTOL:
        return (f"through time: ∂L/∂h_t of the hand-written backward scan differs from jax.grad through a zero "
                f"ε_t (max rel error {error:.1e}, at step t = {step})")
    return None


def through_time(layer: Layer, params, x, dy, *, state=(), train: bool = False, check: bool = True) -> ThroughTime:
    """``∂L/∂h_t`` of a recurrent ``layer`` at ``(params, x)`` along its output's gradient ``dy``
    (the values a traced step holds; ``state``, ``train``: a Stateful layer's), in float64:
    :func:`carried` (the total, and from the last output alone) and, with ``check``,
    :func:`reference`'s, compared step by step. One compiled program (a few examples: it is a diagnostic)."""
    layer, x = _core(layer, x, state, train)
    with jax.enable_x64(True):
        params, x, dy = to_float64(params), to_float64(x), to_float64(unpack(dy)[0])

        def run(params, x, dy):
            out = {"dh": carried(layer, params, x, dy), "dh_from_last": carried(layer, params, x, dy, from_last=True)}
            if check:
                out["ref"], out["ref_c"], out["y_ref"] = reference(layer, params, x, dy)
                out["ref_last"] = reference(layer, params, x, dy, from_last=True)[0]
                out["y"] = unpack(layer.apply(params, x))[0].reshape(out["y_ref"].shape)
            return out

        values = jax.device_get(jax.jit(run)(params, x, dy))
    lengths = _lengths(x)
    seen = ThroughTime(np.asarray(values["dh"]), np.asarray(values["dh_from_last"]),
                       None if lengths is None else np.asarray(lengths))
    if check:
        total, at_total = _step_error(values["dh"], values["ref"])
        last, at_last = _step_error(values["dh_from_last"], values["ref_last"])
        seen.error = worst([total, last])
        seen.problem = _problem(values, seen.error, at_total if total >= last else at_last,
                                errors(values["y_ref"], values["y"])[1])
        seen.reference, seen.reference_c = values["ref"], values["ref_c"]
    elif nonfinite_counts([values["dh"], values["dh_from_last"]]) != (0, 0):
        seen.problem = _problem(values, 0.0, 0, 0.0)
    return seen


# -- the training monitor: two scalars inside the compiled step -----------------------------------------

def _norm(v):
    """A Euclidean norm that neither overflows nor underflows in float32 (scaled by the largest entry)."""
    v = v.astype(jnp.float32)
    top = jnp.max(jnp.abs(v))
    safe = jnp.where(top > 0, top, 1.0)
    return top * jnp.sqrt(jnp.sum(jnp.square(v / safe)))


def time_health(layer: Layer, params, x, dy, *, state=(), train: bool = False) -> dict:
    """``{"time_ratio": ‖∂L_last/∂h_1‖ / ‖∂L_last/∂h_T‖, "time_factor": its (T − 1)-th root}`` for
    the gradient of each sequence's last output alone (JAX scalars, inside a compiled step: one more
    forward and backward scan of the layer); ``{}`` for a single step. NaN when no gradient reached
    the last step.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> from fnnet.through_time import time_health
      >>> rnn = fnnet.RNN(4, return_sequences=False, recurrent_init=fnnet.initializers.normal(0.01))
      >>> _, params = rnn.init(jax.random.PRNGKey(0), (6, 3))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 3))
      >>> health = time_health(rnn, params, x, jnp.ones((2, 4)))   # W_hh ≈ 0: nothing carries back
      >>> sorted(health), bool(health["time_factor"] < 0.1)
      (['time_factor', 'time_ratio'], True)
    """
    layer, x = _core(layer, x, state, train)
    dh = carried(layer, params, x, dy, from_last=True)           # (N, T, H)
    steps = dh.shape[1]
    if steps < 2:
        return {}
    ratio = _norm(dh[:, 0]) / _norm(_last_valid(jnp.swapaxes(dh, 0, 1), _lengths(x)))
    return {"time_ratio": ratio, "time_factor": jnp.exp(jnp.log(ratio) / (steps - 1))}
