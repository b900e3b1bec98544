"""A readable table of a model: each layer, its output shape and parameter count."""

from __future__ import annotations

import dataclasses
import math

import jax

from fnnet.layer import (Layer, abstract_init, as_shape, is_combinator_kind, is_stateful, layer_children,
                         layer_name)
from fnnet.pages import charts


@dataclasses.dataclass(frozen=True)
class Summary:
    """The rows of :func:`summary`: ``(index, layer name, output shape, parameter count, state
    count)``; the state column (BatchNorm's running statistics) is shown when a layer has one."""

    in_shape: tuple
    rows: tuple
    total_params: int
    total_state: int = 0

    def __str__(self) -> str:
        with_state = self.total_state > 0
        header = ("#", "layer", "output shape", "params") + (("state",) if with_state else ())
        lines = [("", "input", str(self.in_shape), "") + (("",) if with_state else ())]
        lines += [(index, name, str(shape), f"{count:,}") + ((f"{state:,}",) if with_state else ())
                  for index, name, shape, count, state in self.rows]
        widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [fmt.format(*header), rule] + [fmt.format(*line) for line in lines]
        out += [rule, f"total parameters: {self.total_params:,}"]
        if with_state:
            out.append(f"total state: {self.total_state:,} (not trained: updated in training, used in evaluation)")
        return "\n".join(line.rstrip() for line in out)

    def _repr_html_(self) -> str:
        return charts.styled(charts.summary_html(self))  # a notebook shows the table


def summary(model: Layer, in_shape) -> Summary:
    """Lists each layer of ``model`` (nested ``serial`` and :func:`fnnet.Tied` flattened, indices like
    ``1.0``, a tied layer's shared params counted once; other combinators such as
    :func:`fnnet.Residual` as one row) with its output shape, parameter
    count and, for layers with state, the number of state values; and the totals. Nothing is
    computed: shapes come from ``jax.eval_shape`` of ``init``.

    Example:
      >>> import fnnet
      >>> print(fnnet.summary(fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(1)), (2,)))
      #  layer     output shape  params
      ---------------------------------
         input     (2,)
      0  Dense(4)  (4,)          12
      1  Relu      (4,)          0
      2  Dense(1)  (1,)          5
      ---------------------------------
      total parameters: 17
    """
    in_shape = as_shape(in_shape, "summary")
    rows = []

    def walk(layer, shape, prefix):
        children = layer_children(layer)
        number = (lambda index: f"{prefix}.{index}" if prefix else str(index))
        if is_combinator_kind(layer, "Tied") and len(children) == 3:
            shape = walk(children[1], walk(children[0], shape, number(0)), number(1))
            out_shape = tuple(abstract_init(children[2], shape)[0])
            rows.append((number(2), f"{layer_name(children[2])} (tied to {number(0)})", out_shape, 0, 0))
            return out_shape
        if not is_combinator_kind(layer, "serial"):  # a layer of your own named "serial" is one row
            out_shape, params, state = abstract_init(layer, shape)
            count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
            state_count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state)) if is_stateful(layer) else 0
            rows.append((prefix or "0", layer_name(layer), tuple(out_shape), count, state_count))
            return tuple(out_shape)
        for index, child in enumerate(children):
            shape = walk(child, shape, number(index))
        return shape

    walk(model, in_shape, "")
    return Summary(in_shape, tuple(rows), sum(row[3] for row in rows), sum(row[4] for row in rows))
