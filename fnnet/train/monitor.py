"""Per-layer health while training, computed inside the compiled step (``fit(..., monitor=N)``).

Every ``N`` steps the step records, for each layer with parameters and each activation, what its
forward and hand-written backward already hold: the activations' mean and standard deviation,
the fraction of dead ReLU units (zero for every example of the batch) or of saturated sigmoid /
tanh outputs, the gradient norm ``‖dθ‖`` and the update-to-weight ratio ``‖Δθ‖ / ‖θ‖`` (Karpathy's
rule of thumb: about 1e-3). The statistics are reductions inside the step (a ``lax.cond`` picks
the observed steps): no host callback per step. They describe the batch's real examples only: the
padded rows of an epoch's short last batch (``weights`` 0) are left out of the activation
statistics, as they are out of the loss and so out of ``‖dθ‖``. A recurrent layer (RNN, LSTM, GRU)
also records how its gradient fares through time (:func:`fnnet.through_time.time_health`:
``time_ratio``, the share of the last output's gradient that reaches step 1, and ``time_factor``,
its average factor per step back; one more forward and backward scan of the layer on observed
steps only). :func:`health_warnings` turns them into the warnings an experienced practitioner
would give, once per layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fnnet.health import ELEMENTWISE, FRACTION_HIGH, activation_stats
from fnnet.layer import layer_kind, layer_label
from fnnet.tape import Tape, subtree
from fnnet.plots import pyplot, save_figure
from fnnet.through_time import TIME_EXPLODING, TIME_VANISHING, is_recurrent, time_health

UPDATE_RATIO_HIGH = 1e-2
"""An update-to-weight ratio above this (sustained) suggests the learning rate is too high."""
DEPTH_SPREAD = 1e3
"""Relative gradient norms (``‖dθ‖/‖θ‖``) of the first and last layers with parameters further
apart than this factor are reported as vanishing or exploding across depth."""

_KEPT = ("mean", "std", "dead", "saturated")


def _norm(tree):
    leaves = [jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.sqrt(sum(leaves)) if leaves else jnp.zeros((), jnp.float32)


def layer_health(tape: Tape, params, new_params, weights=None) -> dict:
    """``{"layer 3 (Relu)": {"mean": ..., "dead": ...}, ...}``: JAX scalars from a step's tape
    (``params`` before the update, ``new_params`` after it: ``‖Δθ‖`` is read from the two, which
    the step holds anyway). Every activation: ``mean``, ``std`` and ``dead`` (ReLU) or
    ``saturated`` (sigmoid, tanh) of its output; every layer with parameters: ``grad_norm``
    ``‖dθ‖``, ``param_norm`` ``‖θ‖`` and ``update_ratio`` ``‖Δθ‖/‖θ‖``. ``weights``: the step's
    0/1 per example (leading axis of every output), whose 0 rows (padding) the activation
    statistics leave out; ``dθ`` has them out already (their loss gradient is scaled to 0). A
    recurrent layer adds ``time_ratio`` and ``time_factor`` (:func:`fnnet.through_time.time_health`)."""
    health = {}
    for index, call in enumerate(tape.leaves()):
        kind = layer_kind(call.layer)
        has_params = bool(jax.tree.leaves(call.params))
        if not has_params and (kind not in ELEMENTWISE or kind == "Identity"):
            continue
        # an activation's output statistics; a layer with parameters: its gradient and update (its
        # output, which XLA may otherwise never write out, is described by the activation after it)
        stats = {} if has_params else {k: v for k, v in activation_stats(kind, call.y, weights=weights).items()
                                       if k in _KEPT}
        if has_params:
            stats["grad_norm"] = _norm(call.dparams)
            old, new = subtree(params, call.path), subtree(new_params, call.path)
            if old is not None and new is not None:
                stats["param_norm"] = _norm(old)
                update = jax.tree.map(lambda a, b: a.astype(jnp.float32) - b.astype(jnp.float32), new, old)
                stats["update_ratio"] = _norm(update) / jnp.maximum(stats["param_norm"], 1e-30)
            if is_recurrent(call.layer) and call.dy is not None:  # padding rows: dy 0, so they add nothing
                stats.update(time_health(call.layer, call.params, call.x, call.dy, state=call.state,
                                         train=call.train))
        health[layer_label(call.path, call.layer)] = {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}
    return health


def masked(health: dict) -> dict:
    """``health`` with every value NaN: what an unobserved step returns (XLA drops the reductions)."""
    return jax.tree.map(lambda v: jnp.full_like(v, jnp.nan), health)


def layer_order(label: str) -> tuple[int, ...]:
    """The path in ``"layer 3/1/0 (Relu)"`` as numbers: labels sort by depth with it."""
    return tuple(int(index) for index in label.split()[1].split("/"))


def record(history, health: dict, steps) -> None:
    """Appends the observed steps (``steps``: the step number of each row) of an epoch's
    ``health`` (each statistic an array with one row per step, NaN where unobserved)."""
    rows = None
    for stats in health.values():
        for values in stats.values():
            rows = ~np.isnan(np.asarray(values))
            break
        break
    if rows is None or not rows.any():
        return
    steps = np.asarray(steps)[rows]
    history.health_steps.extend(int(s) for s in steps)
    for label, stats in health.items():
        series = history.layers.setdefault(label, {})
        for name, values in stats.items():
            kept = np.asarray(values, np.float64)[rows]
            series.setdefault(name, []).extend(None if not math.isfinite(v) else float(v) for v in kept)


def _trailing(values, steps, beyond, least: int | None = None) -> int | None:
    """The first step of the trailing stretch of ``values`` where ``beyond(value)`` holds (at least
    ``least`` records; by default three, or all of them when fewer), or ``None``."""
    count = 0
    for value in reversed(values):
        if value is None or not beyond(value):
            break
        count += 1
    if count == 0 or count < (min(3, len(values)) if least is None else least):
        return None
    return steps[len(values) - count]


def health_warnings(history) -> list[str]:
    """New warnings for the health recorded so far (each layer and kind warned once; the ones
    given are kept in ``history.warnings``): dead or saturated units, a too-large update/weight
    ratio, gradients vanishing or exploding through time (a recurrent layer's ``time_factor``
    below :data:`fnnet.through_time.TIME_VANISHING` or above ``TIME_EXPLODING`` for three records
    in a row) and across depth."""
    given = {w["key"] for w in history.warnings}
    new = []

    def warn(key, step, message):
        if key not in given:
            given.add(key)
            history.warnings.append({"key": key, "step": step, "message": message})
            new.append(message)

    steps = history.health_steps
    for label in sorted(history.layers, key=layer_order):
        stats = history.layers[label]
        for stat, what in (("dead", "dead units"), ("saturated", "saturated outputs")):
            values = stats.get(stat)
            if values:
                since = _trailing(values, steps, lambda value: value >= FRACTION_HIGH)
                if since is not None:
                    warn(f"{label}|{stat}", steps[-1], f"{label}: {values[-1]:.0%} {what} since step {since}")
        _time_warnings(label, stats, steps, warn)
        ratios = [r for r in stats.get("update_ratio", [])[-5:] if r is not None]
        if len(ratios) >= min(3, len(stats.get("update_ratio", []))) and ratios:
            typical = float(np.median(ratios))
            if typical > UPDATE_RATIO_HIGH:
                warn(f"{label}|update_ratio", steps[-1],
                     f"{label}: update/weight ratio {typical:.1e} (typical ~1e-3): the learning rate may be too high")
    relative = []
    for label in sorted(history.layers, key=layer_order):
        stats = history.layers[label]
        grad, weight = (stats.get("grad_norm") or [None])[-1], (stats.get("param_norm") or [None])[-1]
        if grad is not None and weight:
            relative.append((label, grad / weight))
    if len(relative) >= 2:
        (first, low), (last, high) = relative[0], relative[-1]
        if low > 0 and high > 0 and high / low > DEPTH_SPREAD:
            warn("depth|vanishing", steps[-1], f"gradients vanish across depth: ‖dθ‖/‖θ‖ is {low:.1e} at {first} "
                                               f"but {high:.1e} at {last}")
        if low > 0 and high > 0 and low / high > DEPTH_SPREAD:
            warn("depth|exploding", steps[-1], f"gradients explode across depth: ‖dθ‖/‖θ‖ is {low:.1e} at {first} "
                                               f"but {high:.1e} at {last}")
    return new


def _time_warnings(label, stats, steps, warn) -> None:
    """Warns when a recurrent layer's last output's gradient has shrunk (or grown) by more than
    ``TIME_VANISHING`` (``TIME_EXPLODING``) per step back, on average, in the last three records
    (or more: the message gives the step the trailing stretch began at)."""
    factors, ratios = stats.get("time_factor") or [], stats.get("time_ratio") or []
    ratio = ratios[-1] if ratios and ratios[-1] is not None else float("nan")
    for key, beyond, what, advice in (
            ("time_vanishing", lambda f: f < TIME_VANISHING, "vanish",
             "it cannot learn from more than a few steps back"),
            ("time_exploding", lambda f: f > TIME_EXPLODING, "explode", "clip the gradients or lower the learning rate")):
        since = _trailing(factors, steps, beyond, least=3)
        if since is not None:
            warn(f"{label}|{key}", steps[-1],
                 f"{label}: gradients {what} through time: the last output's gradient that reaches step 1 is "
                 f"{ratio:.1e} of its size at the last step (×{factors[-1]:.2g} per step back on average) since "
                 f"step {since}; {advice}")


def plot_health(history, path):
    """Writes ``health.png``: per layer over the steps, the gradient norm, the update/weight ratio
    (with the ~1e-3 rule of thumb) and the dead / saturated fractions."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    steps = history.health_steps
    labels = sorted(history.layers, key=layer_order)
    for ax, stat, title in ((axes[0], "grad_norm", "gradient norm ‖dθ‖"),
                            (axes[1], "update_ratio", "update / weight ‖Δθ‖/‖θ‖")):
        for label in labels:
            values = history.layers[label].get(stat)
            if values:
                ax.plot(steps, [np.nan if v is None else v for v in values], label=label)
        ax.set(yscale="log", xlabel="step", title=title)
    axes[1].axhline(1e-3, color="grey", linestyle="--", label="~1e-3 (rule of thumb)")
    for label in labels:
        for stat, style in (("dead", "-"), ("saturated", ":")):
            values = history.layers[label].get(stat)
            if values:
                axes[2].plot(steps, [np.nan if v is None else v for v in values], style, label=f"{label} {stat}")
    axes[2].set(ylim=(-0.02, 1.02), xlabel="step", title="dead (ReLU) / saturated (σ, tanh) fraction")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
