"""Write your own layer: its forward, its hand-written backward, checked, then trained.

A layer is ``fnnet.Layer(init, apply, forward, backward, name=...)``, four pure functions:

* ``init(key, in_shape) -> (out_shape, params)``, ``in_shape`` one example (no batch axis);
* ``apply(params, x) -> y`` in plain JAX, the reference that ``jax.vjp`` differentiates;
* ``forward(params, x) -> (y, residuals)``, the output and what the backward needs;
* ``backward(params, residuals, dy) -> (dparams, dx)``, the vector-Jacobian product you
  derive by hand; ``dparams`` has the params' tree structure (``()`` for no params).

Two layers are written here, each backward formula beside its forward:

* ``Silu``, the SiLU / Swish activation ``silu(z) = z·σ(z)``,
  ``silu'(z) = σ(z)(1 + z(1 − σ(z)))``;
* ``ScaleShift()``, a learnable per-feature ``y = x·γ + β`` with
  ``dγ = Σ dy·x``, ``dβ = Σ dy``, ``dx = dy·γ`` (sums over every leading batch axis).

Then :func:`fnnet.summary` shows them by name, :func:`fnnet.gradcheck.check_layer` compares each
backward with ``jax.vjp`` and finite differences in float64, :func:`~fnnet.gradcheck.check_model`
checks a whole model, a deliberately wrong backward is caught and named, and
:func:`fnnet.train.fit` trains a small MLP built from them on the 8x8 digits (a few seconds).

Run: ``python examples/custom_layer.py``
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

import fnnet
from fnnet import datasets, train


# --- SiLU: no params --------------------------------------------------------------------------

def _silu_init(key, in_shape):
    return tuple(in_shape), ()                     # same shape out, no params


def _silu_apply(params, z):
    return z * jax.nn.sigmoid(z)                   # plain JAX: the autodiff reference


def _silu_forward(params, z):
    s = jax.nn.sigmoid(z)
    return z * s, (z, s)                           # y, and the residuals backward needs


def _silu_backward(params, residuals, dy):
    z, s = residuals
    return (), dy * s * (1 + z * (1 - s))          # silu'(z) = σ(z)(1 + z(1 − σ(z)))


Silu = fnnet.Layer(_silu_init, _silu_apply, _silu_forward, _silu_backward, name="Silu")
"""``silu(z) = z·σ(z)``; backward ``dx = dy·σ(z)(1 + z(1 − σ(z)))``."""


# --- ScaleShift: learnable params ---------------------------------------------------------------

def ScaleShift() -> fnnet.Layer:
    """A learnable per-feature ``y = x·γ + β``, params ``{"gamma": (d,), "beta": (d,)}``.

    Backward, summed over every leading batch axis: ``dγ = Σ dy·x``, ``dβ = Σ dy``, ``dx = dy·γ``.
    """

    def init(key, in_shape):
        d = in_shape[-1]
        return tuple(in_shape), {"gamma": jnp.ones((d,)), "beta": jnp.zeros((d,))}

    def apply(params, x):
        # broadcast_to: explicit, so it also runs under jax_numpy_rank_promotion="raise"
        return x * jnp.broadcast_to(params["gamma"], x.shape) + jnp.broadcast_to(params["beta"], x.shape)

    def forward(params, x):
        return apply(params, x), x                 # backward needs x (for dγ)

    def backward(params, x, dy):
        batch_axes = tuple(range(dy.ndim - 1))
        dgamma = jnp.sum(dy * x, axis=batch_axes)  # dγ = Σ dy·x
        dbeta = jnp.sum(dy, axis=batch_axes)       # dβ = Σ dy
        dx = dy * jnp.broadcast_to(params["gamma"], dy.shape)  # dx = dy·γ
        return {"gamma": dgamma, "beta": dbeta}, dx

    return fnnet.Layer(init, apply, forward, backward, name="ScaleShift")


# A common slip: forgetting the z(1 − σ) term of silu', i.e. taking silu' = σ.
WrongSilu = Silu._replace(backward=lambda params, residuals, dy: ((), dy * residuals[1]),
                          name="WrongSilu")


def mlp(activation=Silu) -> fnnet.Layer:
    """64 pixels -> Dense(64) -> ScaleShift -> activation -> Dense(10) logits."""
    return fnnet.serial(fnnet.Dense(64), ScaleShift(), activation, fnnet.Dense(10))


def _worst_fd(report) -> float:
    """The largest finite-difference relative error in a gradcheck report."""
    return max((row.fd_rel_error for row in report.rows if not math.isnan(row.fd_rel_error)), default=0.0)


def main(epochs: int = 30, verbose: bool = True) -> dict:
    (x_train, y_train), (x_test, y_test) = datasets.digits()
    loss = fnnet.losses.softmax_cross_entropy
    model = mlp()
    table = fnnet.summary(model, x_train.shape[1:])
    if verbose:
        print(table, end="\n\n")

    # 1. Each layer alone, in float64: forward vs apply, backward vs jax.vjp and finite differences.
    x = 2 * jax.random.normal(jax.random.PRNGKey(1), (16, 5))
    shift_params = {"gamma": jnp.linspace(-2.0, 2.0, 5), "beta": jnp.linspace(-1.0, 1.0, 5)}
    reports = [fnnet.gradcheck.check_layer(Silu, (), x),
               fnnet.gradcheck.check_layer(ScaleShift(), shift_params, x)]

    # 2. The whole model with its loss, on real training examples.
    _, params = model.init(jax.random.PRNGKey(0), x_train.shape[1:])
    reports.append(fnnet.gradcheck.check_model(model, loss, params, x_train[:128], y_train[:128]))
    if verbose:
        for report in reports:
            print(f"{report.subject}: {'pass' if report.passed else 'FAIL'}\n{report}\n")

    # 3. A wrong backward is caught, and the layer that is wrong is named.
    try:
        fnnet.gradcheck.check_model(mlp(WrongSilu), loss, params, x_train[:128], y_train[:128])
        raise AssertionError("the wrong backward was not caught")
    except fnnet.gradcheck.GradientMismatch as error:
        mismatch, culprit = str(error).splitlines()[0], error.report.culprit
    if verbose:
        print(f"WrongSilu caught: {mismatch}\n")

    # 4. Train with the hand-written backward (grad="manual", fit's default).
    state, history = train.fit(model, loss, optax.adam(1e-3), (x_train, y_train), epochs=epochs,
                               batch_size=32, key=jax.random.PRNGKey(0), eval_data=(x_test, y_test),
                               verbose=verbose)
    test = train.evaluate(model, loss, state.params, (x_test, y_test))
    if verbose:
        print(f"\ntest accuracy {test['accuracy']:.2%} on {len(x_test)} digits, "
              f"{sum(history.seconds):.1f} s training")
    return {
        "layer_names": [row[1] for row in table.rows],
        "gradcheck_passed": all(report.passed for report in reports),
        "gradcheck_worst_rel_error": max(report.worst_rel_error for report in reports),
        "gradcheck_worst_fd_rel_error": max(_worst_fd(report) for report in reports),
        "mismatch": mismatch,
        "culprit": culprit,
        "test_accuracy": float(test["accuracy"]),
        "train_seconds": float(sum(history.seconds)),
    }


if __name__ == "__main__":
    metrics = main()
    if metrics["test_accuracy"] < 0.95:
        raise SystemExit(f"test accuracy {metrics['test_accuracy']:.2%} is below 95%")
