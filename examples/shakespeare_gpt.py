"""A character-level GPT on Tiny Shakespeare, every backward pass written by hand (nanoGPT's CPU recipe).

1. checks the hand-written backward passes of attention and of a small GPT against ``jax.vjp``
   and finite differences (float64);
2. trains 4 layers, 4 heads, 128 features, context 64, batch 12 for 2,000 steps (AdamW,
   warmup + cosine, clipping), the steps compiled into ``lax.scan`` intervals with the
   windows drawn on the device;
3. reports the exact validation loss over the whole split (nanoGPT's target: 1.88), writes
   the loss curve, and samples 500 characters after "ROMEO:".

Run: ``python examples/shakespeare_gpt.py [--steps 2000] [--out runs/shakespeare-gpt]``
(about 2 minutes on 2 CPU cores). Smaller: ``--layers 2 --features 64 --block-size 32``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax

import fnnet
from fnnet import datasets, gpt, gradcheck
from fnnet.app import shakespeare
from fnnet.train import language


def check_gradients(verbose: bool) -> float:
    """The attention layer and a 2-block GPT against jax.vjp and finite differences, in float64."""
    with jax.enable_x64(True):
        attention = fnnet.CausalSelfAttention(2)
        _, params = attention.init(jax.random.PRNGKey(0), (6, 8))
        x = jax.random.normal(jax.random.PRNGKey(1), (3, 6, 8))
        attention_report = gradcheck.check_layer(attention, params, x)
        model = gpt.GPT(gpt.GPTConfig(vocab_size=11, block_size=6, num_layers=2, num_heads=2, features=8))
        _, params = model.init(jax.random.PRNGKey(0), (6,))
        ids = jax.random.randint(jax.random.PRNGKey(2), (3, 6), 0, 11)
        model_report = gradcheck.check_model(model, fnnet.losses.softmax_cross_entropy, params, ids,
                                             jax.random.randint(jax.random.PRNGKey(3), (3, 6), 0, 11))
    worst = max(attention_report.worst_rel_error, model_report.worst_rel_error)
    if verbose:
        print(attention_report)
        print(f"\nGPT (2 blocks): {len(model_report.rows)} gradient leaves, worst relative error vs "
              f"jax.grad {worst:.1e}\n")
    return worst


def main(*, steps=2000, layers=4, heads=4, features=128, block_size=64, batch_size=12, lr=2e-3,
         warmup=100, eval_interval=250, out="runs/shakespeare-gpt", gradcheck=True, verbose=True) -> dict:
    started = time.perf_counter()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    worst = check_gradients(verbose) if gradcheck else None
    text = datasets.tiny_shakespeare()
    config = gpt.GPTConfig(vocab_size=text.vocab_size, block_size=block_size, num_layers=layers,
                           num_heads=heads, features=features)
    model = gpt.GPT(config)
    if verbose:
        print(fnnet.summary(model, (block_size,)))
    state, history = language.fit_language_model(
        model, gpt.optimizer(steps, lr=lr, warmup=warmup), text.train, text.val, block_size=block_size,
        batch_size=batch_size, steps=steps, eval_interval=eval_interval, key=jax.random.PRNGKey(0),
        verbose=verbose)
    val = language.evaluate_language_model(model, state.params, text.val, block_size=block_size)
    seconds = time.perf_counter() - started
    history.plot(out / "loss.png", target=shakespeare.TARGET_VAL_LOSS)
    sample = text.decode(gpt.generate(model, state.params, text.encode("ROMEO:"), 500, block_size=block_size,
                                      key=jax.random.PRNGKey(0), temperature=0.8))
    (out / "sample.txt").write_text(sample + "\n")
    metrics = {"val_loss": val["loss"], "steps": steps, "seconds": seconds, "gradcheck_worst_rel_error": worst,
               "history": history.to_dict()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if verbose:
        print(f"\nvalidation loss {val['loss']:.4f} over all {val['tokens']:,} validation characters "
              f"(nanoGPT's CPU recipe: {shakespeare.TARGET_VAL_LOSS}), {seconds:.0f} s in all\n")
        print(sample)
        print(f"\nwrote {out / 'loss.png'}, {out / 'sample.txt'}, {out / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("steps", 2000), ("layers", 4), ("heads", 4), ("features", 128), ("block-size", 64),
                          ("batch-size", 12), ("warmup", 100), ("eval-interval", 250)):
        parser.add_argument(f"--{flag}", type=int, default=default)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", default="runs/shakespeare-gpt")
    parser.add_argument("--no-gradcheck", dest="gradcheck", action="store_false",
                        help="skip step 1 (the gradient checks)")
    args = parser.parse_args()
    main(**vars(args))
