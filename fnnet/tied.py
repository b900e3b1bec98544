"""Weight tying: :func:`Tied`, one set of params read by two layers, and the sum of their two
gradients (the fan-out rule, for weights), as a GPT's head reads its token embedding's table."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnnet.layer import Layer, as_shape, at_layer, init_with_state, is_stateful, layer_name, make_layer, spec
from fnnet.tape import child_backward, child_forward

def Tied(first: Layer, body: Layer, last: Layer) -> Layer:
    """``last(body(first(x)))`` where ``last`` uses ``first``'s params: weight tying, as a GPT's
    output head reads its token embedding's table (``Tied(Embedding(V, C), body, Unembed(V, C))``).

    Params ``(first_params, body_params, ())``: the shared params live once, in the first slot
    (``last`` must take params of the same structure and shapes). Backward: the shared
    params are used twice, so their gradient is the sum of the two uses (the fan-out rule,
    for weights)::

        d_shared = first.backward(...)[0] + last.backward(...)[0]

    ``first`` and ``last`` are plain layers; ``body`` may have state or randomness (Dropout),
    threaded as :func:`fnnet.serial` does (state ``((), body_state, ())``).

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.Tied(fnnet.Embedding(10, 4), fnnet.serial(fnnet.Dense(4), fnnet.Tanh),
      ...                    fnnet.Unembed(10, 4))
      >>> out_shape, params = model.init(jax.random.PRNGKey(0), (3,))
      >>> shared, body, head = params
      >>> out_shape, shared["w"].shape, head, model.apply(params, jnp.array([[1, 2, 3]])).shape
      ((3, 10), (10, 4), (), (1, 3, 10))

    Long: a layer is its functions as closures over its children (as stax writes them); each is short.
    """
    for index, layer in enumerate((first, body, last)):
        if not isinstance(layer, Layer):
            raise TypeError(f"Tied: argument {index} is not a fnnet.Layer: {layer!r}")
    for index, layer in ((0, first), (2, last)):
        if is_stateful(layer):
            raise ValueError(f"Tied: layer {index} ({layer_name(layer)}) has state or randomness; only the "
                             f"body between the tied layers may")
    layers = (first, body, last)
    name = f"Tied({layer_name(first)} ↔ {layer_name(last)})"

    def check(params):
        if not isinstance(params, (tuple, list)) or len(params) != 3:
            got = f"{len(params)} entries" if isinstance(params, (tuple, list)) else type(params).__name__
            raise ValueError(f"{name}: expected params (first_params, body_params, ()), got {got}")

    def stateful_init(key, in_shape):
        first_key, body_key, last_key = jax.random.split(key, 3)
        with at_layer(0, first):
            shape, shared, _ = init_with_state(first, first_key, as_shape(in_shape, name))
        with at_layer(1, body):
            shape, body_params, body_state = init_with_state(body, body_key, shape)
        with at_layer(2, last):
            shape, own, _ = init_with_state(last, last_key, shape)
        mine = jax.tree.map(jnp.shape, shared)
        if jax.tree.structure(own) != jax.tree.structure(shared) or jax.tree.map(jnp.shape, own) != mine:
            raise ValueError(f"{name}: layer 2 ({layer_name(last)}) takes params {jax.tree.map(jnp.shape, own)}, "
                             f"which are not layer 0's ({layer_name(first)}: {mine}): they cannot be tied")
        return shape, (shared, body_params, ()), ((), body_state, ())

    def init(key, in_shape):
        return stateful_init(key, in_shape)[:2]

    def run(params, state, x, key, train):
        check(params)
        shared, body_params, _ = params
        body_key = None if key is None else jax.random.fold_in(key, 1)
        h, first_residuals, _ = child_forward(0, first, shared, (), x)
        h, body_residuals, body_state = child_forward(1, body, body_params, state[1], h, key=body_key, train=train)
        y, last_residuals, _ = child_forward(2, last, shared, (), h)
        return y, (first_residuals, body_residuals, last_residuals), ((), body_state, ())

    def apply(params, x):
        check(params)
        shared, body_params, _ = params
        with at_layer(0, first):
            h = first.apply(shared, x)
        with at_layer(1, body):
            h = body.apply(body_params, h)
        with at_layer(2, last):
            return last.apply(shared, h)

    def forward(params, x):
        y, residuals, _ = run(params, ((), (), ()), x, None, False)
        return y, residuals

    def backward(params, residuals, dy):
        check(params)
        shared, body_params, _ = params
        first_residuals, body_residuals, last_residuals = residuals
        d_last, dy = child_backward(2, last, shared, last_residuals, dy)
        d_body, dy = child_backward(1, body, body_params, body_residuals, dy)
        d_first, dx = child_backward(0, first, shared, first_residuals, dy)
        d_shared = jax.tree.map(jnp.add, d_first, d_last)  # the shared params' two uses, summed
        return (d_shared, d_body, ()), dx

    if not is_stateful(body):
        return make_layer(name, init, apply, forward, backward, children=layers, doc=Tied.__doc__,
                          spec=spec("Tied"))

    def check_state(state):
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise ValueError(f"{name}: expected a state ((), body_state, ()) as fnnet.init_with_state returns "
                             f"it, got {state!r:.80}")

    def stateful_apply(params, state, x, *, key=None, train=False):
        check_state(state)
        y, _, state = run(params, state, x, key, train)
        return y, state

    def stateful_forward(params, state, x, *, key=None, train=False):
        check_state(state)
        return run(params, state, x, key, train)

    return make_layer(name, init, apply, forward, backward, children=layers, doc=Tied.__doc__,
                      stateful_init=stateful_init, stateful_apply=stateful_apply,
                      stateful_forward=stateful_forward, spec=spec("Tied"))
