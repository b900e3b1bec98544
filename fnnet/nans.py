"""Where a NaN came from: the first params, forward output, loss, backward gradient or update of
a step that is not finite, named by its layer and path, with the magnitudes that fed it.

``fit`` and ``fit_language_model`` call :func:`debug_nans` when the loss becomes NaN or infinite
(:mod:`fnnet.train.diverged`); users call it on demand.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fnnet.gradcheck._numerics import describe_counts, largest_finite, nonfinite_entries
from fnnet.host import on_device
from fnnet.layer import Layer, layer_label, layer_name, path_text
from fnnet.losses import Loss, loss_name
from fnnet.tape import subtree
from fnnet.tracing import check_labels, record_step

HUGE = 1e15
"""Values past this that fed a layer which then produced a NaN or inf point to a step that grew
too large (lower the learning rate) rather than to the layer's own formula."""
@dataclasses.dataclass
class NonFinite:
    """The first place a step stopped being finite: ``where`` is ``"params"`` (they already were),
    ``"forward"``, ``"loss"`` or ``"backward"``; ``layer_index`` / ``layer_name`` / ``path`` name
    the layer (``None`` for the loss)."""

    where: str
    layer_index: int | None
    layer_name: str | None
    path: str | None
    message: str
    advice: str = ""
    """What to try: lower the learning rate when the values that fed the layer had grown huge,
    check the layer's own functions when they were moderate."""

    def __str__(self) -> str:
        return self.message


def _bad(counts, prefix: str) -> str:
    return "; ".join(f"{prefix}{key} has {describe_counts(n, i)}" for key, n, i in counts[2])


def debug_nans(model: Layer, loss: Loss, params, x, y, *, state=None, key=None, train: bool = True,
               updated_params=None) -> NonFinite | None:
    """Runs one forward and hand-written backward pass layer by layer (eagerly) and names the first
    layer whose params, forward output, or backward ``dx`` / ``dparams`` are not finite, with what
    fed it; ``None`` when everything is finite.

    The walk follows the computation: the params first, then the forward pass in order, the loss,
    the backward pass from the last layer to the first and, given ``updated_params`` (the params
    after the optimizer's step), the update. E.g.
    ``layer 3 (Dense(10)) backward: dparams['w'] has 12 inf (its dy reached 3.1e+38, its input 2.1)``.

    Example:
      >>> import jax, jax.numpy as jnp, fnnet
      >>> model = fnnet.serial(fnnet.Dense(2), fnnet.Relu, fnnet.Dense(1))
      >>> first, relu, last = model.init(jax.random.PRNGKey(0), (3,))[1]
      >>> last = dict(last, w=last["w"].at[0, 0].set(jnp.inf))   # an update made one weight infinite
      >>> print(fnnet.debug_nans(model, fnnet.losses.mse, (first, relu, last), jnp.ones((4, 3)), jnp.zeros((4, 1))))
      layer 2 (Dense(1)) params: its params are not finite before the step: params['w'] has 1 inf (an earlier update made them so)
    """
    x, y = on_device(x), on_device(y)
    check_labels(model, loss, params, x, y, "debug_nans", state=state, key=key)
    leaves, value, pred, dpred, *_ = record_step(model, loss, params, x, y, state, key, train)

    def found(where, index, text):
        call = leaves[index] if index is not None else None
        name = layer_name(call.layer) if call is not None else None
        path = path_text(call.path) if call is not None else None
        label = f"{layer_label(call.path, call.layer)} {where}: " if call is not None else f"{where}: "
        fed = [call.x, call.params] + ([call.dy] if where == "backward" else []) if call is not None else [pred]
        if where in ("params", "update") or max(largest_finite(tree) for tree in fed) > HUGE:
            advice = "lower the learning rate"
        elif call is not None:
            advice = (f"its {where} made them from finite, moderate values: check the layer with "
                      f"fnnet.gradcheck.check_layer (a log of 0, a division by 0?)")
        else:
            advice = "the loss made them from finite, moderate predictions: check its targets"
        return NonFinite(where, index, name, path, label + text, advice)

    for index, call in enumerate(leaves):
        counts = nonfinite_entries(call.params)
        if counts[0] or counts[1]:
            return found("params", index, f"its params are not finite before the step: {_bad(counts, 'params')} "
                                          f"(an earlier update made them so)")
    for index, call in enumerate(leaves):
        counts = nonfinite_entries(call.y)
        if counts[0] or counts[1]:
            return found("forward", index, f"its output has {describe_counts(*counts[:2])} (its input's largest "
                                           f"magnitude {largest_finite(call.x):.3g}, its params' {largest_finite(call.params):.3g})")
    if not np.isfinite(float(value)):
        return found("loss", None, f"the {loss_name(loss)} loss is {float(value)} on finite predictions "
                                   f"(largest |ŷ| {largest_finite(pred):.3g})")
    counts = nonfinite_entries(dpred)
    if counts[0] or counts[1]:
        return found("loss", None, f"the {loss_name(loss)} loss's grad has {describe_counts(*counts[:2])}")
    for index, call in sorted(enumerate(leaves), key=lambda item: (item[1].backward_order is None,
                                                                   item[1].backward_order or 0)):
        if call.backward_order is None:
            continue
        for what, tree in (("dparams", call.dparams), ("dx", call.dx)):
            counts = nonfinite_entries(tree)
            if counts[0] or counts[1]:
                text = _bad(counts, "dparams") if what == "dparams" else f"dx has {describe_counts(*counts[:2])}"
                return found("backward", index, f"{text} (its dy reached {largest_finite(call.dy):.3g}, its input "
                                                f"{largest_finite(call.x):.3g})")
    if updated_params is not None:
        for index, call in enumerate(leaves):
            new = subtree(updated_params, call.path)
            counts = nonfinite_entries(new) if new is not None else (0, 0, [])
            if counts[0] or counts[1]:
                return found("update", index, f"the optimizer's update made {_bad(counts, 'params')} (its gradient "
                                              f"was finite, largest |dparams| {largest_finite(call.dparams):.3g}; its "
                                              f"params' largest |w| {largest_finite(call.params):.3g})")
    return None
