"""Evaluation and prediction in batches: mean loss, accuracy, outputs and probabilities."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fnnet.distributed import DataParallel
from fnnet.gradients import per_example_loss
from fnnet.host import on_device
from fnnet.layer import Layer, apply_with_state
from fnnet.losses import Loss, check_targets, loss_kind
from fnnet.train import inputs
from fnnet.train.epochs import batch_plan, gather
from fnnet.train.tasks import correct, resolve_task
from fnnet import xla_options


@functools.lru_cache(maxsize=64)
def _evaluator(model: Layer, loss: Loss, batch_size: int, n: int, task: str | None, mesh=None):
    placement = None
    if mesh is not None:
        placement = DataParallel(mesh, batch_size)

    def run(params, model_state, x, y):
        order, weights = batch_plan(None, 0, n, batch_size, shuffle=False)

        def body(totals, plan):
            indices, w = plan
            xb, yb = gather(x, indices), gather(y, indices)
            if placement is not None:
                xb, yb, w = placement.constrain_batch(xb), placement.constrain_batch(yb), \
                    placement.constrain_batch(w)
            pred = apply_with_state(model, params, model_state, xb, train=False)[0]
            loss_sum = jnp.sum(per_example_loss(loss, pred, yb) * w)
            hits = correct(loss, task, pred, yb)
            correct_sum = jnp.sum(hits * w) if hits is not None else jnp.zeros(())
            return (totals[0] + loss_sum, totals[1] + correct_sum), None

        zero = jnp.zeros((), jnp.result_type(float))
        (loss_sum, correct_sum), _ = jax.lax.scan(body, (zero, zero), (order, weights))
        return loss_sum / n, correct_sum  # the count of correct examples: exact, divided on the host

    return xla_options.jit(run, model)


def evaluate(model: Layer, loss: Loss, params, data, *, batch_size: int = 1024,
             task: str | None = None, mesh=None, model_state=()) -> dict:
    """Mean loss and accuracy of ``params`` on ``data = (x, y)``, computed in batches.

    The arguments come in the order of :func:`fnnet.train.fit`, :func:`fnnet.trace`,
    :func:`fnnet.doctor` and :func:`fnnet.gradcheck.check_model`: model, loss, params, data. (It
    used to be ``evaluate(model, params, loss, data)``: a call in that order raises a ``TypeError``
    that says so.)

    Accuracy: multi-class takes the argmax; binary thresholds the sigmoid output at
    0.5 (logits at 0); regression has none (``accuracy`` is ``None``). With a
    ``mesh``, each batch is split over its devices (the batch size is rounded up
    to a multiple of the device count; padding is masked out).

    The data is checked first (see :mod:`fnnet.train.inputs`): NaN or inf, labels
    outside the model's classes and non-probabilities for a probability loss raise a
    ``ValueError`` instead of a silently wrong number. The model runs in evaluation mode
    with ``model_state`` (``TrainState.model_state``: BatchNorm's running statistics).

    Example::

        result = fnnet.train.evaluate(model, fnnet.losses.softmax_cross_entropy, state.params, (x_test, y_test))
        result["loss"], result["accuracy"]

    Raises:
      TypeError: ``loss`` is not a :class:`fnnet.Loss` (the old order, params before the loss).
      ValueError: bad data (see above).
    """
    if isinstance(params, Loss) or not isinstance(loss, Loss):
        raise TypeError(f"evaluate(model, loss, params, data): the loss comes before the params, as in fit, "
                        f"trace and doctor; got {type(loss).__name__} where the loss goes"
                        + (" and a Loss where the params go" if isinstance(params, Loss) else ""))
    x, y = inputs.as_arrays(data, "evaluate")
    validate(model, loss, params, x, y, "evaluate", model_state)
    return evaluate_arrays(model, params, loss, x, y, batch_size=batch_size, task=task, mesh=mesh,
                           model_state=model_state)


def evaluate_arrays(model: Layer, params, loss: Loss, x, y, *, batch_size: int = 1024,
                    task: str | None = None, mesh=None, model_state=()) -> dict:
    """:func:`evaluate` on device arrays already checked (``fit`` checks its data once)."""
    task = resolve_task(loss, task)
    batch_size = max(1, min(batch_size, x.shape[0]))
    if mesh is not None:
        devices = mesh.shape[mesh.axis_names[0]]
        batch_size = -(-batch_size // devices) * devices
        placement = DataParallel(mesh, batch_size)
        x, y = placement.put_data(x), placement.put_data(y)
        params, model_state = placement.put_state((params, model_state))
    mean_loss, correct = _evaluator(model, loss, batch_size, x.shape[0], task, mesh)(params, model_state, x, y)
    return {"loss": float(mean_loss), "accuracy": float(correct) / x.shape[0] if task else None}


def evaluation_program(model: Layer, loss: Loss, x, *, batch_size: int = 1024, task: str | None = None):
    """The jitted ``(params, model_state, x, y) -> (mean loss, correct count)`` that
    :func:`evaluate_arrays` runs on one device for data like ``x`` (the same cached function, so
    compiling it ahead, as ``fit`` does, is compiling what the evaluation will run)."""
    batch_size = max(1, min(batch_size, x.shape[0]))
    return _evaluator(model, loss, batch_size, x.shape[0], resolve_task(loss, task), None)


def validate(model: Layer, loss: Loss, params, x, y, where: str, model_state=()) -> None:
    """The host-side checks of :mod:`fnnet.train.inputs` for ``params`` on ``(x, y)``."""
    validate_targets(model, loss, params, x, y, where, model_state)
    inputs.check_outputs(loss, model, params, x, where, model_state=model_state)


def validate_targets(model: Layer, loss: Loss, params, x, y, where: str, model_state=()) -> None:
    """The checks of :func:`validate` that need only the shapes of ``params`` (``jax.eval_shape``'s
    will do, so ``fit`` runs them before anything compiles): that the model takes ``x`` and that
    the targets ``y`` fit its outputs (labels within its classes, the shape the loss takes, named
    as the user's whole ``y``, not one batch of it...). Errors start with ``where``."""
    try:
        out = jax.eval_shape(lambda p, s, x: apply_with_state(model, p, s, x)[0], params, model_state,
                             jax.ShapeDtypeStruct(x.shape, x.dtype))
    except ValueError as error:  # the layer that cannot take these inputs, named by the model
        raise ValueError(f"{where}: {error}") from error
    check_targets(loss, y, out.shape[1:], where)
    try:  # the loss's own shape checks, on all of the data: in the compiled step they would name one batch's shapes
        jax.eval_shape(loss.value, out, jax.ShapeDtypeStruct(y.shape, y.dtype))
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


@functools.lru_cache(maxsize=64)
def _predictor(model: Layer):
    """The jitted evaluation-mode apply :func:`predict` runs: one per model, so predicting in a loop
    compiles once per batch shape, not at every call."""
    return xla_options.jit(lambda p, s, x: apply_with_state(model, p, s, x, train=False)[0], model)


_softmax = jax.jit(functools.partial(jax.nn.softmax, axis=-1))  # one program, not one per operation
_sigmoid = jax.jit(jax.nn.sigmoid)


def predict(model: Layer, params, x, *, batch_size: int = 4096, model_state=()):
    """``model.apply`` over ``x`` in batches (the raw outputs: logits for fused losses), in
    evaluation mode with ``model_state``."""
    x = on_device(x, copy=False)
    apply = _predictor(model)
    return jnp.concatenate([apply(params, model_state, x[i:i + batch_size])
                            for i in range(0, x.shape[0], batch_size)]) if x.shape[0] else \
        apply(params, model_state, x)


def predict_proba(model: Layer, params, x, loss: Loss, *, batch_size: int = 4096, model_state=()):
    """Probabilities, by ``loss.kind``: softmax of multi-class logits, sigmoid of binary logits;
    a ``"probabilities"`` or ``"regression"`` loss's outputs are returned as they are."""
    out = predict(model, params, x, batch_size=batch_size, model_state=model_state)
    kind = loss_kind(loss)
    if kind == "multiclass_logits":
        return _softmax(out)
    if kind == "logits":
        return _sigmoid(out)
    return out
