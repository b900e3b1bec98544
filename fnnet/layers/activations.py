"""Parameter-free activation layers, each with its derivative written beside it.

Each activation is a :class:`fnnet.Layer` whose params are ``()``. Its
``apply`` is the plain-JAX reference (``jax.nn.*``), its ``backward`` the
tutorial formula, e.g. ``dx = dy * (z > 0)`` for ReLU or ``dx = dy * s (1 - s)``
for the sigmoid. They act elementwise (Softmax: along the last axis), so any
leading batch axes work.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fnnet.layer import Layer, as_shape, make_layer


def _activation(name: str, apply, forward, backward) -> Layer:
    """An activation layer: shape-preserving, params ``()``."""

    def init(key, in_shape):
        del key
        return as_shape(in_shape, name), ()

    return make_layer(name, init, lambda params, x: apply(x),
                      lambda params, x: forward(x),
                      lambda params, residual, dy: ((), backward(residual, dy)))


def _relu_forward(z):
    return jax.nn.relu(z), z


def _relu_backward(z, dy):
    return jnp.where(z > 0, dy, jnp.zeros_like(dy))  # relu'(z) = 1 if z > 0 else 0 (0 at the kink)


Relu = _activation("Relu", jax.nn.relu, _relu_forward, _relu_backward)
"""``relu(z) = max(z, 0)``; backward ``dx = dy * (z > 0)``, so the derivative at 0 is 0."""


def _sigmoid_forward(z):
    s = jax.nn.sigmoid(z)
    return s, s


def _sigmoid_backward(s, dy):
    return dy * s * (1 - s)  # σ'(z) = σ(z)(1 - σ(z))


Sigmoid = _activation("Sigmoid", jax.nn.sigmoid, _sigmoid_forward, _sigmoid_backward)
"""``σ(z) = 1 / (1 + e^-z)``; backward ``dx = dy * σ (1 - σ)`` from the saved output."""


def _tanh_forward(z):
    t = jnp.tanh(z)
    return t, t


def _tanh_backward(t, dy):
    return dy * (1 - t * t)  # tanh'(z) = 1 - tanh(z)^2


Tanh = _activation("Tanh", jnp.tanh, _tanh_forward, _tanh_backward)
"""``tanh(z)``; backward ``dx = dy * (1 - tanh²)`` from the saved output."""


def _softmax_forward(z):
    p = jax.nn.softmax(z, axis=-1)
    return p, p


def _softmax_backward(p, dy):
    return p * (dy - jnp.sum(dy * p, axis=-1, keepdims=True))  # J = diag(p) - p pᵀ


Softmax = _activation("Softmax", lambda z: jax.nn.softmax(z, axis=-1), _softmax_forward,
                      _softmax_backward)
"""Softmax over the last axis; backward ``dx = p * (dy - Σ dy p)`` (the Jacobian ``diag(p) - p pᵀ``).

For classification prefer logits with :data:`fnnet.losses.softmax_cross_entropy`,
whose fused gradient ``softmax(z) - onehot(y)`` is exact and stable.
"""

Identity = _activation("Identity", lambda z: z, lambda z: (z, None), lambda _, dy: dy)
"""``y = x``; backward ``dx = dy``."""


def LeakyRelu(alpha: float = 0.01) -> Layer:
    """``leaky_relu(z) = z if z >= 0 else alpha * z``; backward ``dx = dy * (1 if z >= 0 else alpha)``.

    Example:
      >>> import jax.numpy as jnp, fnnet
      >>> fnnet.LeakyRelu(0.1).apply((), jnp.array([-2.0, 3.0]))
      Array([-0.2,  3. ], dtype=float32)
    """
    alpha = float(alpha)

    def apply(z):
        return jax.nn.leaky_relu(z, negative_slope=alpha)

    def backward(z, dy):
        return jnp.where(z >= 0, dy, alpha * dy)  # slope 1 at the kink, as jax.nn.leaky_relu

    return _activation(f"LeakyRelu({alpha:g})", apply, lambda z: (apply(z), z), backward)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_forward(z):
    return jax.nn.gelu(z, approximate=True), z


def _gelu_backward(z, dy):
    # g(z) = ½ z (1 + tanh u),  u = √(2/π) (z + 0.044715 z³)
    # g'(z) = ½ (1 + tanh u) + ½ z (1 - tanh² u) √(2/π) (1 + 3·0.044715 z²)
    t = jnp.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z * z))


Gelu = _activation("Gelu", lambda z: jax.nn.gelu(z, approximate=True), _gelu_forward, _gelu_backward)
"""GELU with the tanh approximation (as ``jax.nn.gelu``'s default); the derivative is written out."""
