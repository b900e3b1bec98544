"""The XLA options fnnet compiles its own training and evaluation programs with, where one was
measured faster than XLA's default on the same program.

One today: **convolutions on the CPU go to XLA's own (Eigen) convolution, not YNNPACK's.** jax
0.10's CPU backend hands each convolution to a YNNPACK fusion by default
(``xla_cpu_experimental_ynn_fusion_type``: reductions, single dots, single convolutions). Timed
alone, the two run a convolution layer equally fast; inside a whole training step they do not:
``jax.profiler``'s per-thunk times of the classic CNN's step put YNNPACK's forward and ``dx``
convolutions of the 32→64 layer at 10.8 and 10.7 ms (~85 GFLOP/s), about twice what they take
alone. With XLA's own convolutions (YNNPACK's reductions and dots kept) the classic CNN's step took
45.8 ms against 54.7 ms (medians of 8, in turns in one process) and an epoch of the classic recipe
18.7-19.6 s against 21.4-22.7 s; on the smaller network of ``fnnet train mnist --model cnn`` the
difference is within this 2-core machine's noise (``benchmarks/profile_cnn.py``,
``benchmarks/profile_thunks.py``, ``docs/performance.md``).

Under these options ``Conv``'s backward also computes ``dW`` as a convolution rather than one
im2col product (:func:`im2col_dw`), the faster form there (the fast recipe's whole step 12.2 against
14.9 ms); the trace learns the options from :func:`jit`. A step you jit yourself gets XLA's
defaults; to compile it as ``fit`` does::

    step = fnnet.xla_options.jit(fnnet.train.make_train_step(model, loss, optimizer), model)

The option is passed per program (``jax.jit(..., compiler_options=...)``), never through
``XLA_FLAGS``, so nothing else in the process changes; it is not passed when the program has no
convolution layer, off the CPU, when ``XLA_FLAGS`` already sets the option (the user's choice
wins), or when this jaxlib does not accept it (checked once by compiling a tiny convolution).
"""

from __future__ import annotations

import functools
import os
import threading

import jax
import jax.numpy as jnp

from fnnet.layer import Layer, layer_children

YNN_FUSION_TYPES = "xla_cpu_experimental_ynn_fusion_type"
"""The XLA option that lists which kinds of operation the CPU backend hands to YNNPACK."""

WITHOUT_YNN_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
"""jax 0.10's default list (reductions, single dots, single convolutions: the compiled HLO of the
classic CNN's step is identical under the three) without the convolutions."""

CONVOLUTION_KINDS = ("Conv", "Conv1D")


_tracing = threading.local()  # the options of the program whose trace is running in this thread


def jit(fn, model: Layer, **jit_options):
    """``jax.jit(fn, **jit_options)`` compiled with :func:`compiler_options` for ``model``, and
    traced knowing them: while ``fn`` is traced, :func:`xla_convolutions` tells ``model``'s layers
    whether its convolutions will be XLA's own (``Conv``'s backward then computes ``dW`` as a
    convolution instead of one im2col product: each form is the faster one on its backend)."""
    options = compiler_options(model)
    if options is None:
        return jax.jit(fn, **jit_options)

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        outer = getattr(_tracing, "options", None)
        _tracing.options = options
        try:
            return fn(*args, **kwargs)
        finally:
            _tracing.options = outer

    return jax.jit(traced, compiler_options=options, **jit_options)


def xla_convolutions() -> bool:
    """Whether the program being traced in this thread compiles its convolutions with XLA's own
    (:func:`jit` with fnnet's options) rather than YNNPACK's (XLA's default on the CPU)."""
    return getattr(_tracing, "options", None) == {YNN_FUSION_TYPES: WITHOUT_YNN_CONVOLUTIONS}


def im2col_dw() -> bool:
    """Whether ``Conv``'s backward, traced now, computes ``dW`` as one im2col matrix product (its
    CPU fast path) rather than as a convolution (the plain form, on every other backend).

    When: on the CPU, in a program not compiled with XLA's own convolutions (:func:`xla_convolutions`).
    Why: there XLA hands convolutions to YNNPACK, its default, and the im2col product is ~1.5-3x
    faster than the convolution form at the example CNN's shapes; under XLA's own convolutions
    (the programs ``fit`` compiles with :func:`jit`) the convolution form is the faster one (the
    fast recipe's whole step 12.2 against 14.9 ms, the classic CNN's 37.5 against 39.2 ms, medians
    of 8 in turns; ``benchmarks/profile_cnn.py``). ``Conv`` also keeps the convolution form for
    feature groups and for patches over 32 MiB (``fnnet.layers.conv._IM2COL_MAX_BYTES``).
    """
    return jax.default_backend() == "cpu" and not xla_convolutions()


def has_convolution(model: Layer) -> bool:
    """Whether ``model`` (walked through its combinators) holds a built-in convolution layer."""
    spec = getattr(model, "spec", None)
    if spec is not None and getattr(spec, "kind", None) in CONVOLUTION_KINDS:
        return True
    return any(has_convolution(child) for child in layer_children(model))


def compiler_options(model: Layer) -> dict | None:
    """The ``compiler_options`` for a jitted program that runs ``model`` (``None``: XLA's defaults).

    Example:
      >>> import fnnet
      >>> from fnnet.xla_options import compiler_options
      >>> compiler_options(fnnet.serial(fnnet.Dense(4), fnnet.Relu)) is None   # no convolution
      True
    """
    if not has_convolution(model) or YNN_FUSION_TYPES in os.environ.get("XLA_FLAGS", ""):
        return None
    if jax.default_backend() != "cpu" or not _accepted():
        return None
    return {YNN_FUSION_TYPES: WITHOUT_YNN_CONVOLUTIONS}


@functools.cache
def _accepted() -> bool:
    """Whether this jaxlib compiles a program with the option (a later one may rename its values)."""
    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    try:
        jax.jit(conv, compiler_options={YNN_FUSION_TYPES: WITHOUT_YNN_CONVOLUTIONS}).lower(
            jax.ShapeDtypeStruct((1, 3, 3, 1), jnp.float32), jax.ShapeDtypeStruct((1, 1, 1, 1), jnp.float32)).compile()
    except Exception:  # an unknown option or enum value: XLA's defaults, as before
        return False
    return True
