"""What every layer checks and works out, written once: its params' keys, the params' dtype
policy, and the geometry of a window sliding over spatial axes (convolutions and pools)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def param_dtype(dtype):
    """The dtype a layer's params are created in: ``dtype``, or JAX's default float (float32, or
    float64 when x64 is enabled) when it is ``None``."""
    return dtype if dtype is not None else jnp.result_type(float)


def check_param_keys(name: str, params, keys) -> None:
    """Raises ValueError naming the layer unless ``params`` is a dict with exactly ``keys``."""
    if not isinstance(params, dict) or set(params) != set(keys):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{name}: expected params {sorted(keys)}, got {got}")


def positive_ints(value, rank: int, what: str, name: str) -> tuple[int, ...]:
    """``value`` (an int, or a tuple of ``rank`` positive ints) as a tuple of ``rank`` positive ints."""
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{name}: {what} must be a positive int or a tuple of {rank} positive ints, "
                         f"got {value!r}")
    return values


def padding_spec(padding, rank: int, name: str):
    """``"SAME"``, ``"VALID"`` or ``rank`` non-negative ``(low, high)`` pairs, checked."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{name}: padding must be 'SAME', 'VALID' or {rank} (low, high) pairs, "
                             f"got {padding!r}")
        return padding.upper()
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: padding must be 'SAME', 'VALID' or {rank} (low, high) pairs, "
                         f"got {padding!r}") from None
    if len(pairs) != rank or any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"{name}: padding must be {rank} non-negative (low, high) pairs, got {padding!r}")
    return pairs


def explicit_padding(padding, sizes, kernel, strides, dilation):
    """``(lo, hi)`` per spatial axis for ``"SAME"`` / ``"VALID"`` / explicit pairs (as XLA pads)."""
    if not isinstance(padding, str):
        return tuple(padding)
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    return tuple(map(tuple, lax.padtype_to_pads(sizes, effective, strides, padding)))


def out_size(size: int, kernel: int, stride: int, dilation: int, lo: int, hi: int) -> int:
    """Output length of a window of ``kernel`` taps (dilated) sliding by ``stride`` over a padded axis."""
    return (size + lo + hi - ((kernel - 1) * dilation + 1)) // stride + 1


def window_geometry(sizes, kernel, strides, dilation, padding, name: str | None = None):
    """``(pads, out_sizes)`` of a window sliding over spatial ``sizes`` (convolutions and pools).
    With ``name``, an input too small for the window is a ValueError naming the layer."""
    pads = explicit_padding(padding, sizes, kernel, strides, dilation)
    out_sizes = tuple(out_size(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi)
                      in zip(sizes, kernel, strides, dilation, pads))
    if name is not None and any(o < 1 for o in out_sizes):
        raise ValueError(f"{name}: input of spatial size {tuple(sizes)} is too small for a "
                         f"{'x'.join(map(str, kernel))} window (dilation {tuple(dilation)}, padding {pads})")
    return pads, out_sizes
