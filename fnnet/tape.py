"""Recording what each layer of a model saw: the tape behind :func:`fnnet.trace`, the training
monitor and the checks that name a layer.

A combinator calls each child through :func:`child_forward` and :func:`child_backward`. Outside a
:func:`recording` block they are the child's ``forward_with_state`` and ``backward`` (with errors
prefixed by the child's index and name, and the backward's result checked); inside one, the
open :class:`Tape` also keeps a :class:`Call` per layer call, with its path of child indices
(``(3, 1, 0)``: child 0 of child 1 of layer 3), inputs, outputs and gradients. Recording happens
in Python, at trace time: it adds no operation to a compiled program.

Example:
  >>> import jax, jax.numpy as jnp, fnnet
  >>> from fnnet.tape import child_backward, child_forward, recording
  >>> model = fnnet.serial(fnnet.Dense(3), fnnet.Relu)
  >>> _, params = model.init(jax.random.PRNGKey(0), (2,))
  >>> with recording() as tape:
  ...     y, residuals, _ = child_forward(None, model, params, (), jnp.ones((4, 2)))
  ...     _ = child_backward(None, model, params, residuals, jnp.ones_like(y))
  >>> tuple((call.path, fnnet.layer_name(call.layer)) for call in tape.leaves())
  (((0,), 'Dense(3)'), ((1,), 'Relu'))
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from fnnet.layer import Layer, at_layer, check_backward_result, forward_with_state, is_stateful


@dataclasses.dataclass
class Call:
    """One call of a layer inside a combinator, as a :class:`Tape` keeps it.

    ``path`` is the chain of child indices from the outermost model (``(3, 1, 0)``: child 0 of
    child 1 of layer 3; ``()`` for the model itself). Forward fills ``params``, ``x``, ``y`` (and
    for a layer with state or randomness the ``state``, ``key`` and ``train`` it ran with);
    backward fills ``dy``, ``dparams`` and ``dx``. Arrays are whatever JAX gave: concrete when
    run eagerly, tracers inside ``jax.jit`` (where the monitor reduces them to statistics).
    """

    path: tuple
    layer: Layer
    params: Any = None
    x: Any = None
    y: Any = None
    state: Any = ()
    key: Any = None
    train: bool = False
    dy: Any = None
    dparams: Any = None
    dx: Any = None
    backward_order: int | None = None
    """The position of this call in the backward walk (``0``: the first backward to run)."""
    new_state: Any = ()
    """The state its forward left behind (``()`` for a plain layer)."""

    @property
    def stateful(self) -> bool:
        """Whether the layer ran with its state, key and mode (:func:`is_stateful`)."""
        return is_stateful(self.layer)


class Tape:
    """The calls :func:`recording` collected: ``calls`` in forward order (outer layers before
    the layers inside them), each completed by its backward when that ran."""

    def __init__(self, distinct: bool = False):
        self.distinct = distinct
        """Give every recorded output an array of its own (see :func:`recording`)."""
        self.calls: list[Call] = []
        self._stack: list[int] = []
        self._open: dict[tuple, list[Call]] = {}
        self._backwards = 0

    def leaves(self) -> list[Call]:
        """The calls with no recorded call inside them (the layers themselves, not the
        combinators around them), in forward order. A combinator of your own whose forward
        does not go through :func:`child_forward` shows as one leaf."""
        paths = [call.path for call in self.calls]
        return [call for call in self.calls
                if not any(len(other) > len(call.path) and other[:len(call.path)] == call.path for other in paths)]

    @contextlib.contextmanager
    def _inside(self, index):
        """The path of child ``index`` (``None``: the model itself) while its functions run."""
        if index is not None:
            self._stack.append(index)
        try:
            yield tuple(self._stack)
        finally:
            if index is not None:
                self._stack.pop()

    def forward(self, index, layer: Layer, params, state, x, *, key=None, train: bool = False):
        """:func:`child_forward` while recording: runs the layer and keeps the call."""
        with self._inside(index) as path:
            y, residuals, new_state = forward_with_state(layer, params, state, x, key=key, train=train)
        if self.distinct:
            y = _distinct_outputs(y, x)
        call = Call(path, layer, params, x, y, state, key, train, new_state=new_state)
        self.calls.append(call)
        self._open.setdefault(path, []).append(call)
        return y, residuals, new_state

    def backward(self, index, layer: Layer, params, residuals, dy):
        """:func:`child_backward` while recording: runs the backward, checks its result against
        the call's input and completes the call with ``dy``, ``dparams`` and ``dx``."""
        with self._inside(index) as path:
            result = layer.backward(params, residuals, dy)
        pending = self._open.get(path)
        dparams, dx = check_backward_result(layer, params, result, pending[-1].x if pending else None)
        if pending:
            call = pending.pop()
            call.dy, call.dparams, call.dx = dy, dparams, dx
            call.backward_order = self._backwards
            self._backwards += 1
        return dparams, dx


def subtree(tree, path):
    """The part of a params (or gradient, update) tree at a tape path of child indices, as
    :func:`fnnet.serial` and :func:`fnnet.parallel` lay params out; ``None`` where the tree has
    no such entry (a combinator of your own may lay its params out otherwise)."""
    for index in path:
        if not isinstance(tree, (tuple, list)) or index >= len(tree):
            return None
        tree = tree[index]
    return tree


_TAPE: contextvars.ContextVar = contextvars.ContextVar("fnnet_tape", default=None)


@contextlib.contextmanager
def recording(distinct: bool = False):
    """Collects a :class:`Tape` of every layer call that :func:`fnnet.serial` and
    :func:`fnnet.parallel` make (and the model's own, through :func:`child_forward` /
    :func:`child_backward` with index ``None``) while the block runs. Recording happens in
    Python, at trace time: it adds no operation to a compiled program.

    ``distinct=True`` (for :func:`fnnet.trace`, which follows the data from layer to layer by the
    identity of the arrays) gives each output that is one of its layer's inputs (``FanOut``'s
    copies, ``Identity``) an array of its own, a copy with the same values."""
    tape = Tape(distinct)
    token = _TAPE.set(tape)
    try:
        yield tape
    finally:
        _TAPE.reset(token)


def is_recording() -> bool:
    """Whether a :func:`recording` block is open (a :class:`Tape` collects the layer calls)."""
    return _TAPE.get() is not None


def _distinct_outputs(y, x):
    """``y`` with each leaf that is a leaf of ``x`` (or repeats within ``y``) replaced by a copy."""
    seen = {id(leaf) for leaf in jax.tree.leaves(x)}

    def own(leaf):
        if id(leaf) in seen:
            return jnp.array(leaf, copy=True)
        seen.add(id(leaf))
        return leaf

    return jax.tree.map(own, y)


def child_forward(index, layer: Layer, params, state, x, *, key=None, train: bool = False):
    """``(y, residuals, new_state)`` of a combinator's child ``index`` (``None``: the model
    itself), by :func:`fnnet.forward_with_state` (a plain layer's state passes through). Errors
    are prefixed with the child's index and name; while :func:`recording`, the call is kept on
    the tape."""
    tape = _TAPE.get()
    with at_layer(index, layer) if index is not None else contextlib.nullcontext():
        if tape is None:
            return forward_with_state(layer, params, state, x, key=key, train=train)
        return tape.forward(index, layer, params, state, x, key=key, train=train)


def child_backward(index, layer: Layer, params, residuals, dy):
    """``(dparams, dx)`` of a combinator's child ``index`` (``None``: the model itself); errors
    prefixed with its index and name, and recorded beside its forward while :func:`recording`.
    What the backward returns is checked (:func:`fnnet.layer.check_backward_result`; its ``dx``
    too while recording, when the layer's input is known), so a wrong pair is named at the layer
    that returned it, not by the layer before it."""
    tape = _TAPE.get()
    with at_layer(index, layer) if index is not None else contextlib.nullcontext():
        if tape is None:
            return check_backward_result(layer, params, layer.backward(params, residuals, dy))
        return tape.backward(index, layer, params, residuals, dy)
