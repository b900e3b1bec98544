"""nanoGPT's Tiny Shakespeare recipe in PyTorch eager, as ``fnnet train shakespeare`` runs it.

The same model (``benchmarks/contenders/gpt.py``'s nanoGPT-style module), data split (first 90% train,
last 10% validation), optimizer (AdamW, β₂ 0.99, weight decay 0.1 on matrices, 100 warmup
steps to 2e-3, cosine to 1e-4 at 2,000 steps, clipping at 1.0), batch 12 of 64 characters,
2,000 steps, a validation estimate of 20 batches every 250 steps, and the final exact
validation loss over the whole split in consecutive windows. 2 threads. Prints one JSON
line. Run: ``python benchmarks/pytorch_shakespeare.py`` (``FNNET_DATA`` or ``../shared/data``).
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from contenders.gpt import torch_gpt, torch_train_step  # noqa: E402

STEPS, BATCH, BLOCK, LR, MIN_LR, WARMUP, EVAL_INTERVAL, EVAL_BATCHES = 2000, 12, 64, 2e-3, 1e-4, 100, 250, 20
SEED = 0


def _options() -> None:
    """``[--lr LR] [--seed S] [--eval-interval N]``: benchmarks/speedrun.py runs nanoGPT's own CPU recipe
    (``--lr 1e-3``, its README's command) with seeds and a finer curve."""
    global LR, SEED, EVAL_INTERVAL
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--eval-interval", type=int, default=EVAL_INTERVAL)
    args = parser.parse_args()
    LR, SEED, EVAL_INTERVAL = args.lr, args.seed, args.eval_interval


def find_text() -> pathlib.Path:
    here = pathlib.Path(__file__).resolve().parents[1]
    for root in (os.environ.get("FNNET_DATA"), here.parent / "shared" / "data",
                 pathlib.Path.home() / ".cache" / "fnnet"):
        if root and (pathlib.Path(root) / "tinyshakespeare" / "input.txt").is_file():
            return pathlib.Path(root) / "tinyshakespeare" / "input.txt"
    sys.exit("tinyshakespeare/input.txt not found: set FNNET_DATA")


def lr_at(step):  # nanoGPT's get_lr
    if step < WARMUP:
        return LR * (step + 1) / (WARMUP + 1)
    ratio = (step - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def main():
    started = time.perf_counter()
    _options()
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    text = find_text().read_text(encoding="utf-8")
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    cut = int(len(ids) * 0.9)
    train, val = ids[:cut], ids[cut:]
    model, groups = torch_gpt(vocab=len(vocab))
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(1 + SEED)
    train_started = time.perf_counter()
    curve = []
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        torch_train_step(torch, model, opt, train, generator, BATCH)
        if (step + 1) % EVAL_INTERVAL == 0:
            model.eval()
            with torch.no_grad():
                losses = []
                for _ in range(EVAL_BATCHES):
                    starts = torch.randint(len(val) - BLOCK, (BATCH,), generator=generator)
                    x = torch.stack([val[s:s + BLOCK] for s in starts])
                    y = torch.stack([val[s + 1:s + 1 + BLOCK] for s in starts])
                    losses.append(F.cross_entropy(model(x).view(-1, len(vocab)), y.view(-1)).item())
            curve.append((step + 1, float(np.mean(losses)), time.perf_counter() - started))
            model.train()
    train_seconds = time.perf_counter() - train_started
    model.eval()
    windows = (len(val) - 1) // BLOCK
    x = val[: windows * BLOCK].view(windows, BLOCK)
    y = val[1: windows * BLOCK + 1].view(windows, BLOCK)
    total = 0.0
    with torch.no_grad():
        for start in range(0, windows, 64):
            logits = model(x[start:start + 64])
            total += F.cross_entropy(logits.reshape(-1, len(vocab)), y[start:start + 64].reshape(-1),
                                     reduction="sum").item()
    val_loss = total / (windows * BLOCK)
    print(json.dumps({"val_loss": val_loss, "steps": STEPS, "train_seconds": train_seconds,
                      "seconds_to_val_loss": time.perf_counter() - started, "curve": curve}))


if __name__ == "__main__":
    main()
