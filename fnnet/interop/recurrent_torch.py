"""PyTorch's ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` ↔ fnnet's :func:`fnnet.RNN`, :func:`fnnet.LSTM`,
:func:`fnnet.GRU` and :func:`fnnet.Bidirectional`, both ways (called by :func:`fnnet.interop.from_torch`
and :func:`fnnet.interop.to_torch`).

One torch module of ``num_layers`` layers is as many fnnet layers, side by side in the enclosing
``serial`` (each a :func:`fnnet.Bidirectional` when ``bidirectional=True``), with a
``Dropout(p)`` between two of them where torch has ``dropout=p > 0``. The params are torch's
tensors, transposed, gate order kept (:mod:`fnnet.layers.recurrent`)::

    w_ih = weight_ih_l{k}.T     w_hh = weight_hh_l{k}.T     b_ih = bias_ih_l{k}     b_hh = bias_hh_l{k}

(``..._reverse`` for a Bidirectional's ``"reverse"`` params; no biases with ``bias=False``).

**The tuple.** A torch recurrent module returns ``(output, h_n)`` (an LSTM ``(output, (h_n, c_n))``),
so inside an ``nn.Sequential`` the next module must pick one. :data:`SequenceOutput` picks
``output`` (fnnet's ``return_sequences=True``); :data:`LastHidden` picks the last layer's
``h_n``, both directions side by side, ``(N, D·H)`` (fnnet's ``return_sequences=False``: for
one direction ``output[:, -1]``, for two the forward's last step next to the reverse's first).
Both are small ``torch.nn.Module`` classes made on first use (torch is optional):
``from fnnet.interop import SequenceOutput, LastHidden``. ``to_torch`` writes one after each
recurrent module, ``from_torch`` reads them. A recurrent module nothing picks (passed alone to
``from_torch``, or last in the Sequential) converts as its ``output``.

**Stacks.** ``to_torch`` writes a run of fnnet layers of the same kind, size, bias and direction
(only the last with ``return_sequences=False``), with nothing or the same ``Dropout(p > 0)``
between each two, as one multi-layer module: what ``from_torch`` made of one comes back as it
was. (Two single-layer torch modules one after the other come back as one two-layer module: the
same numbers under other names.)

**Batch first.** fnnet's layers are batch-major: the converted model takes ``(N, T, F)`` whatever
``batch_first`` says. The twin of a time-major module (``batch_first=False``) is the module
with its input's and its ``output``'s first two axes swapped (``h_n`` is ``(layers, N, H)`` in
both, so :data:`LastHidden` gives ``(N, D·H)`` in both). In a time-major model every other module
must act on the last axis alone (``Linear``, ``Embedding``, ``LayerNorm``, ``Dropout``, the
activations), and every recurrent module must be time-major. ``to_torch`` writes
``batch_first=True``. ``proj_size > 0`` has no fnnet twin.

Example:
  >>> import torch
  >>> from fnnet.interop import LastHidden, from_torch, to_torch
  >>> net = torch.nn.Sequential(torch.nn.LSTM(3, 8, num_layers=2, dropout=0.1, batch_first=True), LastHidden(),
  ...                           torch.nn.Linear(8, 2))
  >>> model, params, state = from_torch(net, (5, 3))        # one example: 5 steps of 3 features
  >>> [layer.name for layer in model.children]
  ['LSTM(8)', 'Dropout(0.1)', 'LSTM(8, last step)', 'Dense(2)']
  >>> to_torch(model, params, state)
  Sequential(
    (0): LSTM(3, 8, num_layers=2, batch_first=True, dropout=0.1)
    (1): LastHidden()
    (2): Linear(in_features=8, out_features=2, bias=True)
  )
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from fnnet.interop._torch import ConversionError, import_torch, jax_array, tensor, torch_dtype
from fnnet.layer import Layer, abstract_init, init_with_state, layer_name
from fnnet.layers import GRU, LSTM, RNN, Bidirectional, Dropout

KINDS = ("RNN", "LSTM", "GRU")
"""The fnnet kinds and the torch class names alike."""

PICKERS = ("SequenceOutput", "LastHidden")


# --- the modules that pick from (output, h_n), made on first use ------------------------------------

@functools.cache
def _pickers() -> dict:
    """``{"SequenceOutput": class, "LastHidden": class}``, subclasses of ``torch.nn.Module``."""
    torch = import_torch()

    class SequenceOutput(torch.nn.Module):
        """Picks ``output`` from a recurrent module's ``(output, h_n)``: every step's features,
        ``(N, T, D·H)`` (``(T, N, D·H)`` after a time-major module); fnnet's ``return_sequences=True``."""

        def forward(self, result):
            return result[0]

    class LastHidden(torch.nn.Module):
        """Picks the last layer's ``h_n`` from a recurrent module's ``(output, h_n)``, its directions
        side by side: ``(N, D·H)``; fnnet's ``return_sequences=False``."""

        def forward(self, result):
            output, h_n = result
            h_n = h_n[0] if isinstance(h_n, tuple) else h_n       # an LSTM's (h_n, c_n)
            directions = output.shape[-1] // h_n.shape[-1]
            last = h_n[-directions:]                              # the last layer's: (D, N, H) or unbatched (D, H)
            if last.dim() == 2:
                return last.reshape(-1)
            return last.transpose(0, 1).reshape(last.shape[1], -1)

    for cls in (SequenceOutput, LastHidden):   # pickled by reference: fnnet.interop.recurrent_torch.<name>
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {"SequenceOutput": SequenceOutput, "LastHidden": LastHidden}


def __getattr__(name):
    """``SequenceOutput`` and ``LastHidden``, made (and torch imported) on first access."""
    if name in PICKERS:
        return _pickers()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def picker_name(module) -> str | None:
    """``"SequenceOutput"`` or ``"LastHidden"`` for one of those modules, else ``None``."""
    return next((name for name, cls in _pickers().items() if isinstance(module, cls)), None)


# --- torch → fnnet ---------------------------------------------------------------------------------

def check_time_major(torch, module):
    """A :class:`ConversionError` for a model whose recurrent modules disagree on ``batch_first``, or
    that is time-major and holds a module that does not act on the last axis alone."""
    nn = torch.nn
    named = list(module.named_modules())
    firsts = {m.batch_first for _, m in named if isinstance(m, nn.RNNBase)}
    if len(firsts) > 1:
        raise ConversionError("from_torch: the model mixes batch_first=True and batch_first=False recurrent modules "
                              "(one reads the other's batch axis as time): no fnnet twin")
    if firsts != {False}:
        return
    last_axis = (nn.Sequential, nn.RNNBase, nn.Linear, nn.Embedding, nn.LayerNorm, nn.Dropout, nn.ReLU, nn.Tanh,
                 nn.Sigmoid, nn.Identity, nn.LeakyReLU, nn.GELU, nn.Softmax) + tuple(_pickers().values())
    for name, child in named:
        if not isinstance(child, last_axis):
            raise ConversionError(f"module {name or '0'} ({type(child).__name__}) in a time-major model "
                                  f"(batch_first=False): fnnet's twin is batch-major, so only modules that act on "
                                  f"the last axis alone convert (Linear, Embedding, LayerNorm, Dropout, activations)")


def take_picker(walk, module, where):
    """A :data:`SequenceOutput` or :data:`LastHidden` in a Sequential: no fnnet layer of its own (the
    recurrent module before it returns what it picks), or an error if nothing before it is recurrent."""
    name = picker_name(module)
    if walk.layout == "picked" or (walk.layout == "unpicked" and name == "SequenceOutput"):
        walk.layout = "features"
        return
    if walk.layout == "unpicked":
        raise ConversionError(f"module {where} ({name}) must follow the recurrent module it picks from in the same "
                              f"nn.Sequential (the recurrent module's layers are already converted)")
    raise ConversionError(f"module {where} ({name}) picks from the (output, h_n) of an nn.RNN, nn.LSTM or nn.GRU, "
                          f"and none comes before it")


def check_picked(walk, module, where):
    """An error when ``module`` would receive a recurrent module's ``(output, h_n)`` tuple."""
    if walk.layout == "unpicked":
        raise ConversionError(f"module {where} ({type(module).__name__}) receives a recurrent module's "
                              f"(output, h_n) tuple: put fnnet.interop.SequenceOutput() or LastHidden() before it")


def from_recurrent(torch, module, walk, key, where, following) -> list:
    """``[(layer, params, state), ...]``: one torch recurrent module as its fnnet layers (a Dropout
    between two where torch has ``dropout > 0``); ``following``, the module after it in its
    Sequential (``None``: none), says which output it gives."""
    kind = next(k for k in KINDS if isinstance(module, getattr(torch.nn, k)))
    label = f"module {where} ({type(module).__name__})"
    if getattr(module, "proj_size", 0):
        raise ConversionError(f"{label}: proj_size={module.proj_size} (an LSTM with projections) has no fnnet twin")
    if walk.layout != "features" or len(walk.shape) < 2:
        raise ConversionError(f"{label} needs sequences of features, one example (T, F) in fnnet's layout; the "
                              f"examples have shape {walk.shape} here (give in_shape as (T, F))")
    if module.input_size != walk.shape[-1]:
        raise ConversionError(f"{label}: input_size={module.input_size}, but the examples have {walk.shape[-1]} "
                              f"features here (shape {walk.shape}; in_shape is one example, (T, F))")
    picked = None if following is None else picker_name(following)
    if following is not None and picked is None:
        raise ConversionError(f"{label} returns (output, h_n), which module {type(following).__name__} after it "
                              f"cannot take: put fnnet.interop.SequenceOutput() or LastHidden() between them")
    last, directions = picked == "LastHidden", ("", "_reverse") if module.bidirectional else ("",)
    options = {"activation": module.nonlinearity} if kind == "RNN" else {}
    converted = []
    for k in range(module.num_layers):
        if k and module.dropout > 0:
            converted.append(fill(Dropout(module.dropout), walk, key, {}, label))
        layer = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}[kind](
            module.hidden_size, return_sequences=not (last and k == module.num_layers - 1), use_bias=module.bias,
            **options)
        values = [_direction_values(module, f"l{k}{suffix}", where) for suffix in directions]
        if module.bidirectional:
            layer, values = Bidirectional(layer), {"forward": values[0], "reverse": values[1]}
        converted.append(fill(layer, walk, jax.random.fold_in(key, k), values[0] if len(directions) == 1 else values,
                              label))
    walk.layout = "unpicked" if picked is None else "picked"
    return converted


def _direction_values(module, suffix, where) -> dict:
    """fnnet's params of one layer and direction (``suffix`` ``"l0"``, ``"l1_reverse"``...)."""
    def read(name, transpose=False):   # transposed by torch: no JAX op to compile per shape
        value = getattr(module, f"{name}_{suffix}")
        return jax_array(value.T if transpose else value, f"module {where}: {name}_{suffix}")
    values = {"w_ih": read("weight_ih", True), "w_hh": read("weight_hh", True)}
    if module.bias:
        values.update(b_ih=read("bias_ih"), b_hh=read("bias_hh"))
    return values


def fill(layer: Layer, walk, key, values, label):
    """``(layer, params, state)``: the converted ``values`` (a nested dict), each checked against the
    shape of its place in the params ``init`` declares at the current shape (``jax.eval_shape``:
    no random draw to compile and throw away)."""
    what = f"{label} → {layer_name(layer)}"
    try:
        out_shape, like, like_state = abstract_init(layer, walk.shape)
    except ValueError as error:
        raise ConversionError(f"{what} on examples of shape {walk.shape}: {error}") from None
    paths = jax.tree_util.tree_leaves_with_path(like)
    given = dict(jax.tree_util.tree_leaves_with_path(values))
    for path, shaped in paths:
        if path not in given or given[path].shape != shaped.shape:
            got = given[path].shape if path in given else "nothing"
            raise ConversionError(f"{what}: {jax.tree_util.keystr(path)} has shape {got}, the layer expects "
                                  f"{shaped.shape} on examples of shape {walk.shape}")
    params = jax.tree.unflatten(jax.tree.structure(like), [given[path] for path, _ in paths])
    state = init_with_state(layer, key, walk.shape)[2] if jax.tree.leaves(like_state) else like_state
    walk.shape = tuple(out_shape)
    return layer, params, state


# --- fnnet → torch ---------------------------------------------------------------------------------

def is_recurrent(layer: Layer) -> bool:
    spec = layer.spec
    return spec is not None and (spec.kind in KINDS or (spec.kind == "Bidirectional" and spec["layer"].kind in KINDS))


def _stack_key(spec):
    """What the layers of one torch module share: the spec without ``return_sequences``, and the direction."""
    inner = spec["layer"] if spec.kind == "Bidirectional" else spec
    return inner.kind, tuple(arg for arg in inner.args if arg[0] != "return_sequences"), spec.kind == "Bidirectional"


def _returns_sequences(spec) -> bool:
    return (spec["layer"] if spec.kind == "Bidirectional" else spec)["return_sequences"]


def recurrent_run(children, start) -> tuple[list[int], float | None]:
    """The positions of the recurrent layers from ``start`` that make one torch module (same kind,
    size, bias and direction; only the last returns the last step), and the rate of the
    ``Dropout`` between each two (``None``: none between them)."""
    first = children[start].spec
    run, rate = [start], None
    while _returns_sequences(children[run[-1]].spec):
        nxt, gap = run[-1] + 1, None
        if nxt < len(children) and children[nxt].spec is not None and children[nxt].spec.kind == "Dropout" \
                and children[nxt].spec["rate"] > 0:
            nxt, gap = nxt + 1, children[nxt].spec["rate"]
        fits = nxt < len(children) and is_recurrent(children[nxt]) and \
            _stack_key(children[nxt].spec) == _stack_key(first) and (len(run) == 1 or gap == rate)
        if not fits:
            break
        run.append(nxt)
        rate = gap
    return run, rate


def to_recurrent(torch, children, params, start, walk, label) -> tuple[int, list]:
    """``(next position, [module, picker])``: the run of recurrent layers from ``start`` as one torch
    module (``batch_first=True``), and :data:`SequenceOutput` or :data:`LastHidden` after it."""
    if walk.layout != "features":
        raise ConversionError(f"{label} reads sequences (N, T, F); here PyTorch holds channels-first "
                              f"({walk.layout}) values, which would need a permute: no twin")
    run, rate = recurrent_run(children, start)
    spec = children[start].spec
    bidirectional = spec.kind == "Bidirectional"
    inner = spec["layer"] if bidirectional else spec
    first = params[start]["forward"] if bidirectional else params[start]
    w_ih = np.asarray(first["w_ih"])
    options = {"nonlinearity": inner["activation"]} if inner.kind == "RNN" else {}
    module = getattr(torch.nn, inner.kind)(
        w_ih.shape[0], inner["hidden"], num_layers=len(run), bias=inner["use_bias"], batch_first=True,
        dropout=rate or 0.0, bidirectional=bidirectional, dtype=torch_dtype(torch, w_ih), **options)
    for k, position in enumerate(run):
        layer_params = params[position]
        for suffix, p in ([("", layer_params["forward"]), ("_reverse", layer_params["reverse"])] if bidirectional
                          else [("", layer_params)]):
            getattr(module, f"weight_ih_l{k}{suffix}").copy_(tensor(torch, np.asarray(p["w_ih"]).T))
            getattr(module, f"weight_hh_l{k}{suffix}").copy_(tensor(torch, np.asarray(p["w_hh"]).T))
            if inner["use_bias"]:
                getattr(module, f"bias_ih_l{k}{suffix}").copy_(tensor(torch, p["b_ih"]))
                getattr(module, f"bias_hh_l{k}{suffix}").copy_(tensor(torch, p["b_hh"]))
    picker = "SequenceOutput" if _returns_sequences(children[run[-1]].spec) else "LastHidden"
    return run[-1] + 1, [module, _pickers()[picker]()]
