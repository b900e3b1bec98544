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

from fnnet.layer import Layer, as_shape, make_layer, spec


def _floating(x):
    """Integer inputs (uint8 pixels) as JAX's default float, as ``x @ w`` promotes them in Dense."""
    return x if jnp.issubdtype(jnp.result_type(x), jnp.inexact) else jnp.asarray(x, jnp.result_type(float))


def _activation(name: str, apply, forward, backward, doc: str | None = None, layer_spec=None) -> Layer:
    """An activation layer: shape-preserving, params ``()``; ``doc`` is what ``help`` shows; its
    spec is its name (``Spec("Relu")``) unless ``layer_spec`` says more."""

    def init(key, in_shape):
        del key
        return as_shape(in_shape, name), ()

    return make_layer(name, init, lambda params, x: apply(_floating(x)),
                      lambda params, x: forward(_floating(x)),
                      lambda params, residual, dy: ((), backward(residual, dy)), doc=doc,
                      spec=layer_spec or spec(name))


def _relu_forward(z):
    return jax.nn.relu(z), z


def _relu_backward(z, dy):
    return jnp.where(z > 0, dy, jnp.zeros_like(dy))  # relu'(z) = 1 if z > 0 else 0 (0 at the kink)


Relu = _activation("Relu", jax.nn.relu, _relu_forward, _relu_backward, doc="""ReLU: ``relu(z) = max(z, 0)``, elementwise, any shape.

Backward: ``dx = dy * (z > 0)``, so the derivative at the kink 0 is 0 (as ``jax.nn.relu``).

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.Relu.apply((), jnp.array([-1.0, 0.0, 2.0]))
  Array([0., 0., 2.], dtype=float32)
""")


def _sigmoid_forward(z):
    s = jax.nn.sigmoid(z)
    return s, s


def _sigmoid_backward(s, dy):
    return dy * s * (1 - s)  # σ'(z) = σ(z)(1 - σ(z))


Sigmoid = _activation("Sigmoid", jax.nn.sigmoid, _sigmoid_forward, _sigmoid_backward, doc="""Sigmoid: ``σ(z) = 1 / (1 + e^-z)``, elementwise, any shape.

Backward: ``dx = dy * σ (1 - σ)``, from the saved output.

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.Sigmoid.apply((), jnp.array([0.0]))
  Array([0.5], dtype=float32)
""")


def _tanh_forward(z):
    t = jnp.tanh(z)
    return t, t


def _tanh_backward(t, dy):
    return dy * (1 - t * t)  # tanh'(z) = 1 - tanh(z)^2


Tanh = _activation("Tanh", jnp.tanh, _tanh_forward, _tanh_backward, doc="""Tanh: ``tanh(z)``, elementwise, any shape.

Backward: ``dx = dy * (1 - tanh²)``, from the saved output.

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.Tanh.apply((), jnp.array([0.0]))
  Array([0.], dtype=float32)
""")


def _softmax_forward(z):
    p = jax.nn.softmax(z, axis=-1)
    return p, p


def _softmax_backward(p, dy):
    return p * (dy - jnp.sum(dy * p, axis=-1, keepdims=True))  # J = diag(p) - p pᵀ


Softmax = _activation("Softmax", lambda z: jax.nn.softmax(z, axis=-1), _softmax_forward,
                      _softmax_backward, doc="""Softmax over the last axis: ``p_i = e^{z_i} / Σ_j e^{z_j}``, shape kept.

Backward: ``dx = p * (dy - Σ dy p)`` (the Jacobian ``diag(p) - p pᵀ`` applied to ``dy``).
For classification prefer logits with :data:`fnnet.losses.softmax_cross_entropy`,
whose fused gradient ``softmax(z) - onehot(y)`` is exact and stable.

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.Softmax.apply((), jnp.zeros((2, 4)))
  Array([[0.25, 0.25, 0.25, 0.25],
         [0.25, 0.25, 0.25, 0.25]], dtype=float32)
""")

Identity = _activation("Identity", lambda z: z, lambda z: (z, None), lambda _, dy: dy, doc="""Identity: ``y = x``, any shape; backward ``dx = dy``.

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.Identity.apply((), jnp.array([1.5]))
  Array([1.5], dtype=float32)
""")


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

    return _activation(f"LeakyRelu({alpha:g})", apply, lambda z: (apply(z), z), backward, doc=LeakyRelu.__doc__,
                       layer_spec=spec("LeakyRelu", alpha=alpha))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_forward(z):
    return jax.nn.gelu(z, approximate=True), z


def _gelu_backward(z, dy):
    # g(z) = ½ z (1 + tanh u),  u = √(2/π) (z + 0.044715 z³)
    # g'(z) = ½ (1 + tanh u) + ½ z (1 - tanh² u) √(2/π) (1 + 3·0.044715 z²)
    t = jnp.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z * z))


def _gelu_exact_forward(z):
    return jax.nn.gelu(z, approximate=False), z


def _gelu_exact_backward(z, dy):
    # g(z) = z Φ(z),  Φ(z) = ½ (1 + erf(z/√2)) the normal CDF
    # g'(z) = Φ(z) + z φ(z),  φ(z) = e^(-z²/2) / √(2π) the normal density
    cdf = 0.5 * (1 + jax.lax.erf(z / math.sqrt(2.0)))
    density = jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return dy * (cdf + z * density)


_GELU_DOC = """GELU, elementwise, any shape. ``fnnet.Gelu`` is the tanh approximation (``jax.nn.gelu``'s
default, GPT-2's); ``fnnet.Gelu(approximate=False)`` is the exact form (PyTorch's ``nn.GELU()``
default), each with its own hand-written backward:

* tanh form: ``g(z) = ½ z (1 + tanh u)``, ``u = √(2/π) (z + 0.044715 z³)``;
  backward ``dx = dy * (½ (1 + tanh u) + ½ z (1 - tanh² u) √(2/π) (1 + 3·0.044715 z²))``.
* exact form: ``g(z) = z Φ(z)``, ``Φ(z) = ½ (1 + erf(z/√2))``;
  backward ``dx = dy * (Φ(z) + z φ(z))``, ``φ(z) = e^(-z²/2)/√(2π)``.

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.Gelu.apply((), jnp.array([0.0]))
  Array([0.], dtype=float32)
  >>> exact = fnnet.Gelu(approximate=False)
  >>> exact.name, round(float(exact.apply((), jnp.array([1.0]))[0]), 5)
  ('Gelu(exact)', 0.84134)
"""


class _Gelu(Layer):
    """``fnnet.Gelu``: the tanh-form layer, which can also be called to choose the form."""

    __slots__ = ()
    __doc__ = _GELU_DOC

    def __call__(self, approximate: bool = True) -> Layer:
        """The GELU layer of the given form: ``approximate=True`` the tanh form, ``False`` the exact."""
        return gelu(approximate)


def gelu(approximate: bool = True) -> Layer:
    """GELU of either form (see :data:`Gelu`); ``fnnet.Gelu(approximate=...)`` calls this."""
    if not isinstance(approximate, bool):
        raise ValueError(f"Gelu: approximate must be True (the tanh form) or False (exact), got {approximate!r}")
    if approximate:
        layer = _activation("Gelu", lambda z: jax.nn.gelu(z, approximate=True), _gelu_forward, _gelu_backward,
                            layer_spec=spec("Gelu", approximate=True))
    else:
        layer = _activation("Gelu(exact)", lambda z: jax.nn.gelu(z, approximate=False), _gelu_exact_forward,
                            _gelu_exact_backward, layer_spec=spec("Gelu", approximate=False))
    return _Gelu(*layer)


Gelu: Layer = gelu(approximate=True)


def _relu_squared_forward(z):
    return jnp.square(jax.nn.relu(z)), z


def _relu_squared_backward(z, dy):
    return dy * 2 * jax.nn.relu(z)  # (relu(z)²)' = 2·relu(z): 0 for z <= 0, 2z above


ReluSquared = _activation("ReluSquared", lambda z: jnp.square(jax.nn.relu(z)), _relu_squared_forward,
                          _relu_squared_backward, doc="""ReLU²: ``relu(z)² = max(z, 0)²``, elementwise, any shape
(the MLP activation of modded-nanogpt and Primer).

Backward: ``dx = dy * 2·relu(z)`` (smooth at 0, unlike ReLU: both sides' slopes are 0 there).

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.ReluSquared.apply((), jnp.array([-1.0, 0.5, 2.0]))
  Array([0.  , 0.25, 4.  ], dtype=float32)
""")


def SoftCap(cap: float) -> Layer:
    """A soft cap on logits: ``y = c · tanh(z / c)``, elementwise, any shape (Gemma 2's and
    modded-nanogpt's head): about ``z`` while ``|z| << c``, never beyond ``±c``.

    Backward: ``dx = dy · (1 - tanh²(z / c))``, from the saved ``t = tanh(z / c)`` (``y = c·t``).

    Example:
      >>> import jax.numpy as jnp, fnnet
      >>> y = fnnet.SoftCap(15.0).apply((), jnp.array([0.0, 1.0, 100.0]))
      >>> round(float(y[1]), 4), round(float(y[2]), 4)
      (0.9985, 15.0)
    """
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0 or math.isinf(cap):
        raise ValueError(f"SoftCap: cap must be a positive finite number, got {cap!r}")
    cap = float(cap)

    def forward(z):
        t = jnp.tanh(z / cap)
        return cap * t, t

    def backward(t, dy):
        return dy * (1 - t * t)  # d(c·tanh(z/c))/dz = c · (1 - tanh²) / c

    return _activation(f"SoftCap({cap:g})", lambda z: forward(z)[0], forward, backward, doc=SoftCap.__doc__,
                       layer_spec=spec("SoftCap", cap=cap))
