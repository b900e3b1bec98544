"""What a gradient check returns: a :class:`Report` of :class:`Row` s (one per gradient leaf, with
its errors against autodiff and finite differences), its table, and the :class:`GradientMismatch`
a failed check raises."""

from __future__ import annotations

import dataclasses

import numpy as np

from fnnet.gradcheck._numerics import worst as _worst


class GradientMismatch(AssertionError):
    """A hand-written gradient disagrees with autodiff or finite differences."""

    def __init__(self, message: str, report: "Report"):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True)
class Row:
    """One gradient leaf: where it is and how far it is from the references."""

    layer: str
    param: str
    max_abs_error: float
    max_rel_error: float
    fd_rel_error: float
    passed: bool
    fd_skipped: int = 0
    """Random directions skipped because every step crossed a kink."""


@dataclasses.dataclass(frozen=True)
class Report:
    """The result of a gradient check: one :class:`Row` per gradient leaf."""

    subject: str
    rows: tuple[Row, ...]
    culprit: str | None = None
    """For :func:`check_model`: the first layer whose own check fails, with what failed."""
    culprit_path: str | None = None
    """That layer's path, as :func:`fnnet.trace` writes it (``"3/1/0"``; ``""`` for the model itself)."""
    failure: str | None = None
    """Why the check could not compare gradients leaf by leaf (a backward that returns the wrong
    tree, a forward that differs from apply): a report with a failure has not passed."""

    @property
    def passed(self) -> bool:
        return self.failure is None and all(row.passed for row in self.rows)

    @property
    def worst_rel_error(self) -> float:
        """The largest relative error of any row (``inf`` for a failure or a NaN)."""
        if self.failure is not None:
            return float("inf")
        return _worst(row.max_rel_error for row in self.rows)

    def __str__(self) -> str:
        table = format_table(self.rows)
        return f"FAILED: {self.failure}\n{table}" if self.failure else table


def format_table(rows) -> str:
    """A fixed-width table of :class:`Row` s."""
    header = ("layer", "param", "max abs err", "max rel err", "fd rel err", "fd skipped", "result")
    lines = [(r.layer, r.param, f"{r.max_abs_error:.2e}", f"{r.max_rel_error:.2e}",
              "n/a" if np.isnan(r.fd_rel_error) else f"{r.fd_rel_error:.2e}", str(r.fd_skipped),
              "pass" if r.passed else "FAIL") for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(line.rstrip() for line in out)
