"""The per-epoch record of a :func:`fnnet.train.fit` run, and its curves."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar

import numpy as np

from fnnet.pages import charts
from fnnet.plots import pyplot, save_figure
from fnnet.train import monitor


class Record:
    """A dataclass of metric lists that round-trips through a checkpoint's JSON metadata, one row
    per epoch (or interval) in the fields named by ``rows``."""

    rows: ClassVar[tuple] = ()

    def append(self, **row) -> None:
        """Records one epoch (or interval): each value appended to the list it names."""
        for name, value in row.items():
            getattr(self, name).append(value)

    def complete(self) -> bool:
        """Whether every row is whole: all ``rows`` fields equally long (an interrupt can land
        between two of :meth:`append`'s appends)."""
        return len({len(getattr(self, name)) for name in self.rows}) <= 1

    def to_dict(self) -> dict:
        """The fields as plain lists and dicts (copied, not deep-copied element by element: a
        checkpoint writes this after every epoch, so it stays linear in the history's length)."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def _repr_html_(self) -> str:
        """A notebook draws the learning curves (and the monitor's health, if recorded) as SVG."""
        record = self.to_dict()
        return charts.styled(charts.history_html(record) + charts.health_html(record))

    @classmethod
    def from_dict(cls, data: dict):
        """The record saved by :meth:`to_dict`; keys it does not know (newer files) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _plain(value):
    """A copy of the lists and dicts in ``value`` (their numbers and strings shared)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) if isinstance(item, (list, tuple, dict)) else item for item in value]
    return value


@dataclasses.dataclass
class History(Record):
    """Per-epoch metrics of a :func:`fit` run."""

    rows: ClassVar[tuple] = ("epoch", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "seconds")

    epoch: list = dataclasses.field(default_factory=list)
    train_loss: list = dataclasses.field(default_factory=list)
    train_accuracy: list = dataclasses.field(default_factory=list)
    eval_loss: list = dataclasses.field(default_factory=list)
    eval_accuracy: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    traces: int = 0
    layers: dict = dataclasses.field(default_factory=dict)
    """With ``fit(..., monitor=N)``: per layer (``"layer 3 (Relu)"``) and statistic (``mean``,
    ``std``, ``dead``, ``saturated``, ``grad_norm``, ``param_norm``, ``update_ratio``) a series with
    one value per step of :attr:`health_steps`."""
    health_steps: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    """The monitor's warnings given so far: ``{"key", "step", "message"}`` each."""

    def __len__(self):
        return len(self.epoch)

    def plot_health(self, path) -> pathlib.Path:
        """Writes the monitor's figure (``health.png``): per layer, gradient norm and update/weight
        ratio over the steps, dead and saturated fractions. Needs ``fit(..., monitor=N)``."""
        if not self.health_steps:
            raise ValueError("plot_health: this history has no per-layer health: train with fit(..., monitor=N)")
        return monitor.plot_health(self, path)

    def line(self, index: int = -1, epochs: int | None = None) -> str:
        """One plain line for epoch ``index``, each metric under its field's name:
        ``epoch 3/12  train_loss 0.1234  train_accuracy 0.9612  eval_loss ...``."""
        parts = [f"epoch {self.epoch[index]}" + (f"/{epochs}" if epochs else "")]
        for name, values in (("train_loss", self.train_loss), ("train_accuracy", self.train_accuracy),
                             ("eval_loss", self.eval_loss), ("eval_accuracy", self.eval_accuracy)):
            if values and values[index] is not None:
                parts.append(f"{name} {values[index]:.4f}")
        parts.append(f"{self.seconds[index]:.2f} s")
        return "  ".join(parts)

    def plot(self, path) -> pathlib.Path:
        """Writes a PNG with the loss and accuracy curves (train and eval) to ``path``."""
        plt = pyplot()
        has_acc = any(a is not None for a in self.train_accuracy + self.eval_accuracy)
        fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4))
        axes = np.atleast_1d(axes)
        for name, values in (("train", self.train_loss), ("eval", self.eval_loss)):
            if any(v is not None for v in values):
                axes[0].plot(self.epoch, values, marker="o", label=name)
        axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
        if has_acc:
            for name, values in (("train", self.train_accuracy), ("eval", self.eval_accuracy)):
                if any(v is not None for v in values):
                    axes[1].plot(self.epoch, values, marker="o", label=name)
            axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)
