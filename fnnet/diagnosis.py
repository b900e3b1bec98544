"""``fnnet.doctor``: the checks an experienced practitioner runs before trusting a training run.

From Karpathy's "A Recipe for Training Neural Networks", each with its number and a ✓ or ✗:

1. the loss at initialisation against its expected value (``log K`` for ``K`` classes, ``log 2``
   for a binary output): a much larger one means over-confident initial logits;
2. overfitting one small batch within a bounded number of Adam steps, at the best of a few learning
   rates (:data:`OVERFIT_LRS`): a model (and a backward pass) that can learn at all can memorise
   16 examples: every one of them classified right (for a sequence model every token but each
   window's first, which has one character of context) with the loss at most half where it started, or the loss down to 1 % of where it started (a regression
   loss);
3. the independence of the examples of a batch: with the hand-written backward, the gradient of
   example ``i``'s loss with respect to example ``j``'s input must be exactly zero for ``j ≠ i``
   (BatchNorm in training mode legitimately mixes them: said so);
4. :func:`fnnet.gradcheck.check_model` at the current parameters;
5. dead ReLU units and saturated sigmoid / tanh outputs at initialisation (from :func:`fnnet.trace`).

Check 4 runs first: when the hand-written backward disagrees with ``jax.grad``, checks 2 and 3,
which train or differentiate with it, say ``–`` (not run: their verdict would only repeat
check 4's), so a planted bug fails the one check that names it. NaN and inf fail, never pass.
The targets are checked as :func:`fnnet.train.fit` checks them (labels within the classes).

Example:
  >>> import jax, numpy as np, fnnet
  >>> x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32"); y = (x[:, 0] > 0).astype("int32")
  >>> model = fnnet.serial(fnnet.Dense(16), fnnet.Relu, fnnet.Dense(2))
  >>> _, params = model.init(jax.random.PRNGKey(0), (5,))
  >>> report = fnnet.doctor(model, fnnet.losses.softmax_cross_entropy, params, (x, y))
  >>> names = [check.name for check in report.checks]
  >>> report.passed, names[0], names[1]
  (True, 'loss at initialisation', 'overfit one batch')
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnnet import gradcheck
from fnnet.layer import Layer, init_with_state, is_stateful, layer_children, layer_kind, layer_name
from fnnet.tape import child_backward, child_forward
from fnnet.losses import Loss, loss_kind, loss_name
from fnnet.health import FRACTION_HIGH
from fnnet.host import on_device
from fnnet.tracing import check_labels, trace
from fnnet.train.state import init_state
from fnnet.train.steps import make_train_step


@dataclasses.dataclass
class Check:
    """One line of the checklist: ``passed`` is ``True`` (✓), ``False`` (✗) or ``None`` (does not
    apply here: ``–``)."""

    name: str
    passed: bool | None
    detail: str

    def __str__(self) -> str:
        mark = {True: "✓", False: "✗", None: "–"}[self.passed]
        return f"{mark} {self.name}: {self.detail}"


@dataclasses.dataclass
class Diagnosis:
    """What :func:`doctor` found: ``print(diagnosis)`` is the checklist."""

    subject: str
    checks: list

    @property
    def passed(self) -> bool:
        """No check failed (checks that do not apply count as passed)."""
        return all(check.passed is not False for check in self.checks)

    def __str__(self) -> str:
        failed = sum(check.passed is False for check in self.checks)
        return "\n".join([f"doctor: {self.subject}"] + [str(check) for check in self.checks]
                         + [f"{len(self.checks) - failed} of {len(self.checks)} checks passed"
                            if failed else "every check passed"])


def expected_initial_loss(loss: Loss, pred_shape) -> tuple[float, str] | None:
    """``(value, formula)`` of the loss a network that knows nothing yet should start near:
    ``log K`` for ``K`` classes (softmax cross-entropy), ``log 2`` for a binary output;
    ``None`` for a regression loss."""
    kind = loss_kind(loss)
    if kind == "multiclass_logits":
        classes = int(pred_shape[-1])
        return math.log(classes), f"log {classes}"
    if kind in ("logits", "probabilities"):
        return math.log(2), "log 2"
    return None


def _rows(data, count):
    x, y = data
    return np.asarray(x[:count]), np.asarray(y[:count])


OVERFIT_LRS = (1e-3, 1e-2, 1e-1)
"""The Adam learning rates :func:`doctor` tries, in turn, to overfit one batch (the first that
succeeds ends the check): one learning rate cannot suit every model."""
OVERFIT_REDUCTION = 0.01
"""A regression loss must fall to this fraction of its first value to count as memorised."""


def doctor(model: Layer, loss: Loss, params, data, *, key=None, model_state=None, batch_size: int = 16,
           overfit_steps: int = 300, overfit_lr: float | None = None, init_params=None) -> Diagnosis:
    """Runs the checklist on ``model`` at ``params`` with ``data = (x, y)`` (a few hundred
    examples are enough; the first ones are used).

    Args:
      key: PRNG key for the fresh initialisation the init checks use (default ``PRNGKey(0)``).
      model_state: the model's state (BatchNorm's running statistics) at ``params``.
      batch_size: examples in the batch to overfit and in the independence check.
      overfit_steps, overfit_lr: the Adam steps allowed to overfit the batch, at each learning
        rate of :data:`OVERFIT_LRS` (or at ``overfit_lr`` alone when given).
      init_params: parameters at initialisation (default: ``model.init(key, ...)``).
    """
    key = jax.random.PRNGKey(0) if key is None else key
    x, y = _rows(data, max(256, batch_size))
    in_shape = x.shape[1:]
    _, fresh, fresh_state = init_with_state(model, key, in_shape)
    if init_params is not None:
        fresh = init_params
    model_state = fresh_state if model_state is None or model_state == () else model_state
    check_labels(model, loss, params, x, y, "doctor", state=model_state)
    gradient = _gradcheck(model, loss, params, model_state, x[:4], y[:4])
    if gradient.passed is False:
        skipped = "not run: the hand-written backward disagrees with jax.grad (see the gradcheck line), so "
        overfit = Check("overfit one batch", None, skipped + "training with it would only repeat that")
        independent = Check("examples independent", None, skipped + "its input gradients cannot be trusted")
    else:
        lrs = OVERFIT_LRS if overfit_lr is None else (overfit_lr,)
        overfit = _overfit(model, loss, params, model_state, x[:batch_size], y[:batch_size], key, overfit_steps, lrs)
        independent = _independence(model, params, model_state, x[:batch_size], key)
    checks = [_initial_loss(model, loss, fresh, fresh_state, x, y), overfit, independent, gradient,
              _units_at_init(model, loss, fresh, fresh_state, x[:64], y[:64], gradient.passed is False)]
    return Diagnosis(f"{model.name or 'model'} + {loss_name(loss)} on {len(x)} examples of shape {in_shape}",
                     checks)


def _initial_loss(model, loss, params, state, x, y) -> Check:
    @jax.jit
    def evaluate(params, state, x, y):
        pred = child_forward(None, model, params, state, x)[0]
        return pred, loss.value(pred, y)

    pred, value = evaluate(params, state, on_device(x), on_device(y))
    value = float(value)
    expected = expected_initial_loss(loss, pred.shape)
    fresh = "at a fresh initialisation"
    if expected is None:
        baseline = float(np.mean(np.square(np.asarray(y, np.float64) - np.mean(np.asarray(y, np.float64), axis=0))))
        return Check("loss at initialisation", None if math.isfinite(value) else False,
                     f"{value:.4g} {fresh} ({loss_name(loss)}; a regression loss has no expected start; "
                     f"predicting the mean would give {baseline:.4g})")
    target, formula = expected
    ok = math.isfinite(value) and 0.5 * target <= value <= 1.5 * target
    hint = "" if ok else (": the initial outputs are over-confident; scale the last layer's initialisation down"
                          if value > target else ": suspiciously low for a network that has learnt nothing"
                          if math.isfinite(value) else ": not finite")
    return Check("loss at initialisation", ok, f"{value:.4g} {fresh} vs {formula} = {target:.4g} expected "
                                               f"(within ±50%){hint}")


OVERFIT_CHUNK = 25
"""Steps run between looks at the loss: the check stops as soon as the batch is memorised."""


def _overfit(model, loss, params, state, x, y, key, steps, lrs) -> Check:
    """Adam on one batch, at each learning rate in turn until one memorises it (see the module).
    The loss and accuracy are the training step's own, measured before each update."""
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=lrs[0])
    start = init_state(model, optimizer, key, x.shape[1:], params=params, model_state=state)
    step = make_train_step(model, loss, optimizer)
    xb, yb = on_device(x), on_device(y)
    regression = loss_kind(loss) == "regression"

    @jax.jit
    def run(state):
        state, metrics = jax.lax.scan(lambda s, _: step(s, xb, yb), state, None, length=OVERFIT_CHUNK)
        return state, metrics["loss"], metrics.get("accuracy", jnp.full_like(metrics["loss"], jnp.nan))

    def with_lr(state, lr):
        return state._replace(opt_state=state.opt_state._replace(
            hyperparams=dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))))

    # a classifier gets every prediction right, but a sequence model's first token of each window,
    # which has one character of context (two windows that start alike may go on differently)
    needed = 1.0 if np.ndim(y) < 2 or loss_kind(loss) != "multiclass_logits" or not \
        jnp.issubdtype(jnp.result_type(y), jnp.integer) else 1.0 - 1.0 / np.shape(y)[1]
    what = "≤ 1% of where it started" if regression else \
        f"{needed:.1%} classified right with the loss halved"
    tried = []
    for lr in lrs:
        current, losses, accuracy = with_lr(start, lr), [], []
        for _ in range(-(-steps // OVERFIT_CHUNK)):
            current, chunk_losses, chunk_accuracy = run(current)
            losses += np.asarray(chunk_losses, np.float64).tolist()
            accuracy += np.asarray(chunk_accuracy, np.float64).tolist()
            first = losses[0]
            done = [i for i, (value, right) in enumerate(zip(losses, accuracy)) if math.isfinite(value) and (
                value <= OVERFIT_REDUCTION * first if regression else
                right >= needed - 1e-6 and value <= 0.5 * first)]
            if done and math.isfinite(first):
                at = done[0]
                detail = f"loss {first:.3g} → {losses[at]:.3g}" + ("" if regression else
                                                                    f", {accuracy[at]:.0%} classified right")
                return Check("overfit one batch", True, f"{len(x)} examples: {detail} after {at} Adam steps "
                                                        f"(lr {lr:g})")
            if not all(math.isfinite(value) for value in chunk_losses.tolist()):
                break
        finite = [right for right in accuracy if math.isfinite(right)]
        tried.append(f"lr {lr:g}: loss {losses[0]:.3g} → {losses[-1]:.3g}"
                     + (f", at best {max(finite):.1%} right" if finite and not regression else ""))
    return Check("overfit one batch", False, f"{len(x)} examples, {steps} Adam steps at each learning rate, never "
                                             f"{what}: {'; '.join(tried)}: a model that cannot memorise {len(x)} "
                                             f"examples has a bug (a wrong backward, a frozen layer, mislabelled "
                                             f"targets) or too little capacity")


def _mixing_layers(model) -> list[str]:
    names = []
    for child in layer_children(model) or ():
        names += _mixing_layers(child)
    if not layer_children(model) and layer_kind(model) == "BatchNorm":
        names.append(layer_name(model))
    return names


def _independence(model, params, state, x, key) -> Check:
    name = "examples independent"
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact):
        return Check(name, None, "integer inputs (token ids) carry no input gradient to compare")
    if len(x) < 2:
        return Check(name, None, "needs at least 2 examples")
    @jax.jit
    def input_gradient(params, state, x):
        pred, residuals, _ = child_forward(None, model, params, state, x, key=key, train=False)
        cotangent = jnp.zeros_like(pred).at[0].set(jnp.ones_like(pred[0]))  # example 0's outputs only
        return child_backward(None, model, params, residuals, cotangent)[1]

    dx = np.asarray(input_gradient(params, state, on_device(x)), np.float64)
    if not np.isfinite(dx).all():
        return Check(name, None, f"the input gradient has {int((~np.isfinite(dx)).sum())} NaN or inf entries: "
                                 f"nothing to compare (fnnet.debug_nans names the layer that made them)")
    own, others = float(np.abs(dx[0]).max()), float(np.abs(dx[1:]).max())
    mixing = _mixing_layers(model)
    note = (f"; in training mode {', '.join(dict.fromkeys(mixing))} normalises with the batch's statistics, "
            f"so there the examples legitimately mix") if mixing else ""
    if own == 0.0:
        return Check(name, None, f"example 0's input gradient is exactly 0 (nothing to compare){note}")
    ok = others <= 1e-6 * own
    detail = (f"∂(example 0's outputs)/∂(other examples' inputs) = {others:.2e} (max), vs {own:.2e} for its own "
              f"input (evaluation mode, hand-written backward)")
    if not ok:
        detail += ": some layer mixes the examples of a batch (a reshape or sum across the batch axis?)"
    return Check(name, ok, detail + note)


def _gradcheck(model, loss, params, state, x, y) -> Check:
    report = gradcheck.check_model(model, loss, params, x, y, raise_on_failure=False,
                                   state=state if is_stateful(model) else None)
    culprit = f"; first failing layer: {report.culprit}" if report.culprit else ""
    if report.failure is not None:
        return Check("gradcheck at these parameters", False, f"hand-written vs jax.grad on {len(x)} examples, "
                                                             f"float64: {report.failure}")
    return Check("gradcheck at these parameters", report.passed,
                 f"hand-written vs jax.grad on {len(x)} examples, float64: worst relative error "
                 f"{report.worst_rel_error:.1e}{culprit}")


def _units_at_init(model, loss, params, state, x, y, backward_broken: bool = False) -> Check:
    try:
        seen = trace(model, loss, params, x, y, state=state, train=False, check=False)
    except ValueError as error:
        if not backward_broken:
            raise
        return Check("dead or saturated units at init", None, f"not run: the backward fails ({error})")
    problems, looked = [], 0
    for layer in seen.layers:
        for stat, what in (("dead", "dead units"), ("saturated", "saturated outputs")):
            value = layer.stats.get(stat)
            if value is None:
                continue
            looked += 1
            if value >= FRACTION_HIGH:
                problems.append(f"{layer.label}: {value:.0%} {what}")
    if not looked:
        return Check("dead or saturated units at init", None, "no ReLU, sigmoid or tanh layer")
    if problems:
        return Check("dead or saturated units at init", False, "; ".join(problems)
                     + " (check the initialisation, the biases and the input scaling)")
    worst = max((layer.stats.get("dead", layer.stats.get("saturated")) or 0.0) for layer in seen.layers)
    return Check("dead or saturated units at init", True, f"at most {worst:.0%} of the units of any layer on "
                                                          f"{len(x)} examples")
