"""Combinators: :func:`serial`, the one place that walks layers backwards, and branches.

``serial`` chains layers (``dx`` of layer ``i`` is ``dy`` of layer ``i - 1``). For
branches, as in stax: :func:`FanOut` copies its input to ``n`` branches, :func:`parallel`
runs one layer per branch, :data:`FanInSum` / :func:`FanInConcat` join them, and
:func:`Residual` is ``x + block(x)``. The fan-out's chain rule, *the gradients of the
branches are summed*, is written once, in ``FanOut``'s backward.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp

from fnnet.layer import (ExampleShape, Layer, apply_with_state, as_shape, at_layer, example_shape,
                         init_with_state, is_combinator_kind, is_stateful, layer_children, layer_name, make_layer,
                         spec)
from fnnet.layers.activations import Identity
from fnnet.tape import child_backward, child_forward


def serial(*layers: Layer) -> Layer:
    """Composes layers in sequence; its params are a tuple with one entry per layer.

    ``forward`` runs each layer's forward and keeps every layer's residuals;
    ``backward`` runs the layers' backwards in reverse, passing ``dx`` of layer
    ``i`` on as ``dy`` of layer ``i - 1`` (the chain rule, written once).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(4), fnnet.Tanh, fnnet.Dense(1), fnnet.Sigmoid)
      >>> out_shape, params = model.init(jax.random.PRNGKey(0), (2,))
      >>> out_shape, len(params), model.apply(params, jnp.ones((3, 2))).shape
      ((1,), 4, (3, 1))

    Errors raised inside a layer are re-raised with the layer's path and name (the innermost layer,
    e.g. ``layer 0 (Dense(4)): expected input of shape (..., 2), got (3, 5)``, ``layer 3/1/0 (…): …``).

    Long: a layer is its functions as closures over its children (as stax writes them); each is short.
    """
    for index, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            hint = " (did you forget to call a layer constructor such as Dense(4)?)" if callable(layer) else ""
            raise TypeError(f"serial: argument {index} is not a fnnet.Layer: {layer!r}{hint}")
    layers = tuple(layers)

    def check(params):
        if not isinstance(params, (tuple, list)) or len(params) != len(layers):
            got = f"{len(params)} entries" if isinstance(params, (tuple, list)) else type(params).__name__
            raise ValueError(f"serial: expected params with {len(layers)} entries (one per layer), got {got}")

    def stateful_init(key, in_shape):  # layer i gets split(key)[i]; a plain layer's state is ()
        shape = as_shape(in_shape, "serial")
        keys = jax.random.split(key, max(len(layers), 1))
        params, states = [], []
        for index, (layer, layer_key) in enumerate(zip(layers, keys)):
            with at_layer(index, layer):
                shape, layer_params, layer_state = init_with_state(layer, layer_key, shape)
            params.append(layer_params)
            states.append(layer_state)
        return shape, tuple(params), tuple(states)

    def init(key, in_shape):
        return stateful_init(key, in_shape)[:2]

    def apply(params, x):
        check(params)
        for index, (layer, layer_params) in enumerate(zip(layers, params)):
            with at_layer(index, layer):
                x = layer.apply(layer_params, x)
        return x

    def forward(params, x):
        check(params)
        residuals = []
        for index, (layer, layer_params) in enumerate(zip(layers, params)):
            x, residual, _ = child_forward(index, layer, layer_params, (), x)
            residuals.append(residual)
        return x, tuple(residuals)

    def backward(params, residuals, dy):
        check(params)
        grads = [None] * len(layers)
        for index in reversed(range(len(layers))):
            grads[index], dy = child_backward(index, layers[index], params[index], residuals[index], dy)
        return tuple(grads), dy

    if not any(is_stateful(layer) for layer in layers):
        return make_layer("serial", init, apply, forward, backward, children=layers, doc=serial.__doc__,
                          spec=spec("serial"))

    # With a stateful child (Dropout, BatchNorm): state is a tuple with one entry per layer,
    # and layer i gets the key fold_in(key, i).
    def run(params, state, x, key, train, with_residuals):
        check(params)
        if isinstance(state, (tuple, list)) and len(state) == 0:
            raise ValueError(f"serial: this model has state or randomness ({stateful_names(layers)}) but was "
                             f"given no state: pass model_state= (TrainState.model_state, or the state "
                             f"fnnet.init_with_state returns) to evaluate/predict/apply_with_state, or use "
                             f"fnnet.value_and_grad(model, loss, with_state=True)")
        if not isinstance(state, (tuple, list)) or len(state) != len(layers):
            got = f"{len(state)} entries" if isinstance(state, (tuple, list)) else type(state).__name__
            raise ValueError(f"serial: expected a state with {len(layers)} entries (one per layer, as "
                             f"fnnet.init_with_state returns it), got {got}")
        residuals, states = [], []
        for index, (layer, layer_params, layer_state) in enumerate(zip(layers, params, state)):
            layer_key = None if key is None else jax.random.fold_in(key, index)
            if with_residuals:
                x, residual, layer_state = child_forward(index, layer, layer_params, layer_state, x,
                                                         key=layer_key, train=train)
            else:
                with at_layer(index, layer):
                    x, residual, layer_state = _no_residuals(*apply_with_state(
                        layer, layer_params, layer_state, x, key=layer_key, train=train))
            residuals.append(residual)
            states.append(layer_state)
        return x, tuple(residuals), tuple(states)

    def stateful_apply(params, state, x, *, key=None, train=False):
        y, _, state = run(params, state, x, key, train, with_residuals=False)
        return y, state

    def stateful_forward(params, state, x, *, key=None, train=False):
        return run(params, state, x, key, train, with_residuals=True)

    return make_layer("serial", init, apply, forward, backward, children=layers, doc=serial.__doc__,
                      stateful_init=stateful_init, stateful_apply=stateful_apply,
                      stateful_forward=stateful_forward, spec=spec("serial"))


def stateful_names(layers) -> str:
    """``"BatchNorm(momentum=0.9), Dropout(0.4)"``: the leaf layers with state or randomness."""
    names = []
    for layer in layers:
        if not is_stateful(layer):
            continue
        children = layer_children(layer)
        names.append(stateful_names(children) if children else layer_name(layer))
    return ", ".join(dict.fromkeys(names))


def _no_residuals(y, state):
    return y, None, state


def _check_branches(name, xs, n):
    if not isinstance(xs, (tuple, list)) or len(xs) != n:
        got = f"{len(xs)} inputs" if isinstance(xs, (tuple, list)) else f"one array of shape {jnp.shape(xs)}"
        raise ValueError(f"{name}: expected a tuple of {n} inputs (one per branch), got {got}")


def FanOut(n: int) -> Layer:
    """Copies its input to ``n`` branches: ``y = (x, x, ..., x)``.

    Backward, the chain rule of a fan-out: ``dx = Σ_i dy_i`` (each branch's gradient, summed).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"FanOut: n must be a positive int, got {n!r}")
    name = f"FanOut({n})"

    def init(key, in_shape):
        return (as_shape(in_shape, name),) * n, ()

    def apply(params, x):
        return (x,) * n

    def backward(params, residuals, dys):
        _check_branches(name, dys, n)
        dx = dys[0]
        for dy in dys[1:]:
            dx = dx + dy  # the gradients of the branches add up
        return (), dx

    return make_layer(name, init, apply, lambda params, x: (apply(params, x), None), backward,
                      doc=FanOut.__doc__, spec=spec("FanOut", n=n))


def parallel(*layers: Layer) -> Layer:
    """Runs ``layers[i]`` on the ``i``-th input of a tuple (stax's ``parallel``); params are a tuple.

    Backward: each branch's own backward on its own ``dy``.
    """
    for index, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"parallel: argument {index} is not a fnnet.Layer: {layer!r}")
    layers = tuple(layers)
    n = len(layers)

    def stateful_init(key, in_shapes):  # branch i gets split(key)[i]; a plain branch's state is ()
        _check_branches("parallel", in_shapes, n)
        results = []
        for index, (layer, layer_key, shape) in enumerate(zip(layers, jax.random.split(key, n), in_shapes)):
            with at_layer(index, layer):
                results.append(init_with_state(layer, layer_key, shape))
        return tuple(r[0] for r in results), tuple(r[1] for r in results), tuple(r[2] for r in results)

    def init(key, in_shapes):
        return stateful_init(key, in_shapes)[:2]

    def apply(params, xs):
        _check_branches("parallel", xs, n)
        ys = []
        for index, (layer, p, x) in enumerate(zip(layers, params, xs)):
            with at_layer(index, layer):
                ys.append(layer.apply(p, x))
        return tuple(ys)

    def forward(params, xs):
        _check_branches("parallel", xs, n)
        outs = [child_forward(i, layer, p, (), x) for i, (layer, p, x) in enumerate(zip(layers, params, xs))]
        return tuple(y for y, _, _ in outs), tuple(r for _, r, _ in outs)

    def backward(params, residuals, dys):
        _check_branches("parallel", dys, n)
        outs = [child_backward(i, layer, p, r, dy)
                for i, (layer, p, r, dy) in enumerate(zip(layers, params, residuals, dys))]
        return tuple(g for g, _ in outs), tuple(dx for _, dx in outs)

    if not any(is_stateful(layer) for layer in layers):
        return make_layer("parallel", init, apply, forward, backward, children=layers, doc=parallel.__doc__,
                          spec=spec("parallel"))

    def branch_keys(key):
        return [None if key is None else jax.random.fold_in(key, i) for i in range(n)]

    def stateful_apply(params, state, xs, *, key=None, train=False):
        _check_branches("parallel", xs, n)
        outs = [apply_with_state(layer, p, s, x, key=k, train=train)
                for layer, p, s, x, k in zip(layers, params, state, xs, branch_keys(key))]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

    def stateful_forward(params, state, xs, *, key=None, train=False):
        _check_branches("parallel", xs, n)
        outs = [child_forward(i, layer, p, s, x, key=k, train=train)
                for i, (layer, p, s, x, k) in enumerate(zip(layers, params, state, xs, branch_keys(key)))]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs), tuple(o[2] for o in outs)

    return make_layer("parallel", init, apply, forward, backward, children=layers, doc=parallel.__doc__,
                      stateful_init=stateful_init, stateful_apply=stateful_apply,
                      stateful_forward=stateful_forward, spec=spec("parallel"))


def _fan_in_init(name, join_shapes, params_of=lambda shapes: ()):
    def init(key, in_shapes):
        if not isinstance(in_shapes, (tuple, list)) or not in_shapes or \
                not all(isinstance(s, (tuple, list)) for s in in_shapes):
            raise ValueError(f"{name}: expected a tuple of input shapes (one per branch), got {in_shapes!r}")
        shapes = [as_shape(s, name) for s in in_shapes]
        return join_shapes(shapes), params_of(shapes)
    return init


def _sum_shapes(shapes):
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"FanInSum: every branch must have the same shape, got {shapes}")
    return shapes[0]


def _fan_in_sum_apply(params, xs):
    if not isinstance(xs, (tuple, list)) or not xs:
        raise ValueError(f"FanInSum: expected a tuple of inputs, got {type(xs).__name__}")
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


FanInSum: Layer = make_layer(
    "FanInSum", _fan_in_init("FanInSum", _sum_shapes), _fan_in_sum_apply,
    lambda params, xs: (_fan_in_sum_apply(params, xs), (None,) * len(xs)),
    lambda params, branches, dy: ((), (dy,) * len(branches)), spec=spec("FanInSum"),
    doc="""FanInSum: adds its inputs, ``y = Σ_i x_i`` (any number of branches of one shape).

Backward: ``dx_i = dy`` for every branch (the sum's Jacobian is the identity for each input).

Example:
  >>> import jax.numpy as jnp, fnnet
  >>> fnnet.FanInSum.apply((), (jnp.ones(3), 2 * jnp.ones(3), 3 * jnp.ones(3)))
  Array([6., 6., 6.], dtype=float32)
""")


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenates its inputs along ``axis`` of one example (default ``-1``: the features);
    backward splits ``dy`` back into the branches' sizes.

    ``axis`` counts the axes of one example, as ``init``'s shapes do: ``0`` is an example's
    first axis, ``-1`` its last, whatever the number of leading batch axes (``init`` records
    the example's rank, so ``jax.vmap`` over single examples agrees with a batch).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> join = fnnet.FanInConcat(0)
      >>> out_shape, params = join.init(None, ((4, 5), (2, 5)))
      >>> out_shape, join.apply(params, (jnp.ones((3, 4, 5)), jnp.ones((3, 2, 5)))).shape
      ((6, 5), (3, 6, 5))
    """
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ValueError(f"FanInConcat: axis must be an int, an axis of one example (-1 for features), "
                         f"got {axis!r}")
    name = f"FanInConcat({axis})"

    def join(shapes):
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes) or not -rank <= axis < rank:
            raise ValueError(f"{name}: branches must have the same rank, with axis inside it; got {shapes}")
        where = axis % rank
        if any(s[:where] + s[where + 1:] != shapes[0][:where] + shapes[0][where + 1:] for s in shapes):
            raise ValueError(f"{name}: branches differ outside the concatenation axis: {shapes}")
        return shapes[0][:where] + (sum(s[where] for s in shapes),) + shapes[0][where + 1:]

    def batch_axis(params, xs):
        """``axis`` as an axis of the batch, counted from the end (so leading axes do not matter)."""
        _check_inputs(xs)
        example = example_shape(params)
        if example is not None:
            for x in xs:
                if jnp.ndim(x) < len(example):
                    raise ValueError(f"{name}: expected inputs with examples of rank {len(example)} "
                                     f"(as init was given), got shape {jnp.shape(x)}")
            return axis % len(example) - len(example)
        return axis if axis < 0 else axis + 1 - jnp.ndim(xs[0])  # no recorded rank: one batch axis

    def _check_inputs(xs):
        if not isinstance(xs, (tuple, list)) or not xs:
            raise ValueError(f"{name}: expected a tuple of inputs (one per branch), got {type(xs).__name__}")

    def apply(params, xs):
        return jnp.concatenate(xs, axis=batch_axis(params, xs))

    def forward(params, xs):
        return apply(params, xs), tuple(xs)  # the inputs themselves: their static sizes

    def backward(params, xs, dy):
        where = batch_axis(params, xs)
        cuts = list(itertools.accumulate(x.shape[where] for x in xs))[:-1]
        return params, tuple(jnp.split(dy, cuts, axis=where))

    return make_layer(name, _fan_in_init(name, join, lambda shapes: ExampleShape(shapes[0])), apply, forward,
                      backward, doc=FanInConcat.__doc__, spec=spec("FanInConcat", axis=axis))


def Residual(block: Layer) -> Layer:
    """``y = x + block(x)``: ``serial(FanOut(2), parallel(block, Identity), FanInSum)``.

    Backward: ``dx = dy + block.backward(dy)``, the two paths of the fan-out summed.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> block = fnnet.Residual(fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(4)))
      >>> _, params = block.init(jax.random.PRNGKey(0), (4,))
      >>> block.apply(params, jnp.ones((2, 4))).shape
      (2, 4)
    """
    inner = serial(FanOut(2), parallel(block, Identity), FanInSum)
    parts = layer_children(block) if is_combinator_kind(block, "serial") else (block,)
    return make_layer(f"Residual({' → '.join(layer_name(part) for part in parts)})", inner.init, inner.apply,
                      inner.forward, inner.backward, inner.children, stateful_init=inner.stateful_init,
                      stateful_apply=inner.stateful_apply, stateful_forward=inner.stateful_forward,
                      doc=Residual.__doc__, spec=spec("Residual"))
