"""What a prediction means: the task (multi-class, binary, regression) and per-example correctness."""

from __future__ import annotations

import jax.numpy as jnp

from fnnet.losses import Loss, loss_kind

TASKS = ("multiclass", "binary", "regression")


def resolve_task(loss: Loss, task: str | None) -> str | None:
    """``"multiclass"``, ``"binary"`` or ``None`` (no accuracy), from ``loss.kind`` if not given."""
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task must be 'multiclass', 'binary' or 'regression', got {task!r}")
        return None if task == "regression" else task
    return {"multiclass_logits": "multiclass", "logits": "binary",
            "probabilities": "binary"}.get(loss_kind(loss))


def correct(loss: Loss, task: str | None, pred, y):
    """Per-example correctness in [0, 1], shape ``(B,)`` (None when the task has no accuracy). For
    predictions with more axes (a sequence's ``(B, T, V)`` logits) each example scores the fraction
    of its positions predicted right."""
    if task == "multiclass":
        labels = y if y.ndim == pred.ndim - 1 else jnp.argmax(y, axis=-1)
        hits = (jnp.argmax(pred, axis=-1) == labels).astype(jnp.float32)
        return jnp.mean(hits, axis=tuple(range(1, hits.ndim)))  # a sequence: its fraction of right tokens
    if task == "binary":
        threshold = 0.0 if loss_kind(loss) == "logits" else 0.5  # logits vs sigmoid output
        hits = (pred > threshold) == (y > 0.5)
        return jnp.mean(hits.astype(jnp.float32), axis=tuple(range(1, hits.ndim)))
    return None
