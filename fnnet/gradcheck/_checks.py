"""The gradient checks themselves: :func:`check_layer`, :func:`check_model`, :func:`check_loss` and
:func:`first_failing_layer`, with their :class:`Report`. :mod:`fnnet.gradcheck` re-exports them
(its docstring says how they work); :mod:`fnnet.gradcheck.cases` runs them on every built-in layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.gradcheck import _one_layer
from fnnet.gradcheck._finite_differences import fd_error as _fd_error, random_like as _random_like
from fnnet.gradcheck._report import GradientMismatch, Report, Row
from fnnet.gradcheck._numerics import errors as _errors, largest_finite, to_float64 as _to_float64
from fnnet.gradients import loss_and_grads
from fnnet.layer import (Layer, apply_with_state, check_backward_result, init_with_state, is_stateful,
                         layer_children, layer_label, layer_name, locate, path_text)
from fnnet.losses import Loss, check_targets, loss_name
from fnnet.tape import child_forward, recording

AUTODIFF_RTOL = 1e-9
FD_RTOL = 1e-6


_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(fn):
    """``jax.jit`` with XLA's quick-compile options: a check runs each function a few times on
    small inputs, so compiling dominates (this halves ``fnnet gradcheck``); the results are the
    same float64 arithmetic."""
    return jax.jit(fn, compiler_options=_QUICK_COMPILE)


SCALE_FLOOR = 1e-3
"""A leaf's errors are relative to at least this fraction of the largest gradient entry in the
report, so a gradient that is exactly zero (a bias before BatchNorm) is not judged by its
float64 round-off alone."""


def _layer_state(layer: Layer, x, state, rng):
    """``(state, key)`` for checking ``layer`` alone: for a layer with state or randomness the given
    ones, or ``init_with_state``'s state for ``x``'s examples and ``PRNGKey(1)``; ``((), None)``
    for a plain layer."""
    if not is_stateful(layer):
        return (), None
    if state is None:
        in_shape = jax.tree.map(lambda a: a.shape[1:], x, is_leaf=lambda a: hasattr(a, "shape"))
        state = init_with_state(layer, jax.random.PRNGKey(0), in_shape)[2]
    return _to_float64(state), (jax.random.PRNGKey(1) if rng is None else rng)


def _state_row(subject: str, forward_state, apply_state, rtol: float) -> Row:
    """Row ``"state (forward vs apply)"``: the new state of ``stateful_forward`` against
    ``stateful_apply``'s (same tree, every leaf equal): a combinator that swaps two branches'
    states, or a layer that updates its statistics on one path only, fails here."""
    same_tree = jax.tree.structure(forward_state) == jax.tree.structure(apply_state)
    errors = [_errors(a, b) for a, b in zip(jax.tree.leaves(forward_state), jax.tree.leaves(apply_state))] \
        if same_tree else [(float("inf"), float("inf"))]
    worst_abs, worst_rel = max(errors, default=(0.0, 0.0), key=lambda e: e[1])
    return Row(subject, "state (forward vs apply)", worst_abs, worst_rel, float("nan"), worst_rel <= rtol)


def _describe(model, path) -> tuple[str, str]:
    """(layer label, parameter name) for a key path into ``model``'s params: ``("layer 2/0
    (Dense(2))", "w")``; the model's own name when the path enters no combinator."""
    chain, rest = locate(model, path)
    param = jax.tree_util.keystr(tuple(rest)) or "(all)"
    label = layer_label([index for index, _ in chain], chain[-1][1]) if chain else layer_name(model)
    return label, param.strip("[]'\"") if len(rest) == 1 else param


def _structure_problem(manual, reference) -> str | None:
    """Why ``manual`` cannot be compared with ``reference`` leaf by leaf (``None``: it can)."""
    if jax.tree.structure(manual) != jax.tree.structure(reference):
        return (f"gradient tree structure {jax.tree.structure(manual)} does not match the params' "
                f"{jax.tree.structure(reference)}")
    for m, r in zip(jax.tree.leaves(manual), jax.tree.leaves(reference)):
        if jnp.shape(m) != jnp.shape(r):
            return f"a gradient leaf has shape {jnp.shape(m)}, expected {jnp.shape(r)}"
    return None


def _failed(subject: str, reason: str, raise_on_failure: bool, culprit=None, culprit_path=None) -> Report:
    """A report that could not compare gradients (its ``failure`` says why); raised as
    :class:`GradientMismatch` when ``raise_on_failure``."""
    report = Report(subject, (), culprit, culprit_path, failure=reason)
    if raise_on_failure:
        raise GradientMismatch(f"{subject}: {reason}", report)
    return report


def _inexact(leaf) -> bool:
    """False for the ``float0`` cotangent of an integer input (token ids)."""
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _compare(subject, describe, manual, reference, scalar_fn, point, key, directions, rtol, fd_rtol,
             raise_on_failure, first_rows=()) -> Report:
    problem = _structure_problem(manual, reference)
    if problem is not None:
        return _failed(subject, problem, raise_on_failure)
    reference_fn = scalar_fn
    derivative = _jit(lambda p, t: jax.jvp(reference_fn, (p,), (t,))[1])  # the reference's exact slope
    scalar_fn = _jit(reference_fn)  # finite differences evaluate it many times
    rows = list(first_rows)
    paths = jax.tree_util.tree_flatten_with_path(reference)[0]
    manual_leaves = jax.tree.leaves(manual)
    largest = largest_finite(reference)
    largest_norm = largest_finite(manual_leaves, np.linalg.norm)
    for index, ((path, ref_leaf), man_leaf) in enumerate(zip(paths, manual_leaves)):
        if not _inexact(ref_leaf):
            continue  # an integer input (token ids): no cotangent to compare
        abs_error, rel_error = _errors(man_leaf, ref_leaf, SCALE_FLOOR * largest)
        fd_error, skipped = _fd_error(scalar_fn, derivative, point, index, man_leaf,
                                      jax.random.fold_in(key, index), directions, fd_rtol,
                                      10 * SCALE_FLOOR * largest_norm)
        layer, param = describe(path)
        fd_ok = np.isnan(fd_error) or fd_error <= fd_rtol  # nan: every direction crossed a kink
        rows.append(Row(layer, param, abs_error, rel_error, fd_error, rel_error <= rtol and fd_ok,
                        skipped))
    report = Report(subject, tuple(rows))
    if raise_on_failure and not report.passed:
        bad = next(row for row in rows if not row.passed)
        what = "forward's output differs from apply's" if bad.param == "y (forward vs apply)" else \
            f"hand-written gradient of {bad.layer}, parameter {bad.param!r} disagrees"
        raise GradientMismatch(
            f"{subject}: {what}: "
            f"max rel error vs autodiff {bad.max_rel_error:.3e} (tolerance {rtol:g}), "
            f"finite differences {bad.fd_rel_error:.3e} (tolerance {fd_rtol:g})\n{report}", report)
    return report


def check_layer(layer: Layer, params: Any, x, *, key=None, rtol: float = AUTODIFF_RTOL,
                fd_rtol: float = FD_RTOL, directions: int = 3, raise_on_failure: bool = True,
                state=None, rng=None, train: bool = True) -> Report:
    """Checks ``layer.forward`` against ``layer.apply``, and ``layer.backward`` against
    ``jax.vjp(layer.apply)`` and finite differences.

    The output of ``forward`` must equal ``apply``'s (row ``"y (forward vs apply)"``). A random
    cotangent ``dy`` is pulled back through both backward passes; the parameter gradients
    and ``dx`` (reported as param ``"x (input)"``) are compared leaf by leaf.

    For a layer with state or randomness (BatchNorm, Dropout) the check runs
    ``stateful_forward`` against ``stateful_apply`` at ``state`` (by default the one
    :func:`fnnet.init_with_state` makes), the PRNG key ``rng`` and the mode ``train``
    (default ``True``: BatchNorm's full backward through the batch statistics).

    Returns:
      a :class:`Report`. Raises :class:`GradientMismatch` on failure unless
      ``raise_on_failure=False``.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    subject = layer_name(layer)
    with jax.enable_x64(True):
        params, x = _to_float64(params), _to_float64(x)
        state, rng = _layer_state(layer, x, state, rng)
        apply, forward, _ = _one_layer.bind(layer, state, rng, train)
        shapes = [jax.eval_shape(apply, params, x), jax.eval_shape(lambda p, v: forward(p, v)[0], params, x)]
        if len({str(jax.tree.map(lambda a: a.shape, s)) for s in shapes}) > 1:
            return _failed(subject, f"forward returns {jax.tree.map(lambda a: a.shape, shapes[1])} but apply "
                                    f"returns {jax.tree.map(lambda a: a.shape, shapes[0])}", raise_on_failure)
        cotangent = _random_like(jax.random.fold_in(key, 1), shapes[0])

        @_jit  # one compilation for everything instead of one per operation
        def outputs(params, x, cotangent):
            values = _one_layer.outputs(layer, params, x, cotangent, state=state, key=rng, train=train)
            check_backward_result(layer, params, values["manual"], x)  # names a wrong pair before comparing
            return values

        try:
            values = outputs(params, x, cotangent)
        except ValueError as error:
            if not str(error).startswith(f"{subject}: backward"):
                raise
            return _failed(subject, str(error).removeprefix(f"{subject}: "), raise_on_failure)
        y_errors = [_errors(a, b) for a, b in zip(jax.tree.leaves(values["y"]), jax.tree.leaves(values["y_apply"]))]
        y_abs, y_rel = max(y_errors, default=(0.0, 0.0), key=lambda e: e[1])
        first_rows = [Row(subject, "y (forward vs apply)", y_abs, y_rel, float("nan"), y_rel <= rtol)]
        if values["state"] is not None:  # a stateful layer: both paths must leave the same state behind
            first_rows.append(_state_row(subject, values["state"], values["state_apply"], rtol))

        def scalar_fn(point):
            p, inputs = point
            return sum(jnp.vdot(c, out) for c, out in zip(jax.tree.leaves(cotangent),
                                                         jax.tree.leaves(apply(p, inputs))))

        def describe(path):
            if path[0].idx == 1:
                rest = jax.tree_util.keystr(tuple(path[1:]))
                return subject, "x (input)" + (f" {rest}" if rest else "")
            return _describe(layer, path[1:])

        return _compare(subject, describe, values["manual"], values["reference"], scalar_fn,
                        (params, x), key, directions, rtol, fd_rtol, raise_on_failure,
                        first_rows=tuple(first_rows))


def _label(model: Layer, path: tuple) -> str:
    """``"layer 2 (WrongSilu)"`` for child 2 of a serial model, ``"layer 3/1/0 (Dense(4))"``
    deeper down (:func:`fnnet.layer.layer_label`), the model's own name for ``()``."""
    layer = model
    for index in path:
        layer = layer_children(layer)[index]
    return layer_label(path, layer) if path else layer_name(model)


def _first_failure(model: Layer, params, x, *, key, rtol, state, rng, train) -> tuple[str, str, str] | None:
    """``(label, path, what failed)`` of the first layer, in forward order, whose own check fails
    (:mod:`fnnet.gradcheck._one_layer`: forward against apply, backward against ``jax.vjp`` along a
    random cotangent, at the input the model's forward gave it), every layer inside every
    combinator included; ``None`` when all pass. One compiled program checks them all."""
    static = {"problems": {}}

    def run(params, x, state, rng, key):
        with recording() as tape:
            child_forward(None, model, params, state, x, key=rng, train=train)
        calls = tape.leaves()
        static["calls"] = calls
        out = []
        for index, call in enumerate(calls):
            leaves, treedef = jax.tree.flatten(call.y)
            keys = jax.random.split(jax.random.fold_in(key, index), max(len(leaves), 1))
            cotangent = jax.tree.unflatten(treedef, [
                jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf)) if _inexact(leaf) else
                jnp.zeros_like(leaf) for k, leaf in zip(keys, leaves)])
            values = _one_layer.outputs(call.layer, call.params, call.x, cotangent, state=call.state, key=call.key,
                                        train=call.train)
            try:
                check_backward_result(call.layer, call.params, values["manual"], call.x)
            except ValueError as error:
                static["problems"][index] = str(error).removeprefix(f"{layer_name(call.layer)}: ")
                values = None
            out.append(values)
        return out

    with jax.enable_x64(True):
        params, x, state = _to_float64(params), _to_float64(x), _to_float64(state)
        results = jax.device_get(_jit(run)(params, x, state, rng, key))
    for index, (call, values) in enumerate(zip(static["calls"], results)):
        problem = static["problems"].get(index) or _one_layer.compare(values, rtol).problem
        if problem is not None:
            return _label(model, call.path), path_text(call.path), problem
    return None


def first_failing_layer(model: Layer, params, x, *, key=None, rtol: float = AUTODIFF_RTOL,
                        state=(), rng=None, train: bool = True) -> str | None:
    """Checks each layer of ``model`` on its own input, in forward order, every layer inside
    :func:`fnnet.serial`, :func:`fnnet.parallel`, :func:`fnnet.Residual` and the other
    combinators included (``forward`` against ``apply``, ``backward`` against ``jax.vjp`` along a
    random cotangent, in float64, NaN and inf counted as failures) and describes the first that
    disagrees, e.g. ``"layer 1 (Relu): dx disagrees with jax.vjp at the layer's own input (max rel
    error 1.0e+00)"`` or, deeper, ``"layer 3/1/0 (Dense(4)): dw disagrees …"``; ``None`` when every
    layer agrees."""
    key = jax.random.PRNGKey(0) if key is None else key
    found = _first_failure(model, params, x, key=key, rtol=rtol, state=state, rng=rng, train=train)
    return None if found is None else _culprit_text(*found)


def _culprit_text(label: str, path: str, problem: str) -> str:
    """``"layer 2 (WrongSilu): dx disagrees …"``: the layer's label already carries its path."""
    return f"{label}: {problem}"


def check_model(model: Layer, loss: Loss, params: Any, x, y, *, key=None,
                rtol: float = AUTODIFF_RTOL, fd_rtol: float = FD_RTOL, directions: int = 3,
                raise_on_failure: bool = True, state=None, rng=None, train: bool = True) -> Report:
    """Checks :func:`fnnet.value_and_grad` (hand-written) against ``jax.value_and_grad`` and
    finite differences of the loss, for every parameter of ``model``.

    On a failure the report's ``culprit`` and ``culprit_path`` (and the error message) name the
    first layer whose own ``forward`` or ``backward`` disagrees (see :func:`first_failing_layer`):
    a wrong ``dx`` in layer ``i`` makes the parameter gradients of layers ``< i`` wrong, so the
    failing rows alone would blame the wrong layer. A layer that computed a NaN or inf fails the
    check even when the model's gradients agree (a NaN backward at a ReLU's kink, hidden by the
    ReLU before it). With ``raise_on_failure=False`` every failure is returned as a report
    (``report.failure`` says why when no gradient could be compared), never raised.

    A model with state or randomness is checked at ``state`` (``init_with_state``'s by
    default), the PRNG key ``rng`` and the mode ``train``, as :func:`check_layer` does.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(1), fnnet.Sigmoid)
      >>> _, params = model.init(jax.random.PRNGKey(0), (2,))
      >>> x = jnp.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]]); y = jnp.array([[0.], [1.], [1.], [0.]])
      >>> print(fnnet.gradcheck.check_model(model, fnnet.losses.squared_error, params, x, y).passed)
      True

    Long (its docstring is a third of it): the checks run in the order the report prints them.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    subject = f"{layer_name(model)} + {loss_name(loss)}"
    with jax.enable_x64(True):
        params, x, y = _to_float64(params), _to_float64(x), _to_float64(y)
        if is_stateful(model):
            state = init_with_state(model, jax.random.PRNGKey(0), x.shape[1:])[2] if state is None else state
            rng = jax.random.PRNGKey(1) if rng is None else rng
        else:
            state, rng = (), None
        state = _to_float64(state)
        check_targets(loss, y, jax.eval_shape(lambda p, s, v: apply_with_state(model, p, s, v, key=rng)[0],
                                              params, state, x).shape[1:], "check_model")

        def culprit_of():
            found = _first_failure(model, params, x, key=key, rtol=rtol, state=state, rng=rng, train=train)
            return (None, None) if found is None else (_culprit_text(*found), found[1])

        def both(p, x, y, state, key):
            with recording() as tape:
                manual = loss_and_grads(model, loss, p, x, y, grad="manual", state=state, key=key, train=train)
            nonfinite = jnp.asarray(False)  # anything a layer computed: a NaN its neighbours hide still counts
            for call in tape.leaves():
                for leaf in jax.tree.leaves((call.y, call.dx, call.dparams)):
                    if _inexact(leaf):
                        nonfinite = nonfinite | ~jnp.all(jnp.isfinite(leaf))
            return (*manual, *loss_and_grads(model, loss, p, x, y, grad="autodiff", state=state, key=key,
                                             train=train), nonfinite)

        try:
            value, grads, _, new_state, ref_value, ref_grads, _, ref_state, nonfinite = _jit(both)(
                params, x, y, state, rng)
        except ValueError as error:
            if ": backward " not in str(error):
                raise
            culprit, path = culprit_of()  # a backward that returned the wrong tree, named by its layer
            return _failed(subject, f"{error}", raise_on_failure, culprit, path)
        state_rows = (_state_row(subject, new_state, ref_state, rtol),) if is_stateful(model) else ()
        _, value_rel = _errors(value, ref_value)
        if not value_rel <= rtol:
            culprit, path = culprit_of()
            return _failed(subject, f"forward loss {float(value)!r} differs from apply's {float(ref_value)!r}; "
                                    + (f"the first layer that differs is {culprit}" if culprit else
                                       "every layer's forward agrees with its apply on its own input"),
                           raise_on_failure, culprit, path)

        def scalar_fn(p):
            return loss.value(apply_with_state(model, p, state, x, key=rng, train=train)[0], y)

        report = _compare(subject, lambda path: _describe(model, path), grads, ref_grads, scalar_fn,
                          params, key, directions, rtol, fd_rtol, raise_on_failure=False, first_rows=state_rows)
        if report.passed and not bool(nonfinite):
            return report
        culprit, path = culprit_of()  # every layer on its own input, even when the model's gradients agree
        if report.passed and culprit is None:
            return report
        report = dataclasses.replace(report, culprit=culprit, culprit_path=path)
        if report.passed:  # a layer is wrong where this batch's gradients do not show it (a NaN masked by a ReLU)
            report = dataclasses.replace(report, failure=f"the model's gradients agree with jax.grad on this batch, "
                                                         f"but layer {culprit}")
        if raise_on_failure:
            bad = next((row for row in report.rows if not row.passed), None)
            if bad is None:
                raise GradientMismatch(f"{subject}: {report.failure}", report)
            blame = (f"the first layer whose backward disagrees is {culprit}; the parameter gradients "
                     f"of the layers before it are wrong as a consequence" if culprit else
                     f"every layer agrees with jax.vjp on its own input, so look at the loss's grad; "
                     f"first failing gradient: {bad.layer}, parameter {bad.param!r}")
            raise GradientMismatch(
                f"{subject}: {blame} (max rel error vs autodiff {bad.max_rel_error:.3e}, tolerance "
                f"{rtol:g}; finite differences {bad.fd_rel_error:.3e}, tolerance {fd_rtol:g})\n{report}",
                report)
        return report


def check_loss(loss: Loss, pred, target, *, key=None, rtol: float = AUTODIFF_RTOL,
               fd_rtol: float = FD_RTOL, directions: int = 3, raise_on_failure: bool = True) -> Report:
    """Checks ``loss.grad`` against ``jax.grad(loss.value)`` and finite differences in ``pred``."""
    key = jax.random.PRNGKey(0) if key is None else key
    subject = loss_name(loss)
    with jax.enable_x64(True):
        pred, target = _to_float64(pred), _to_float64(target)
        manual, reference = _jit(lambda p, t: (loss.grad(p, t), jax.grad(loss.value)(p, t)))(pred, target)
        return _compare(subject, lambda path: (subject, "pred"), manual, reference,
                        lambda p: loss.value(p, target), pred, key, directions, rtol, fd_rtol,
                        raise_on_failure)
