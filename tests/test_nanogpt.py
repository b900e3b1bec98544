"""nanoGPT checkpoints in: a nanoGPT-style PyTorch model (written here, with nanoGPT's parameter
names and layout), saved as nanoGPT's train.py saves it, converted, gives the same logits and the
same loss gradients; ``fnnet convert nanogpt`` makes it a run folder that sample, eval, trace and
train --resume take."""

import json
import math
import pathlib
import pickle

import jax
import numpy as np
import pytest

import fnnet
from fnnet.app import cli

torch = pytest.importorskip("torch", reason="the interop extra: pip install 'fnnet[interop]'")
from fnnet.interop import ConversionError, from_nanogpt  # noqa: E402

nn, F = torch.nn, torch.nn.functional


class NanoLayerNorm(nn.Module):
    """LayerNorm with an optional bias, over the last axis (eps 1e-5)."""

    def __init__(self, features, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    """Causal self-attention: one fused ``c_attn`` projection split into q, k, v, heads of C/H."""

    def __init__(self, features, heads, bias):
        super().__init__()
        self.c_attn = nn.Linear(features, 3 * features, bias=bias)
        self.c_proj = nn.Linear(features, features, bias=bias)
        self.heads = heads

    def forward(self, x):
        batch, length, features = x.shape
        q, k, v = self.c_attn(x).split(features, dim=2)
        q, k, v = (t.view(batch, length, self.heads, features // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(features // self.heads)
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return self.c_proj((weights @ v).transpose(1, 2).reshape(batch, length, features))


class NanoMLP(nn.Module):
    def __init__(self, features, bias):
        super().__init__()
        self.c_fc = nn.Linear(features, 4 * features, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * features, features, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class NanoBlock(nn.Module):
    def __init__(self, features, heads, bias):
        super().__init__()
        self.ln_1, self.attn = NanoLayerNorm(features, bias), NanoAttention(features, heads, bias)
        self.ln_2, self.mlp = NanoLayerNorm(features, bias), NanoMLP(features, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT: ``transformer.{wte, wpe, h.i, ln_f}`` and ``lm_head`` tied to ``wte``."""

    def __init__(self, n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout=0.0):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([NanoBlock(n_embd, n_head, bias) for _ in range(n_layer)]),
            ln_f=NanoLayerNorm(n_embd, bias)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight   # tied
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in self.named_parameters():  # non-trivial values everywhere (LayerNorms too)
                param.copy_(0.3 * torch.randn(param.shape, generator=generator) + (1.0 if "ln" in name and
                                                                                  "weight" in name else 0.0))

    def forward(self, idx):
        positions = torch.arange(idx.shape[1])
        x = self.transformer.wte(idx) + self.transformer.wpe(positions)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def _save_like_nanogpt(model, model_args, path, *, compiled=False):
    """``torch.save`` of the dict nanoGPT's train.py writes (optimizer state, iteration, config)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state_dict = model.state_dict()
    if compiled:
        state_dict = {"_orig_mod." + key: value for key, value in state_dict.items()}
    torch.save({"model": state_dict, "optimizer": optimizer.state_dict(), "model_args": model_args,
                "iter_num": 250, "best_val_loss": torch.tensor(1.4697), "config": {"dataset": "shakespeare_char"}},
               path)
    return path


def _model_args(bias=True, vocab_size=13, dropout=0.0):
    return dict(n_layer=2, n_head=2, n_embd=8, block_size=6, bias=bias, vocab_size=vocab_size, dropout=dropout)


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("bias,compiled", [(True, False), (False, True)], ids=["bias", "no bias, compiled"])
def test_converted_checkpoint_gives_nanogpts_logits_and_gradients(tmp_path, bias, compiled):
    args = _model_args(bias=bias)
    torch_model = NanoGPT(**args)
    path = _save_like_nanogpt(torch_model, args, tmp_path / "ckpt.pt", compiled=compiled)
    model, params, config = from_nanogpt(path)
    assert (config.tie_embeddings, config.bias, config.gelu_approximate) == (True, bias, False)
    assert (config.num_layers, config.num_heads, config.features, config.block_size) == (2, 2, 8, 6)

    ids = torch.randint(0, 13, (3, 6), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 13, (3, 6), generator=torch.Generator().manual_seed(2))
    logits = torch_model(ids)
    apply = jax.jit(model.apply)
    ours = np.asarray(apply(params, ids.numpy().astype(np.int32)))
    assert _relative(ours, logits.detach().numpy()) <= 1e-5
    shorter = np.asarray(apply(params, ids[:, :4].numpy().astype(np.int32)))   # T < block_size
    assert _relative(shorter, torch_model(ids[:, :4]).detach().numpy()) <= 1e-5

    # the loss gradients: fnnet's hand-written backward (the tied table's two uses summed) vs autograd
    F.cross_entropy(logits.reshape(-1, 13), targets.reshape(-1)).backward()
    loss, grads = jax.jit(fnnet.value_and_grad(model, fnnet.losses.softmax_cross_entropy))(
        params, ids.numpy().astype(np.int32), targets.numpy().astype(np.int32))
    torch_grads = {key: param.grad for key, param in torch_model.named_parameters()}
    checkpoint = {"model": {key: torch_grads.get(key, param) for key, param in torch_model.state_dict().items()},
                  "model_args": args}
    checkpoint["model"]["lm_head.weight"] = torch_grads["transformer.wte.weight"]  # tied: one gradient
    _, grads_in_our_layout, _ = from_nanogpt(checkpoint)   # torch's gradients, laid out as fnnet's params
    scale = max(float(g.abs().max()) for g in torch_grads.values())
    for (path_, ours_), (_, theirs) in zip(jax.tree_util.tree_leaves_with_path(grads),
                                          jax.tree_util.tree_leaves_with_path(grads_in_our_layout)):
        error = float(np.max(np.abs(np.asarray(ours_) - np.asarray(theirs))))   # on the host: no program per shape
        assert error <= 1e-5 * scale, (jax.tree_util.keystr(path_), error, scale)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits.detach().reshape(-1, 13), targets.reshape(-1))),
                                        rel=1e-5)


def test_a_checkpoint_with_dropout_converts_to_a_stateful_model_that_evaluates_the_same():
    args = dict(_model_args(), dropout=0.2)               # shakespeare_char's setting
    torch_model = NanoGPT(**args).eval()
    model, params, config = from_nanogpt({"model": torch_model.state_dict(), "model_args": args})
    assert config.dropout == 0.2 and fnnet.is_stateful(model)
    _, _, state = fnnet.init_with_state(model, jax.random.PRNGKey(0), (6,))
    ids = torch.randint(0, 13, (2, 6), generator=torch.Generator().manual_seed(3))
    logits = jax.jit(lambda p, s, x: fnnet.apply_with_state(model, p, s, x, train=False)[0])(
        params, state, ids.numpy().astype(np.int32))
    assert _relative(np.asarray(logits), torch_model(ids).detach().numpy()) <= 1e-5


def test_checkpoints_that_are_not_nanogpts_are_named(tmp_path):
    args = _model_args()
    torch_model = NanoGPT(**args)
    good = torch_model.state_dict()
    with pytest.raises(ConversionError, match="no such nanoGPT checkpoint file"):
        from_nanogpt(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="junk.pt: not a readable PyTorch checkpoint"):
        from_nanogpt(tmp_path / "junk.pt")
    with pytest.raises(ConversionError, match="not a nanoGPT checkpoint.*'model' and 'model_args'"):
        from_nanogpt({"state_dict": good})
    with pytest.raises(ConversionError, match=r"transformer.wte.weight has shape \(13, 8\), model_args imply \(13, 4\)"):
        from_nanogpt({"model": good, "model_args": dict(args, n_embd=4, n_head=1)})
    without = {k: v for k, v in good.items() if k != "transformer.h.1.attn.c_proj.bias"}
    with pytest.raises(ConversionError, match="no 'transformer.h.1.attn.c_proj.bias'"):
        from_nanogpt({"model": without, "model_args": args})
    extra = dict(good, **{"transformer.h.2.ln_1.weight": torch.ones(8)})
    with pytest.raises(ConversionError, match="1 tensors have no place.*transformer.h.2.ln_1.weight"):
        from_nanogpt({"model": extra, "model_args": args})
    untied = dict(good, **{"lm_head.weight": good["lm_head.weight"] + 1})
    with pytest.raises(ConversionError, match="lm_head.weight differs from transformer.wte.weight"):
        from_nanogpt({"model": untied, "model_args": args})


def _meta(path, vocab):
    with open(path, "wb") as file:
        pickle.dump({"vocab_size": len(vocab), "itos": dict(enumerate(vocab)),
                     "stoi": {c: i for i, c in enumerate(vocab)}}, file)
    return path


def test_fnnet_convert_nanogpt_then_sample_eval_trace_and_fine_tune(tmp_path, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    vocab = fnnet.datasets.tiny_shakespeare().vocab
    args = dict(_model_args(bias=False, vocab_size=65), block_size=16)
    torch_model = NanoGPT(**args)
    ckpt = _save_like_nanogpt(torch_model, args, tmp_path / "ckpt.pt", compiled=True)
    out = tmp_path / "run"
    assert cli.main(["convert", "nanogpt", str(ckpt), "--meta", str(_meta(tmp_path / "meta.pkl", vocab)),
                     "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["layers"], config["bias"], config["tie_embeddings"], config["vocab"]) == (2, False, True, vocab)

    run = fnnet.load_run(out)   # the run's model is nanoGPT's: the same logits
    ids = np.array([[vocab.index(c) for c in "ROMEO:\nWhat say"]], np.int32)
    assert _relative(np.asarray(jax.jit(run.model.apply)(run.params, ids)),
                     torch_model(torch.from_numpy(ids).long()).detach().numpy()) <= 1e-5
    capsys.readouterr()
    assert cli.main(["sample", str(out), "--prompt", "ROMEO:", "--tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert cli.main(["trace", str(out), "--examples", "2"]) == 0
    traced = capsys.readouterr().out   # every layer's backward (the tied head's too) agrees with jax.vjp
    assert "every backward agrees with jax.vjp" in traced and "Unembed(65, 8)" in traced and "Gelu(exact)" in traced
    loss = run.evaluate(fnnet.datasets.tiny_shakespeare().val[:2000])["loss"]
    assert math.isfinite(loss)
    assert cli.main(["eval", str(out)]) == 0 and "validation loss" in capsys.readouterr().out

    # fine-tuning: --resume keeps the converted model's size and form; the loss goes down
    assert cli.main(["train", "shakespeare", "--resume", "--out", str(out), "--steps", "30", "--eval-interval", "30",
                     "--eval-batches", "2", "--quiet"]) == 0
    tuned = fnnet.load_run(out)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30
    assert tuned.evaluate(fnnet.datasets.tiny_shakespeare().val[:2000])["loss"] < loss


def test_fnnet_convert_says_why_a_vocabulary_does_not_fit(tmp_path, capsys, monkeypatch, shakespeare_data):
    monkeypatch.setenv("FNNET_DATA", str(shakespeare_data))
    args = _model_args(vocab_size=13)
    ckpt = _save_like_nanogpt(NanoGPT(**args), args, tmp_path / "ckpt.pt")
    assert cli.main(["convert", "nanogpt", str(ckpt), "--out", str(tmp_path / "a")]) == 2
    assert "a vocabulary of 13 tokens, not Tiny Shakespeare's 65 characters; pass --meta" in capsys.readouterr().err
    assert cli.main(["convert", "nanogpt", str(ckpt), "--meta", str(_meta(tmp_path / "m.pkl", "abc")),
                     "--out", str(tmp_path / "b")]) == 2
    assert "3 characters, but" in capsys.readouterr().err
    untied = torch.load(ckpt, weights_only=True)
    untied["model"]["lm_head.weight"] = untied["model"]["lm_head.weight"] + 1
    torch.save(untied, tmp_path / "untied.pt")
    assert cli.main(["convert", "nanogpt", str(tmp_path / "untied.pt"), "--out", str(tmp_path / "u")]) == 2
    assert f"{tmp_path / 'untied.pt'}: lm_head.weight differs from transformer.wte.weight" in capsys.readouterr().err
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"itos": {0: "a"}, "x": pathlib.PurePosixPath("x")}))
    assert cli.main(["convert", "nanogpt", str(ckpt), "--meta", str(tmp_path / "evil.pkl"),
                     "--out", str(tmp_path / "c")]) == 2
    assert "not a nanoGPT meta.pkl" in capsys.readouterr().err
    # another vocabulary: sampling works, evaluating on Tiny Shakespeare's ids is refused
    assert cli.main(["convert", "nanogpt", str(ckpt), "--meta", str(_meta(tmp_path / "m13.pkl", "abcdefghijklm")),
                     "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert cli.main(["sample", str(tmp_path / "d"), "--prompt", "abc", "--tokens", "5"]) == 0
    assert cli.main(["eval", str(tmp_path / "d")]) == 2
    assert "not Tiny Shakespeare's" in capsys.readouterr().err
