"""Data going in: moved to the device once, and checked on the host before anything compiles.

A library sold on verified gradients must not train silently on wrong input. Each check
raises a ``ValueError`` that names the function, the array and the first bad entry:

* NaN or inf anywhere in ``x`` or ``y`` (train and eval data);
* integer labels outside ``[0, K)`` for a ``"multiclass_logits"`` loss with ``K`` outputs
  (``jax.nn.one_hot`` would silently turn label ``K`` into an all-zero row);
* targets outside [0, 1] for the binary losses, and model outputs outside [0, 1] for
  ``"probabilities"`` (logits given to :data:`fnnet.losses.binary_cross_entropy`);
* ``params`` that do not fit the model for the data's example shape (e.g. made with
  ``model.init(key, x.shape)``, the batch axis included, instead of ``x.shape[1:]``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.host import on_device
from fnnet.layer import ExampleShape, Layer, abstract_init, apply_with_state, describe_path
from fnnet.losses import Loss, first_bad as _first_bad, loss_kind, loss_name


def check_finite(array, where: str, what: str) -> None:
    """Raises ValueError if the floating ``array`` holds NaN or inf."""
    if not jnp.issubdtype(jnp.result_type(array), jnp.inexact):
        return
    values = np.asarray(array)
    finite = np.isfinite(values)
    if not finite.all():
        bad = ~finite
        raise ValueError(f"{where}: {what} has {int(bad.sum())} NaN or infinite value(s), the first at "
                         f"index {_first_bad(bad)} ({values[np.unravel_index(np.argmax(bad), bad.shape)]}); "
                         f"clean or drop them before training")


def as_arrays(data, where: str):
    """``(x, y)`` on the device, with the same number of examples, non-empty and finite."""
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError(f"{where}: data must be a pair (x, y), got {type(data).__name__}") from None
    for name, array in (("x", x), ("y", y)):
        check_finite(array, where, name)
    x, y = on_device(x, copy=False), on_device(y, copy=False)  # used while the call runs: no second copy
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: x and y must have the same number of examples on axis 0, "
                         f"got x {x.shape} and y {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: the data set is empty")
    return x, y


def out_shape(model: Layer, in_shape) -> tuple:
    """The output shape (one example) that ``model.init`` declares for ``in_shape``; nothing computed."""
    return tuple(abstract_init(model, tuple(in_shape))[0])


def check_outputs(loss: Loss, model: Layer, params, x, where: str, sample: int = 256, model_state=()) -> None:
    """For a ``"probabilities"`` loss, runs the model on the first ``sample`` examples and raises
    ValueError if an output lies outside [0, 1] (logits given to a probability loss)."""
    if loss_kind(loss) != "probabilities":
        return
    outputs = np.asarray(jax.jit(lambda p, s, x: apply_with_state(model, p, s, x)[0])(params, model_state,
                                                                                     x[:sample]))
    if outputs.size and (outputs.min() < 0 or outputs.max() > 1):
        raise ValueError(
            f"{where}: {loss_name(loss)} takes probabilities in [0, 1] (e.g. after fnnet.Sigmoid), but "
            f"the model's outputs on the first {min(sample, x.shape[0])} examples range over "
            f"[{outputs.min():.4g}, {outputs.max():.4g}]; for logits use "
            f"fnnet.losses.sigmoid_binary_cross_entropy")


def _is_recorded_shape(node) -> bool:
    return isinstance(node, ExampleShape)


def _recorded_shapes(tree):
    """``(path, shape)`` of each :class:`fnnet.layer.ExampleShape` in ``tree`` (Flatten's, Reshape's...)."""
    return [(path, node.shape) for path, node in
            jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_recorded_shape)[0] if _is_recorded_shape(node)]


def _erase_recorded_shapes(tree):
    """``tree`` with every recorded example shape blanked, so trees compare by their arrays alone."""
    return jax.tree.map(lambda node: ExampleShape(()) if _is_recorded_shape(node) else node, tree,
                        is_leaf=_is_recorded_shape)


def check_params(model: Layer, params, in_shape, where: str, batch: int = 1):
    """Raises ValueError unless ``params`` have the structure and shapes that ``model.init``
    gives for examples of shape ``in_shape``; returns the output shape. When they fit
    ``(batch,) + in_shape`` instead, the message says the batch axis was included."""
    declared_shape, expected, _ = abstract_init(model, tuple(in_shape))

    def fits(reference):
        if jax.tree.structure(reference) != jax.tree.structure(params):
            return False
        return all(jnp.shape(a) == b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)))

    if fits(expected):
        return tuple(declared_shape)
    recorded = _recorded_shapes(params)
    erased, expected_erased = _erase_recorded_shapes(params), _erase_recorded_shapes(expected)
    hint = ""
    try:
        batched = (batch,) + tuple(in_shape)
        if fits(abstract_init(model, batched)[1]):
            hint = (f"; they fit examples of shape {batched}: were they made with the batch axis in "
                    f"in_shape? model.init takes one example's shape, x.shape[1:] = {tuple(in_shape)}")
    except Exception:  # noqa: BLE001 - only a hint
        pass
    paths = jax.tree_util.tree_flatten_with_path(expected_erased)[0]
    got = jax.tree.leaves(erased)
    detail = ""
    if jax.tree.structure(expected_erased) == jax.tree.structure(erased):
        for (path, ref), leaf in zip(paths, got):
            if jnp.shape(leaf) != ref.shape:
                detail = (f": {describe_path(model, path)} expected shape {ref.shape}, "
                          f"got {jnp.shape(leaf)}")
                break
        else:
            for (path, want), have in zip(_recorded_shapes(expected), recorded):
                if want != have:
                    detail = (f": {describe_path(model, path)} recorded examples of shape {have[1]}, "
                              f"expected {want[1]}")
                    break
    else:
        detail = f": expected tree {jax.tree.structure(expected_erased)}, got {jax.tree.structure(erased)}"
    raise ValueError(f"{where}: params do not fit the model for examples of shape {tuple(in_shape)}"
                     f"{detail}{hint}")
