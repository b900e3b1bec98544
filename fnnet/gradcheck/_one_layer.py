"""One layer against its own ``apply``, at its own input: the check that :func:`fnnet.trace`,
:func:`fnnet.gradcheck.check_layer` and :func:`fnnet.gradcheck.first_failing_layer` share.

For a layer with params ``θ``, input ``x`` and an incoming gradient ``dy`` (and, for a layer with
state or randomness, the state, key and mode it ran with), three things must hold, in float64:

1. ``forward(θ, x)[0] == apply(θ, x)`` (and the new states of ``stateful_forward`` and
   ``stateful_apply`` agree);
2. ``backward(θ, residuals, dy) == jax.vjp(apply, θ, x)[1](dy)``, leaf by leaf (``float0`` leaves,
   the cotangent of integer inputs such as token ids, are skipped);
3. no value is NaN or inf where the reference is finite, nor the reverse (:func:`errors`).

:func:`outputs` computes both sides (traceable: put many layers in one ``jax.jit``);
:func:`compare` measures them on the host and says what failed first, in words.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from fnnet.gradcheck._numerics import describe_counts, errors, nonfinite_counts, worst
from fnnet.layer import Layer, apply_with_state, forward_with_state, is_stateful

RTOL = 1e-6
"""Largest relative difference (float64, at the checked point) that counts as agreement."""


def bind(layer: Layer, state, key, train: bool):
    """``(apply(θ, x) -> y, forward(θ, x) -> (y, residuals), new_states(θ, x) -> (forward's, apply's))``
    of ``layer`` at ``state``, ``key`` and ``train`` (``new_states`` is ``None`` for a plain layer)."""
    if not is_stateful(layer):
        return layer.apply, layer.forward, None

    def apply(params, x):
        return apply_with_state(layer, params, state, x, key=key, train=train)[0]

    def forward(params, x):
        return forward_with_state(layer, params, state, x, key=key, train=train)[:2]

    def new_states(params, x):
        return (forward_with_state(layer, params, state, x, key=key, train=train)[2],
                apply_with_state(layer, params, state, x, key=key, train=train)[1])

    return apply, forward, new_states


def outputs(layer: Layer, params, x, dy, *, state=(), key=None, train: bool = False) -> dict:
    """Both sides of the check (arrays, traceable): ``y`` / ``y_apply``, ``state`` / ``state_apply``
    (``None`` for a plain layer), ``manual`` (the hand-written ``(dparams, dx)``) and ``reference``
    (``jax.vjp``'s). A ``dy`` of ``None`` checks the forward alone."""
    apply, forward, new_states = bind(layer, state, key, train)
    y, residuals = forward(params, x)
    out = {"y": y, "y_apply": apply(params, x), "state": None, "state_apply": None, "manual": None,
           "reference": None}
    if new_states is not None:
        out["state"], out["state_apply"] = new_states(params, x)
    if dy is not None:
        out["manual"] = layer.backward(params, residuals, dy)
        out["reference"] = jax.vjp(apply, params, x)[1](dy)
    return out


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    """How far one layer's functions are from its ``apply`` at one point (float64)."""

    forward_error: float
    """Largest relative difference of ``forward``'s output (and new state) from ``apply``'s."""
    vjp_error: float
    """Largest relative difference of the hand-written ``(dparams, dx)`` from ``jax.vjp``'s
    (``nan``: not checked, no backward ran)."""
    problem: str | None
    """What failed first, in words (``None``: nothing failed), e.g. ``"dx disagrees with jax.vjp
    at the layer's own input (max rel error 1.0e+00)"``, ``"dx has 4 nan where jax.vjp's is finite"``."""

    @property
    def passed(self) -> bool:
        return self.problem is None


def _inexact(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _nonfinite_mismatch(got, want) -> str | None:
    """``"4 nan where jax.vjp's is finite"`` when ``got`` is non-finite where ``want`` is finite
    (or the reverse); ``None`` otherwise."""
    got_counts, want_counts = nonfinite_counts(got), nonfinite_counts(want)
    if got_counts != (0, 0) and want_counts == (0, 0):
        return f"has {describe_counts(*got_counts)} where the reference is finite"
    if got_counts == (0, 0) and want_counts != (0, 0):
        return f"is finite where the reference has {describe_counts(*want_counts)}"
    return None


def _leaf_name(path) -> str:
    """``"dx"``, ``"dx[1]"``, ``"dw"``, ``"d['w']"`` for a path into ``(dparams, dx)``."""
    head, rest = path[0].idx, path[1:]
    if head == 1:
        return "dx" + jax.tree_util.keystr(tuple(rest))
    if len(rest) == 1 and isinstance(rest[0], jax.tree_util.DictKey):
        return f"d{rest[0].key}"
    return "dparams" + jax.tree_util.keystr(tuple(rest))


def compare(values: dict, rtol: float = RTOL) -> LayerCheck:
    """Measures :func:`outputs`' two sides (host side) and names what failed first: the
    forward's output, its new state, then each gradient leaf in ``(dparams, dx)`` order."""
    problem = None
    y, y_apply = values["y"], values["y_apply"]
    if jax.tree.structure(y) != jax.tree.structure(y_apply) or \
            jax.tree.map(jnp.shape, y) != jax.tree.map(jnp.shape, y_apply):
        return LayerCheck(math.inf, math.nan, f"forward's output {jax.tree.map(jnp.shape, y)} differs in shape "
                                              f"from apply's {jax.tree.map(jnp.shape, y_apply)}")
    y_errors = [errors(a, b)[1] for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(y_apply))]
    forward_error = worst(y_errors)
    if forward_error > rtol:
        problem = f"forward's output differs from apply's (max rel error {forward_error:.1e})"
        mismatch = next((m for m in (_nonfinite_mismatch(a, b) for a, b in
                                     zip(jax.tree.leaves(y), jax.tree.leaves(y_apply))) if m), None)
        if mismatch:
            problem = "forward's output " + mismatch.replace("the reference", "apply's output")
    if values["state"] is not None:
        if jax.tree.structure(values["state"]) != jax.tree.structure(values["state_apply"]):
            state_error = math.inf
        else:
            state_error = worst(errors(a, b)[1] for a, b in zip(jax.tree.leaves(values["state"]),
                                                                jax.tree.leaves(values["state_apply"])))
        if state_error > rtol and problem is None:
            problem = f"forward's new state differs from apply's (max rel error {state_error:.1e})"
        forward_error = worst([forward_error, state_error])
    if values["manual"] is None:
        return LayerCheck(forward_error, math.nan, problem)
    manual, reference = values["manual"], values["reference"]
    if jax.tree.structure(manual) != jax.tree.structure(reference):
        return LayerCheck(forward_error, math.inf, problem or
                          f"backward returns a tree {jax.tree.structure(manual)}, expected "
                          f"{jax.tree.structure(reference)}")
    vjp_errors = []
    for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(reference)[0], jax.tree.leaves(manual)):
        if not _inexact(want):
            continue  # the cotangent of an integer input (token ids): float0, nothing to compare
        what = _leaf_name(path)
        if jnp.shape(got) != jnp.shape(want):
            vjp_errors.append(math.inf)
            problem = problem or f"backward's {what} has shape {jnp.shape(got)}, expected {jnp.shape(want)}"
            continue
        error = errors(got, want)[1]
        vjp_errors.append(error)
        if not error <= rtol and problem is None:
            mismatch = _nonfinite_mismatch(got, want)
            problem = (f"{what} " + mismatch.replace("the reference", "jax.vjp's") if mismatch else
                       f"{what} disagrees with jax.vjp at the layer's own input (max rel error {error:.1e})")
    return LayerCheck(forward_error, worst(vjp_errors), problem)
