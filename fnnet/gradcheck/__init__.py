"""Gradient checking: hand-written backward passes against ``jax.vjp`` and finite differences.

Each check runs in float64 (it enables x64 for its own duration and casts the
inputs), compares every gradient leaf with

1. autodiff (``jax.vjp`` of ``apply``, or ``jax.grad`` of the loss), and
2. central finite differences, the tutorials' ``prime``:
   ``(f(θ + ε v) - f(θ - ε v)) / 2ε ≈ <∇f, v>`` along random directions ``v``,

and returns a :class:`Report` with, for each parameter path, the largest
absolute and relative error and whether it passed. On a failure it raises
:class:`GradientMismatch` naming the layer and the parameter.

Finite differences are only meaningful where the function is smooth. When a central
difference disagrees with the hand-written gradient along a direction, it is compared
with the exact directional derivative of the reference (``jax.jvp`` of ``apply``): if it
disagrees with that too, the step crossed a kink (a ReLU pre-activation changing sign),
so it is retried with a ten times smaller step, and if the kink is still inside, the
direction is skipped and counted (the ``fd skipped`` column) and another is drawn. A
wrong gradient along a direction where finite differences are sound has no such excuse,
so it still fails.

:func:`check_model` also localises a failure: it checks every layer of a
:func:`fnnet.serial` model on its own input (``forward`` against ``apply``, then
``backward`` against ``jax.vjp``, parameter-free layers included) and names the first
layer that disagrees, since a wrong ``dx`` shows up in the parameter gradients of
the layers *before* it.

Example:
  >>> import jax, jax.numpy as jnp, fnnet
  >>> layer = fnnet.Dense(3)
  >>> _, params = layer.init(jax.random.PRNGKey(0), (2,))
  >>> report = fnnet.gradcheck.check_layer(layer, params, jnp.ones((4, 2)))
  >>> report.passed
  True
"""

from fnnet.gradcheck._checks import (AUTODIFF_RTOL, FD_RTOL, SCALE_FLOOR, check_layer, check_loss, check_model,
                                     first_failing_layer)
from fnnet.gradcheck._finite_differences import FD_EPS, FD_STEPS
from fnnet.gradcheck._report import GradientMismatch, Report, Row, format_table
from fnnet.gradcheck.cases import builtin_cases, run_builtin

__all__ = ["AUTODIFF_RTOL", "FD_EPS", "FD_RTOL", "FD_STEPS", "SCALE_FLOOR", "GradientMismatch", "Report", "Row",
           "builtin_cases", "check_layer", "check_loss", "check_model", "first_failing_layer", "format_table",
           "run_builtin"]
