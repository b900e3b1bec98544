"""The layer contract: a small record of four pure functions.

A layer in fnnet is what a backprop tutorial writes by hand, made explicit::

    init(key, in_shape)            -> (out_shape, params)   in_shape: one example, no batch axis
    apply(params, x)               -> y                     plain JAX: the autodiff reference
    forward(params, x)             -> (y, residuals)        y and what backward needs
    backward(params, residuals, dy) -> (dparams, dx)        the hand-written vector-Jacobian product

Every formula accepts any number of leading batch axes, so one layer runs on a
batch and, under ``jax.vmap``, on a single example.

Writing your own layer
----------------------
Build the record from four functions of your own and give it a ``name``; :func:`fnnet.serial`,
:func:`fnnet.train.fit`, :mod:`fnnet.gradcheck` and :func:`fnnet.summary` take it as it is.
The backward formula sits next to its forward:

  >>> import jax, fnnet
  >>> def silu_init(key, in_shape):
  ...     return tuple(in_shape), ()                  # same shape out, no params
  >>> def silu_apply(params, z):
  ...     return z * jax.nn.sigmoid(z)                # plain JAX: the autodiff reference
  >>> def silu_forward(params, z):
  ...     s = jax.nn.sigmoid(z)
  ...     return z * s, (z, s)                        # y, and the residuals backward needs
  >>> def silu_backward(params, residuals, dy):
  ...     z, s = residuals
  ...     return (), dy * s * (1 + z * (1 - s))       # (dparams, dx): silu'(z) = σ(z)(1 + z(1 − σ(z)))
  >>> Silu = fnnet.Layer(silu_init, silu_apply, silu_forward, silu_backward, name="Silu")
  >>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
  >>> fnnet.gradcheck.check_layer(Silu, (), x).passed  # float64: vs jax.vjp and finite differences
  True
  >>> print(fnnet.summary(fnnet.serial(fnnet.Dense(3), Silu), (2,)))
  #  layer     output shape  params
  ---------------------------------
     input     (2,)
  0  Dense(3)  (3,)          9
  1  Silu      (3,)          0
  ---------------------------------
  total parameters: 9

What every layer's functions promise, and :mod:`fnnet.gradcheck` checks:

* ``forward(params, x)[0]`` equals ``apply(params, x)``; ``apply`` is plain, differentiable JAX;
* ``backward`` returns ``dparams`` with the params' tree structure, shapes and dtypes (``()`` for
  none) and ``dx`` shaped like ``x`` (for integer input such as token ids, JAX's ``float0`` zeros,
  ``np.zeros(x.shape, jax.dtypes.float0)``, as :func:`fnnet.Embedding` returns: no cotangent);
* any number of leading batch axes: parameter gradients are summed over all of them
  (``jnp.sum(dy * x, axis=tuple(range(dy.ndim - 1)))``), so the same layer runs on one example
  under ``jax.vmap``;
* residuals are arrays (or ``None``), never Python numbers: they pass through ``lax.scan`` and
  ``jax.custom_vjp``; keep ``x`` itself when the backward needs its static shape;
* no averaging: the ``1/N`` of a mean loss lives in ``Loss.grad`` only;
* ``name`` is what summaries, shape errors and gradient reports show; without it they fall back
  to the name of ``init`` (``_silu_init`` shows as ``silu``).

``examples/custom_layer.py`` adds a layer with parameters (a learnable scale-and-shift) and a
deliberately wrong backward that :func:`fnnet.gradcheck.check_model` catches and names.

Randomness and state
--------------------
Dropout needs a PRNG key and a train/eval switch; BatchNorm keeps running statistics
that training updates and evaluation uses. Such a layer fills three more fields, the
same functions with the state, the key and the mode as explicit arguments (state in,
state out, as in Haiku's ``transform_with_state``)::

    stateful_init(key, in_shape)                            -> (out_shape, params, state)
    stateful_apply(params, state, x, *, key, train)         -> (y, state)
    stateful_forward(params, state, x, *, key, train)       -> (y, residuals, state)
    backward(params, residuals, dy)                         -> (dparams, dx)   unchanged

``key`` is a PRNG key (or ``None`` when the layer needs none), ``train`` a Python bool:
``True`` for a training step (dropout drops, BatchNorm uses and updates batch
statistics), ``False`` for evaluation. ``state`` is a pytree of arrays, ``()`` for a
layer without state. The functions :func:`init_with_state`, :func:`apply_with_state`
and :func:`forward_with_state` call any layer this way (a plain layer simply passes
its ``()`` state through), and :func:`fnnet.serial` threads states and keys through
its children. A stateful layer's plain ``apply(params, x)`` is its evaluation mode
where that needs no state (Dropout: the identity), and otherwise raises an error
that says which function to call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

Shape = tuple[int, ...]


class Layer(NamedTuple):
    """A layer: four pure functions ``(init, apply, forward, backward)``, and its display name.

    A NamedTuple of functions is itself a pytree with no array leaves: close over
    a layer or pass it as a static argument to ``jax.jit``; never trace it.
    """

    init: Callable[..., tuple[Shape, Any]]
    """``(key, in_shape) -> (out_shape, params)``; ``in_shape`` has no batch axis."""
    apply: Callable[[Any, Any], Any]
    """``(params, x) -> y`` in plain JAX: the reference that autodiff differentiates."""
    forward: Callable[[Any, Any], tuple[Any, Any]]
    """``(params, x) -> (y, residuals)``: the output and what ``backward`` needs."""
    backward: Callable[[Any, Any, Any], tuple[Any, Any]]
    """``(params, residuals, dy) -> (dparams, dx)``: the hand-written VJP."""
    name: str | None = None
    """What error messages, :func:`fnnet.summary` and :mod:`fnnet.gradcheck` call the layer
    (``"Dense(4)"``); ``None`` falls back to the name of its ``init`` function."""
    children: tuple = ()
    """The sub-layers of a combinator such as :func:`fnnet.serial`; ``()`` for a leaf layer."""
    stateful_init: Callable | None = None
    """``(key, in_shape) -> (out_shape, params, state)``; ``None`` for a plain layer."""
    stateful_apply: Callable | None = None
    """``(params, state, x, *, key, train) -> (y, state)``: the reference autodiff differentiates."""
    stateful_forward: Callable | None = None
    """``(params, state, x, *, key, train) -> (y, residuals, state)``: feeds ``backward``."""
    spec: "Spec | None" = None
    """What the layer is, as data: its kind and the arguments it was built with (``None`` for a
    layer built without one). Tools that rebuild a model elsewhere (:mod:`fnnet.interop`) read it."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """A layer's kind and the arguments it was built with: ``Spec("Conv", (("out_channels", 32),
    ("kernel_size", (3, 3)), ...))``. Hashable (a layer stays a valid static argument), and one
    pytree leaf, like the layer's functions. ``spec["strides"]`` reads an argument.
    """

    kind: str
    args: tuple = ()

    def __getitem__(self, name: str):
        return dict(self.args)[name]

    def get(self, name: str, default=None):
        return dict(self.args).get(name, default)


def spec(kind: str, **args) -> Spec:
    """``Spec(kind, args)`` with the arguments in the order given (lists become tuples)."""
    frozen = tuple((name, tuple(value) if isinstance(value, list) else value) for name, value in args.items())
    return Spec(kind, frozen)


@functools.lru_cache(maxsize=None)
def _documented_class(kind: str, doc: str) -> type:
    """A subclass of :class:`Layer` carrying one layer kind's docstring, so that ``help(fnnet.Relu)``
    shows ReLU's math and example instead of the generic record's (one class per kind and doc)."""
    return type(kind, (Layer,), {"__doc__": doc, "__slots__": (), "__module__": Layer.__module__})


def make_layer(name: str, init, apply, forward, backward, children: Sequence[Layer] = (), *,
               stateful_init=None, stateful_apply=None, stateful_forward=None, doc: str | None = None,
               spec: Spec | None = None) -> Layer:
    """Builds a :class:`Layer` named ``name`` (with ``children`` for a combinator).

    ``doc`` is the layer's own docstring (its math, shapes and example): ``help(layer)`` shows
    it. The result is still a :class:`Layer` (a subclass that only carries the docstring).
    ``spec`` says what the layer is as data (:class:`Spec`).
    """
    cls = Layer if not doc else _documented_class(name.split("(")[0] or "Layer", doc)
    return cls(init, apply, _scoped(name, "forward", forward), _scoped(name, "backward", backward), name=name,
               children=tuple(children), stateful_init=stateful_init, stateful_apply=stateful_apply,
               stateful_forward=_scoped(name, "forward", stateful_forward), spec=spec)


def _scoped(name: str, what: str, fn):
    """``fn`` inside ``jax.named_scope("Conv(32, 3x3)/backward")``: profiles and the compiled HLO's
    op names then say which layer's forward or backward an operation belongs to."""
    if fn is None:
        return None

    @functools.wraps(fn)
    def scoped(*args, **kwargs):
        with jax.named_scope(f"{name}/{what}"):
            return fn(*args, **kwargs)
    return scoped


@dataclasses.dataclass(frozen=True)
class ExampleShape:
    """The params of a layer whose ``apply`` must know one example's shape (:data:`fnnet.Flatten`,
    :func:`fnnet.Reshape`, :data:`fnnet.GlobalAvgPool`, :func:`fnnet.FanInConcat`): ``init`` records
    the shape here, so the layer tells batch axes from example axes on any number of leading axes
    and under ``jax.vmap``.

    A pytree with no leaves (``jax.tree_util.register_static``): nothing to train, update or
    save, and its shape is static under ``jax.jit``. Such a layer's ``apply((), x)``, without
    the recorded shape, falls back to its documented default (Flatten: one leading batch axis).
    """

    shape: tuple


jax.tree_util.register_static(ExampleShape)


def example_shape(params) -> tuple | None:
    """The example shape recorded in ``params`` (an :class:`ExampleShape`), or ``None``."""
    return tuple(params.shape) if isinstance(params, ExampleShape) else None


def split_batch(x_shape, example: tuple, where: str) -> tuple:
    """The leading (batch) axes of an input of shape ``x_shape`` whose examples have shape
    ``example``; a ValueError naming ``where`` when its trailing axes are not ``example``."""
    x_shape = tuple(x_shape)
    if len(x_shape) < len(example) or x_shape[len(x_shape) - len(example):] != tuple(example):
        raise ValueError(f"{where}: expected input of shape (..., {', '.join(map(str, example))}) "
                         f"(examples of shape {tuple(example)}, as init was given), got {x_shape}")
    return x_shape[:len(x_shape) - len(example)]


def is_stateful(layer: Layer) -> bool:
    """Whether ``layer`` takes a state, a key or the train/eval mode (Dropout, BatchNorm, and
    any combinator holding one)."""
    return layer.stateful_apply is not None


def init_with_state(layer: Layer, key, in_shape):
    """``(out_shape, params, state)`` for any layer; ``state`` is ``()`` for a plain one."""
    if layer.stateful_init is not None:
        return layer.stateful_init(key, in_shape)
    out_shape, params = layer.init(key, in_shape)
    return out_shape, params, ()


def abstract_init(layer: Layer, in_shape):
    """``(out_shape, params, state)`` that ``init_with_state`` declares for ``in_shape``, the arrays
    as ``jax.ShapeDtypeStruct`` s: nothing is computed (``jax.eval_shape``)."""
    declared = {}

    def run(key):
        declared["out_shape"], params, state = init_with_state(layer, key, in_shape)
        return params, state

    params, state = jax.eval_shape(run, jax.random.PRNGKey(0))
    return declared["out_shape"], params, state


def apply_with_state(layer: Layer, params, state, x, *, key=None, train: bool = False):
    """``(y, new_state)`` for any layer; a plain layer runs ``apply`` and returns ``state`` as is.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(4), fnnet.BatchNorm(), fnnet.Relu, fnnet.Dropout(0.5))
      >>> _, params, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (3,))
      >>> y, state = fnnet.apply_with_state(model, params, state, jnp.ones((8, 3)),
      ...                                   key=jax.random.PRNGKey(1), train=True)
      >>> batchnorm_state = state[1]
      >>> y.shape, batchnorm_state["mean"].shape
      ((8, 4), (4,))
    """
    if layer.stateful_apply is not None:
        return layer.stateful_apply(params, state, x, key=key, train=train)
    return layer.apply(params, x), state


def forward_with_state(layer: Layer, params, state, x, *, key=None, train: bool = False):
    """``(y, residuals, new_state)`` for any layer: what ``backward`` needs, and the new state."""
    if layer.stateful_forward is not None:
        return layer.stateful_forward(params, state, x, key=key, train=train)
    y, residuals = layer.forward(params, x)
    return y, residuals, state


def layer_name(layer: Layer) -> str:
    """The display name of a layer (``"Dense(4)"``, ``"Relu"``, ``"serial"``...)."""
    if layer.name:
        return layer.name
    qualname = getattr(layer.init, "__qualname__", "layer")
    return qualname.split(".<locals>")[0].lstrip("_").removesuffix("_init") or "layer"


def layer_kind(layer: Layer) -> str:
    """What a layer is, the one notion every tool reads: its :class:`Spec`'s kind (``"Dense"`` for
    ``Dense(4)``, ``"serial"`` for :func:`fnnet.serial`'s combinator); for a layer built without a
    spec (your own), its name up to its arguments. A layer of your own named ``"serial"`` has no
    ``Spec("serial")``: :func:`is_combinator_kind` tells the two apart."""
    return layer.spec.kind if layer.spec is not None else layer_name(layer).split("(")[0]


def is_combinator_kind(layer: Layer, kind: str) -> bool:
    """Whether ``layer`` is the built-in combinator ``kind`` (``"serial"``, ``"parallel"``...),
    by its :class:`Spec`, never by its name."""
    return layer.spec is not None and layer.spec.kind == kind and bool(layer.children)


def layer_children(layer: Layer) -> tuple[Layer, ...]:
    """The sub-layers of a combinator such as :func:`fnnet.serial`; ``()`` for a leaf layer."""
    return tuple(layer.children)


def locate(model: Layer, path) -> tuple[list[tuple[int, Layer]], tuple]:
    """Follows a params key path into ``model``'s combinators.

    Returns the chain of ``(index, layer)`` entered (outermost first) and the rest of the
    path (inside the leaf layer's own params, e.g. ``('w',)``).
    """
    chain, layer, rest = [], model, list(path)
    while rest and layer_children(layer) and isinstance(rest[0], jax.tree_util.SequenceKey):
        index = rest.pop(0).idx
        layer = layer_children(layer)[index]
        chain.append((index, layer))
    return chain, tuple(rest)


def path_text(path: Sequence[int]) -> str:
    """Where a layer sits in a model, the one way every tool writes it: ``"3/1/0"`` is child 0 of
    child 1 of the model's child 3 (a top-level layer of a :func:`fnnet.serial` model is just its
    index, ``"3"``). :func:`fnnet.trace` (``trace["3/1/0"]``), ``fnnet trace --layer 3/1/0``,
    gradient reports, error messages, ONNX node names and the monitor's keys all use it."""
    return "/".join(str(int(index)) for index in path)


def layer_label(path: Sequence[int], layer: Layer) -> str:
    """``"layer 3/1/0 (Dense(4))"``: a layer by its :func:`path_text` and its name, as messages,
    gradient reports, traces and the monitor's keys name it (``"layer 2 (Relu)"`` at the top level;
    ``"layer 0 (…)"`` for a model that is one layer, whose path is empty)."""
    return f"layer {path_text(path) or '0'} ({layer_name(layer)})"


def describe_path(model: Layer, path) -> str:
    """``"layer 0 (Dense(16)), param 'w'"`` for a key path into ``model``'s params (``"layer 2/0
    (Dense(2)), param 'b'"`` inside a combinator)."""
    chain, rest = locate(model, path)
    where = layer_label([index for index, _ in chain], chain[-1][1]) if chain else layer_name(model)
    param = "".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in rest[:1]) if len(rest) == 1 \
        else jax.tree_util.keystr(rest)
    return f"{where}, param {param!r}" if rest else where


def as_shape(in_shape, where: str) -> Shape:
    """Normalises ``in_shape`` (an int or a sequence of ints) to a tuple, or raises ValueError."""
    if isinstance(in_shape, int):
        return (in_shape,)
    try:
        shape = tuple(int(d) for d in in_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: in_shape must be a tuple of ints (one example, no batch axis), "
                         f"got {in_shape!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"{where}: in_shape has a negative dimension: {shape}")
    return shape


class LayerError(ValueError):
    """A ValueError raised inside a model's layer, prefixed with the layer's :func:`layer_label`:
    ``"layer 3/1/0 (Dense(4)): expected input of shape (..., 4), got (2, 9)"``. Each combinator
    the error passes on its way out adds its child's index to the front of ``path``."""

    def __init__(self, path: tuple[int, ...], name: str, message: str):
        super().__init__(f"layer {path_text(path)} ({name}): {message}")
        self.path, self.name, self.message = tuple(path), name, message


@contextlib.contextmanager
def at_layer(index: int, layer: Layer):
    """Re-raises a ValueError from inside ``layer`` as a :class:`LayerError` naming its path and name
    (the innermost layer's name; the outer combinators' indices join the path)."""
    try:
        yield
    except LayerError as error:
        raise LayerError((index,) + error.path, error.name, error.message) from error.__cause__
    except ValueError as error:
        name = layer_name(layer)
        raise LayerError((index,), name, str(error).removeprefix(f"{name}: ")) from error


def _tree_text(tree) -> str:
    """A tree's structure with its leaves' shapes: ``{'b': (3,), 'w': (2, 3)}``, ``(4, 3)``."""
    def leaf(a):
        return tuple(a.shape) if hasattr(a, "shape") else type(a).__name__
    return str(jax.tree.map(leaf, tree, is_leaf=lambda a: a is None)) if jax.tree.leaves(tree) or tree == () \
        else str(tree)


def check_backward_result(layer: Layer, params, result, x=None) -> tuple:
    """``result`` as ``(dparams, dx)`` when it is what ``layer.backward`` must return: a pair
    whose ``dparams`` has the params' tree structure, leaf shapes and kinds of dtype (floating),
    and (when ``x``, the layer's input, is known) whose ``dx`` has ``x``'s structure and shapes
    (``float0`` for an integer input). Otherwise a ValueError that names the layer and says what
    it returned, e.g. a ``(dx, dparams)`` pair in the wrong order. Shapes only: nothing is computed."""
    name = layer_name(layer)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ValueError(f"{name}: backward must return a pair (dparams, dx), got "
                         f"{type(result).__name__}{f' of {len(result)} items' if isinstance(result, (tuple, list)) else ''}")
    dparams, dx = result
    swapped = jax.tree.structure(dx) == jax.tree.structure(params) or \
        (x is not None and jax.tree.structure(dparams) == jax.tree.structure(x))
    checks = [("dparams", dparams, params, "params", "a parameter")] + \
        ([("dx", dx, x, "an input", "an input")] if x is not None else [])
    for what, got, want, whose, one in checks:
        if jax.tree.structure(got) != jax.tree.structure(want):
            hint = " (is it returning (dx, dparams)? The order is (dparams, dx))" if swapped else ""
            raise ValueError(f"{name}: backward returned {what} {_tree_text(got)} for {whose} {_tree_text(want)}: "
                             f"{what} must have the same tree structure and shapes{hint}")
        for (path, reference), leaf in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got)):
            where, shape = jax.tree_util.keystr(path), tuple(getattr(reference, "shape", ()))
            if getattr(leaf, "shape", None) is None or tuple(leaf.shape) != shape:
                raise ValueError(f"{name}: backward returned {what}{where} of shape "
                                 f"{getattr(leaf, 'shape', type(leaf).__name__)} for {one} of shape {shape}")
            if _floating(reference) and not _floating(leaf):
                raise ValueError(f"{name}: backward returned {what}{where} of dtype {leaf.dtype} for {one} of "
                                 f"dtype {reference.dtype}")
    return dparams, dx


def _floating(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and dtype != jax.dtypes.float0 and jnp.issubdtype(dtype, jnp.inexact)
