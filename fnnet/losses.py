"""Losses: a value and its hand-written gradient with respect to the prediction.

Conventions, shared by every loss here:

* ``pred`` has shape ``(..., K)``: any leading example axes, then the output
  axis of size ``K``. The number of examples ``N`` is the product of the
  leading axes (1 for a single example).
* ``value(pred, target)`` is a scalar: the per-example loss (summed over the
  output axis, except :data:`mse`, which averages it) **averaged over the N
  examples**.
* ``grad(pred, target)`` is ``dL/dpred``, including the ``1/N``: this is the
  only place the average lives; layers never average.
* The target must have the prediction's shape (for :data:`softmax_cross_entropy`
  also integer labels of shape ``pred.shape[:-1]``). Anything else raises a
  ``ValueError``; there is no silent broadcasting of ``(N,)`` against ``(N, 1)``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


KINDS = ("regression", "probabilities", "logits", "multiclass_logits")
"""What a model's output means for a loss; see :class:`Loss`."""


class Loss(NamedTuple):
    """A loss: two pure functions ``(value, grad)``, what the prediction means, and a name.

    ``kind`` decides accuracy and :func:`fnnet.train.predict_proba`, and which targets
    are accepted:

    * ``"regression"`` (the default): any real outputs; no accuracy;
    * ``"probabilities"``: binary, outputs in [0, 1] (after :data:`fnnet.Sigmoid`), targets in [0, 1];
    * ``"logits"``: binary, outputs are logits (sigmoid applied by the loss), targets in [0, 1];
    * ``"multiclass_logits"``: outputs are logits over ``K`` classes (softmax applied by the
      loss), targets integer labels in ``[0, K)`` or one-hot rows.

    Example:
      >>> import jax.numpy as jnp, fnnet
      >>> mae = fnnet.Loss(lambda p, t: jnp.sum(jnp.abs(p - t)) / p.shape[0],
      ...                  lambda p, t: jnp.sign(p - t) / p.shape[0], kind="regression", name="mae")
      >>> mae.kind, fnnet.losses.loss_name(mae)
      ('regression', 'mae')
    """

    value: Callable
    """``(pred, target) -> scalar``: the mean loss over examples."""
    grad: Callable
    """``(pred, target) -> dL/dpred`` (same shape as ``pred``), including the ``1/N``."""
    kind: str = "regression"
    """What the prediction means: one of :data:`KINDS`."""
    name: str | None = None
    """Shown in gradient-check reports; ``None`` falls back to ``value``'s function name."""


def _make_loss(name: str, kind: str, value, grad) -> Loss:
    return Loss(value, grad, kind=kind, name=name)


def loss_name(loss: Loss) -> str:
    """The name of a loss (``"softmax_cross_entropy"``...)."""
    return loss.name or getattr(loss.value, "__name__", "loss")


def loss_kind(loss: Loss) -> str:
    """What the model's output means for this loss: ``"probabilities"``, ``"logits"``,
    ``"multiclass_logits"`` or ``"regression"`` (used by accuracy and ``predict_proba``)."""
    if loss.kind not in KINDS:
        raise ValueError(f"Loss kind must be one of {', '.join(KINDS)}, got {loss.kind!r}")
    return loss.kind


def _num_examples(name, pred) -> int:
    if jnp.ndim(pred) == 0:
        raise ValueError(f"{name}: expected a prediction with an output axis (..., K), got a scalar")
    return math.prod(jnp.shape(pred)[:-1])


def _same_shape(name, pred, target):
    if jnp.shape(target) != jnp.shape(pred):
        hint = ""
        if jnp.shape(target) == jnp.shape(pred)[:-1]:
            hint = f"; add the output axis to the target (e.g. y[..., None] -> {jnp.shape(pred)})"
        raise ValueError(f"{name}: target shape {jnp.shape(target)} does not match prediction shape "
                         f"{jnp.shape(pred)}{hint}")
    return jnp.asarray(target, dtype=jnp.result_type(pred))


# --- squared error: the classic tutorial loss --------------------------------

def _squared_error_value(pred, target):
    target = _same_shape("squared_error", pred, target)
    n = _num_examples("squared_error", pred)
    return 0.5 * jnp.sum((pred - target) ** 2) / n


def _squared_error_grad(pred, target):
    target = _same_shape("squared_error", pred, target)
    return (pred - target) / _num_examples("squared_error", pred)  # (ŷ - y) / N


squared_error = _make_loss("squared_error", "regression", _squared_error_value, _squared_error_grad)
"""``L = (1/N) Σ_n ½ Σ_k (ŷ - y)²``, gradient ``(ŷ - y) / N``."""


# --- mean squared error -----------------------------------------------------

def _mse_value(pred, target):
    target = _same_shape("mse", pred, target)
    return jnp.mean((pred - target) ** 2)


def _mse_grad(pred, target):
    target = _same_shape("mse", pred, target)
    return 2 * (pred - target) / jnp.size(pred)  # 2 (ŷ - y) / (N K)


mse = _make_loss("mse", "regression", _mse_value, _mse_grad)
"""Mean over examples *and* outputs: ``L = (1/(N K)) Σ (ŷ - y)²``, gradient ``2 (ŷ - y) / (N K)``."""


# --- binary cross-entropy on probabilities ----------------------------------

def _clip_eps(pred):
    return jnp.finfo(jnp.result_type(pred)).eps


def _bce_value(pred, target):
    target = _same_shape("binary_cross_entropy", pred, target)
    n = _num_examples("binary_cross_entropy", pred)
    eps = _clip_eps(pred)
    p = jnp.clip(pred, eps, 1 - eps)
    return -jnp.sum(target * jnp.log(p) + (1 - target) * jnp.log1p(-p)) / n


def _bce_grad(pred, target):
    target = _same_shape("binary_cross_entropy", pred, target)
    n = _num_examples("binary_cross_entropy", pred)
    eps = _clip_eps(pred)
    inside = (pred >= eps) & (pred <= 1 - eps)   # the clip's derivative: 0 outside [eps, 1-eps]
    p = jnp.clip(pred, eps, 1 - eps)
    return jnp.where(inside, (p - target) / (p * (1 - p)), 0) / n


binary_cross_entropy = _make_loss("binary_cross_entropy", "probabilities", _bce_value, _bce_grad)
"""On probabilities ``p`` (e.g. after :data:`fnnet.Sigmoid`), clipped to ``[eps, 1-eps]``:
``L = -(1/N) Σ [y log p + (1-y) log(1-p)]``, gradient ``(p - y) / (p (1-p) N)``.

Chained with the sigmoid's backward this gives the tutorials' ``delta = ŷ - y``;
:data:`sigmoid_binary_cross_entropy` computes that directly from logits, stably.
"""


# --- sigmoid + binary cross-entropy, fused, on logits -----------------------

def _sigmoid_bce_value(logits, target):
    target = _same_shape("sigmoid_binary_cross_entropy", logits, target)
    n = _num_examples("sigmoid_binary_cross_entropy", logits)
    # softplus(z) - y z; logaddexp(0, z) is finite for |z| large and smooth at z = 0 (unlike
    # max(z, 0) + log1p(e^-|z|), whose autodiff is wrong exactly at 0)
    per_element = jnp.logaddexp(0, logits) - logits * target
    return jnp.sum(per_element) / n


def _sigmoid_bce_grad(logits, target):
    target = _same_shape("sigmoid_binary_cross_entropy", logits, target)
    return (jax.nn.sigmoid(logits) - target) / _num_examples("sigmoid_binary_cross_entropy", logits)


sigmoid_binary_cross_entropy = _make_loss("sigmoid_binary_cross_entropy", "logits",
                                          _sigmoid_bce_value, _sigmoid_bce_grad)
"""On logits ``z``: ``L = (1/N) Σ [log(1 + e^z) - z y]`` (computed stably), gradient
``(σ(z) - y) / N``. Finite at logits of ±1000."""


# --- softmax + cross-entropy, fused, on logits ------------------------------

def _softmax_targets(pred, target):
    """Integer labels of shape pred.shape[:-1], or one-hot / probabilities of pred's shape."""
    name = "softmax_cross_entropy"
    _num_examples(name, pred)
    target = jnp.asarray(target)
    if jnp.shape(target) == jnp.shape(pred)[:-1] and jnp.issubdtype(target.dtype, jnp.integer):
        return jax.nn.one_hot(target, pred.shape[-1], dtype=pred.dtype)
    if jnp.shape(target) == jnp.shape(pred):
        return target.astype(pred.dtype)
    if jnp.shape(target) == jnp.shape(pred)[:-1]:
        raise ValueError(f"{name}: class labels of shape {jnp.shape(target)} must be integers, "
                         f"got dtype {target.dtype}")
    raise ValueError(f"{name}: target shape {jnp.shape(target)} fits neither integer labels "
                     f"{jnp.shape(pred)[:-1]} nor one-hot {jnp.shape(pred)} for prediction shape "
                     f"{jnp.shape(pred)}")


def _softmax_ce_value(logits, target):
    onehot = _softmax_targets(logits, target)
    n = _num_examples("softmax_cross_entropy", logits)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.sum(jnp.sum(onehot, axis=-1) * lse - jnp.sum(onehot * logits, axis=-1)) / n


def _softmax_ce_grad(logits, target):
    onehot = _softmax_targets(logits, target)
    n = _num_examples("softmax_cross_entropy", logits)
    mass = jnp.sum(onehot, axis=-1, keepdims=True)  # 1 for one-hot targets
    return (jax.nn.softmax(logits, axis=-1) * mass - onehot) / n  # (softmax(z) - onehot(y)) / N


softmax_cross_entropy = _make_loss("softmax_cross_entropy", "multiclass_logits",
                                   _softmax_ce_value, _softmax_ce_grad)
"""On logits ``z`` with integer labels or one-hot targets:
``L = (1/N) Σ_n [logsumexp(z_n) - z_n·y_n]``, gradient ``(softmax(z) - y) / N``.
Finite at logits of ±1000."""


ALL = {"squared_error": squared_error, "mse": mse, "binary_cross_entropy": binary_cross_entropy,
       "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
       "softmax_cross_entropy": softmax_cross_entropy}


def first_bad(mask: np.ndarray) -> str:
    index = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return str(index[0] if len(index) == 1 else tuple(int(i) for i in index))


def check_targets(loss: Loss, y, out_shape, where: str) -> None:
    """Raises ValueError if ``y`` cannot be a target of ``loss`` for outputs of shape ``out_shape``
    (one example's, no batch axis)."""
    kind, name = loss_kind(loss), loss_name(loss)
    values = np.asarray(y)
    if kind == "multiclass_logits" and jnp.issubdtype(values.dtype, jnp.integer) and len(out_shape):
        classes = int(out_shape[-1])
        outside = (values < 0) | (values >= classes)
        if outside.any():
            raise ValueError(
                f"{where}: {name} needs integer labels in [0, {classes}) for a model with {classes} "
                f"outputs; y has {int(values[np.unravel_index(np.argmax(outside), outside.shape)])} at "
                f"index {first_bad(outside)} ({int(outside.sum())} label(s) outside the range)")
    if kind == "multiclass_logits" and not jnp.issubdtype(values.dtype, jnp.integer) and len(out_shape) and \
            tuple(values.shape[1:]) != tuple(out_shape):
        integral = values.size and np.all(values == np.round(values))
        raise ValueError(
            f"{where}: {name} takes integer class labels of shape (N,) or one-hot targets of shape "
            f"(N, {', '.join(map(str, out_shape))}); y is {values.dtype} of shape {values.shape}"
            + ("; its values are whole numbers: pass y.astype(int)" if integral else ""))
    if kind in ("probabilities", "logits") or (kind == "multiclass_logits"
                                               and not jnp.issubdtype(values.dtype, jnp.integer)):
        outside = (values < 0) | (values > 1)
        if outside.any():
            raise ValueError(f"{where}: {name} needs targets in [0, 1]; y has "
                             f"{values[np.unravel_index(np.argmax(outside), outside.shape)]} at index "
                             f"{first_bad(outside)} ({int(outside.sum())} value(s) outside)")
