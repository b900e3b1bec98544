"""nanoGPT checkpoints in: the ``ckpt.pt`` that nanoGPT's ``train.py`` writes, as an fnnet GPT.

nanoGPT's model is fnnet's :func:`fnnet.gpt.GPT` with three options set: no biases when its
config says ``bias=False`` (``GPTConfig(bias=...)``), the output head tied to the token
embedding (``tie_embeddings=True``: :func:`fnnet.Unembed` inside :func:`fnnet.Tied`) and the
exact GELU (``gelu_approximate=False``, PyTorch's ``nn.GELU()``). The parameters map one to one;
PyTorch's ``Linear`` keeps ``weight`` as ``(out, in)``, fnnet's ``Dense`` ``w`` as ``(in, out)``::

    transformer.wte.weight (V, C)                 Embedding w          (and Unembed: tied)
    transformer.wpe.weight (block, C)             PositionalEmbedding pos
    transformer.h.i.ln_1.weight / .bias           LayerNorm scale / offset
    transformer.h.i.attn.c_attn.weight (3C, C)    CausalSelfAttention w_qkvᵀ   (columns [q | k | v],
    transformer.h.i.attn.c_attn.bias (3C,)        b_qkv                        heads split alike)
    transformer.h.i.attn.c_proj.weight / .bias    w_outᵀ / b_out
    transformer.h.i.mlp.c_fc.weight / .bias       Dense(4C) wᵀ / b
    transformer.h.i.mlp.c_proj.weight / .bias     Dense(C) wᵀ / b
    transformer.ln_f.weight / .bias               the final LayerNorm
    lm_head.weight                                the same tensor as wte (checked)

Dropout: nanoGPT drops after the embeddings, after each block's two projections back into
the residual stream (as fnnet's GPT) and also on the attention weights, which fnnet's
attention does not: evaluation is identical, training with ``dropout > 0`` differs there.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np

from fnnet.gpt import GPT, GPTConfig
from fnnet.host import on_device
from fnnet.interop._torch import host_array
from fnnet.interop.pytorch import ConversionError, import_torch
from fnnet.layer import Layer, abstract_init

COMPILED_PREFIX = "_orig_mod."
"""What ``torch.compile`` puts before every key of a compiled model's state dict."""

MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")
"""The ``model_args`` a nanoGPT checkpoint records (its ``GPTConfig``)."""


def read_checkpoint(path) -> dict:
    """``torch.load`` of a nanoGPT ``ckpt.pt`` on the CPU, tensors and plain Python values only
    (``weights_only=True``: a checkpoint cannot run code). A ConversionError names the file when
    it is missing or not a nanoGPT checkpoint."""
    torch = import_torch()
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such nanoGPT checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    _check_layout(checkpoint, str(path))
    return checkpoint


def _check_layout(checkpoint, where: str) -> None:
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_args" not in checkpoint:
        got = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(f"{where}: not a nanoGPT checkpoint (expected a dict with 'model' and "
                              f"'model_args', as nanoGPT's train.py saves; got {got})")
    missing = [name for name in MODEL_ARGS if name not in checkpoint["model_args"]]
    if missing:
        raise ConversionError(f"{where}: model_args has no {', '.join(missing)}")


def config_from_model_args(model_args: dict) -> GPTConfig:
    """The fnnet :class:`~fnnet.gpt.GPTConfig` of nanoGPT's ``model_args``: its sizes, dropout
    and ``bias``, with the head tied and the exact GELU (nanoGPT's model)."""
    try:
        return GPTConfig(vocab_size=int(model_args["vocab_size"]), block_size=int(model_args["block_size"]),
                         num_layers=int(model_args["n_layer"]), num_heads=int(model_args["n_head"]),
                         features=int(model_args["n_embd"]), dropout=float(model_args["dropout"]),
                         bias=bool(model_args["bias"]), tie_embeddings=True, gelu_approximate=False).check()
    except (TypeError, ValueError) as error:
        raise ConversionError(f"model_args {model_args}: {error}") from None


def from_nanogpt(checkpoint, *, name: str | None = None) -> tuple[Layer, object, GPTConfig]:
    """``(model, params, config)``: a nanoGPT checkpoint as an fnnet GPT.

    ``checkpoint`` is the path of a ``ckpt.pt`` (read with :func:`read_checkpoint`) or the dict
    ``torch.load`` returned: ``{"model": state_dict, "model_args": {...}, ...}`` as nanoGPT's
    ``train.py`` saves it (keys may carry ``torch.compile``'s ``_orig_mod.`` prefix). The
    params keep the checkpoint's dtype (float32 as nanoGPT saves; bfloat16/float16 are
    widened to float32). ``model.apply(params, ids)`` gives nanoGPT's logits for every
    position (its ``forward(idx, targets)``); with ``config.dropout > 0`` the model is
    stateful (:func:`fnnet.apply_with_state`, state ``()`` per layer). ``name`` is what errors
    call the checkpoint (by default its path, or ``checkpoint`` for a dict).

    Raises:
      ConversionError: not a nanoGPT checkpoint, a key missing or left over, a tensor of
        the wrong shape (each named), or an output head not tied to the embedding.
      ImportError: PyTorch is not installed (``pip install 'fnnet[interop]'``).

    Example (with a checkpoint nanoGPT wrote)::

        model, params, config = fnnet.interop.from_nanogpt("out-shakespeare-char/ckpt.pt")
        logits = model.apply(params, ids)            # (B, T, vocab), as nanoGPT's
    """
    where = name or (str(checkpoint) if isinstance(checkpoint, (str, pathlib.Path)) else "checkpoint")
    if isinstance(checkpoint, (str, pathlib.Path)):
        checkpoint = read_checkpoint(checkpoint)
    else:
        import_torch()
        _check_layout(checkpoint, where)
    config = config_from_model_args(checkpoint["model_args"])
    state_dict = {key.removeprefix(COMPILED_PREFIX): value for key, value in checkpoint["model"].items()}
    tensors = _Tensors(state_dict, where)
    wte = tensors.take("transformer.wte.weight", (config.vocab_size, config.features))
    head = tensors.take("lm_head.weight", (config.vocab_size, config.features))
    if not np.array_equal(wte, head):
        raise ConversionError(f"{where}: lm_head.weight differs from transformer.wte.weight; nanoGPT ties "
                              f"them (fnnet's GPTConfig(tie_embeddings=True)), so this is not its model")
    body = [{"pos": tensors.take("transformer.wpe.weight", (config.block_size, config.features))}]
    if config.dropout:
        body.append(())
    body += [_block(tensors, f"transformer.h.{i}.", config) for i in range(config.num_layers)]
    body.append(_layer_norm(tensors, "transformer.ln_f.", config))
    params = jax.tree.map(on_device, ({"w": wte}, tuple(body), ()))  # rearranged on the host, moved once
    tensors.check_all_used()
    model = GPT(config)
    like = abstract_init(model, (config.block_size,))[1]
    if jax.tree.structure(like) != jax.tree.structure(params):  # the map above against the model's own layout
        raise AssertionError(f"from_nanogpt: params laid out as {jax.tree.structure(params)}, the model "
                             f"expects {jax.tree.structure(like)}")
    return model, params, config


class _Tensors:
    """The state dict, taken key by key: each tensor checked for shape, converted once, and
    what is left over reported (a checkpoint of another model is not silently half-read)."""

    IGNORED = (".attn.bias",)
    """nanoGPT's causal-mask buffer (no parameter; present when it was built without flash attention)."""

    def __init__(self, state_dict: dict, where: str):
        self.state_dict, self.where, self.used = state_dict, where, set()

    def take(self, key: str, shape: tuple):
        if key not in self.state_dict:
            raise ConversionError(f"{self.where}: the state dict has no {key!r} (is it a nanoGPT GPT?)")
        tensor = self.state_dict[key]
        if tuple(tensor.shape) != tuple(shape):
            raise ConversionError(f"{self.where}: {key} has shape {tuple(tensor.shape)}, model_args imply {shape}")
        self.used.add(key)
        if tensor.dtype.is_floating_point and tensor.element_size() < 4:
            tensor = tensor.float()  # bfloat16 / float16: widened, exactly
        return host_array(tensor, f"{self.where}: {key}")

    def take_t(self, key: str, shape: tuple):
        """A ``Linear.weight`` ``(out, in)`` as fnnet's ``(in, out)``."""
        return self.take(key, shape[::-1]).T

    def check_all_used(self):
        left = sorted(key for key in self.state_dict
                      if key not in self.used and not key.endswith(self.IGNORED))
        if left:
            raise ConversionError(f"{self.where}: {len(left)} tensors have no place in nanoGPT's GPT: "
                                  f"{', '.join(left[:5])}{'...' if len(left) > 5 else ''}")


def _layer_norm(tensors: _Tensors, prefix: str, config: GPTConfig) -> dict:
    params = {"scale": tensors.take(prefix + "weight", (config.features,))}
    if config.bias:
        params["offset"] = tensors.take(prefix + "bias", (config.features,))
    return params


def _linear(tensors: _Tensors, prefix: str, in_features: int, out_features: int, config: GPTConfig,
            w: str = "w", b: str = "b") -> dict:
    params = {w: tensors.take_t(prefix + "weight", (in_features, out_features))}
    if config.bias:
        params[b] = tensors.take(prefix + "bias", (out_features,))
    return params


def _residual(branch: tuple) -> tuple:
    """The params of :func:`fnnet.Residual` around a branch: ``(FanOut, (branch, Identity), FanInSum)``."""
    return (), (branch, ()), ()


def _block(tensors: _Tensors, prefix: str, config: GPTConfig) -> tuple:
    c = config.features
    dropout = ((),) if config.dropout else ()
    attention = dict(_linear(tensors, prefix + "attn.c_attn.", c, 3 * c, config, "w_qkv", "b_qkv"),
                     **_linear(tensors, prefix + "attn.c_proj.", c, c, config, "w_out", "b_out"))
    attention_branch = (_layer_norm(tensors, prefix + "ln_1.", config), attention) + dropout
    mlp_branch = (_layer_norm(tensors, prefix + "ln_2.", config),
                  _linear(tensors, prefix + "mlp.c_fc.", c, 4 * c, config), (),
                  _linear(tensors, prefix + "mlp.c_proj.", 4 * c, c, config)) + dropout
    return _residual(attention_branch), _residual(mlp_branch)
