"""A readable table of a model: each layer, its output shape and parameter count."""

from __future__ import annotations

import dataclasses
import math

import jax

from fnnet.layer import Layer, as_shape, layer_children, layer_name


@dataclasses.dataclass(frozen=True)
class Summary:
    """The rows of :func:`summary`: ``(index, layer name, output shape, parameter count)``."""

    in_shape: tuple
    rows: tuple
    total_params: int

    def __str__(self) -> str:
        header = ("#", "layer", "output shape", "params")
        lines = [("", "input", str(self.in_shape), "")]
        lines += [(index, name, str(shape), f"{count:,}") for index, name, shape, count in self.rows]
        widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [fmt.format(*header), rule] + [fmt.format(*line) for line in lines]
        out += [rule, f"total parameters: {self.total_params:,}"]
        return "\n".join(line.rstrip() for line in out)


def summary(model: Layer, in_shape) -> Summary:
    """Lists each layer of ``model`` (nested ``serial`` flattened, indices like ``1.0``) with its
    output shape and parameter count, and the total. Nothing is computed: shapes come from
    ``jax.eval_shape`` of ``init``.

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
        if not children:
            declared = {}

            def init_params(key):
                declared["out_shape"], params = layer.init(key, shape)
                return params

            params = jax.eval_shape(init_params, jax.random.PRNGKey(0))
            out_shape = declared["out_shape"]
            count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
            rows.append((prefix or "0", layer_name(layer), tuple(out_shape), count))
            return tuple(out_shape)
        for index, child in enumerate(children):
            shape = walk(child, shape, f"{prefix}.{index}" if prefix else str(index))
        return shape

    walk(model, in_shape, "")
    return Summary(in_shape, tuple(rows), sum(row[3] for row in rows))
