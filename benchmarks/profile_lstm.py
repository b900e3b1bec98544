"""Where the char-rnn LSTM's training step spends its time, and how close it runs to this CPU's matrix products.

The ``lstm`` workload (``contenders/lstm.py``: Embedding(65, 128) → LSTM(128) × 2 → Dense(65),
T 50, batch 50, clip ±5 + Adam), in one process:

1. the whole step, as ``fnnet train shakespeare`` runs it (``make_interval``: windows drawn on the
   device, forward, backward, clipping, Adam; data-parallel over one CPU device a core), with the
   hand-written backward and with ``grad="autodiff"``, the hand-written one also on one device, and
   PyTorch eager's step (``nn.LSTM``, oneDNN) when torch is installed;
2. each layer of the model: forward and hand-written backward at its own input, and the second
   LSTM's forward scan alone, its backward scan alone, and ``jax.vjp`` of its ``apply`` (what
   ``grad="autodiff"`` runs), 10 times inside one jitted ``lax.scan``, the median of 5 timings;
3. **the step's matrix products alone**, as plain ``jnp.dot`` at the step's own shapes: the ones
   over all ``B·T = 2,500`` rows (``x·W_ih``, ``dW_ih``, ``dW_hh``, ``dx``, the head's three) and
   the sequential ones (per layer, 50 dependent ``(50, 128)·(128, 512)`` products forward and 50
   ``(50, 512)·(512, 128)`` backward, each step waiting for the one before; the backward's in the
   form the layer's reverse loop takes here, one product or four per gate:
   ``fnnet/layers/_recurrent_products.py``); the same products in PyTorch (``torch.mm``, the same
   threads) when torch is installed;
4. with ``--trace``: the thunks of the compiled step on one device, from ``jax.profiler``
   (``profile_thunks.py``'s summing, the top 20).

Writes ``benchmarks/results/lstm_profile.json``.

Run: ``python benchmarks/profile_lstm.py [--trace]`` (about two minutes on 2 cores, three with ``--trace``)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from contenders.lstm import FnnetLSTM, TorchLSTM, cores, fnnet_model, optimizer, sizes
from fnnet.app import process
from fnnet.layer import abstract_init, layer_children, layer_name
from fnnet.layers import lstm as lstm_cell
from fnnet.layers._recurrent_products import gate_product, per_gate_is_faster
from profiling import REPEAT, eager_ms, layer_ms, timed
from workloads import WORKLOADS

HERE = pathlib.Path(__file__).resolve().parent
VOCAB, HIDDEN, LAYERS, T, BATCH = sizes(WORKLOADS["lstm"])
ROWS = T * BATCH
G = 4 * HIDDEN


def ms_per_step(runner, epochs: int = 5) -> float:
    """Milliseconds per step of a contender (``run_epoch`` runs ``runner.steps`` of them): the
    median of ``epochs`` epochs after a warm-up one."""
    runner.run_epoch()
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        runner.run_epoch()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / runner.steps * 1e3


def workload(steps: int = REPEAT):
    return dataclasses.replace(WORKLOADS["lstm"], n=steps * BATCH)


def whole_steps():
    """``{"manual", "autodiff", "manual, one device", "torch"}``: ms per training step, each timed in turns
    with the others; fnnet's data-parallel over one CPU device a core (as ``fnnet train shakespeare``),
    and on one device."""
    runners = {"manual": FnnetLSTM(workload(), "manual"), "autodiff": FnnetLSTM(workload(), "autodiff"),
               "manual, one device": FnnetLSTM(workload(), "manual", data_parallel=False)}
    if importlib.util.find_spec("torch") is not None:
        runners["torch"] = TorchLSTM(workload())
    times = {name: [] for name in runners}
    for _ in range(3):
        for name, runner in runners.items():
            times[name].append(ms_per_step(runner, epochs=2))
    return {name: min(kept) for name, kept in times.items()}


def layer_costs():
    """``[{"layer", "ms"}]``: each layer's forward and hand-written backward; then the second
    LSTM's forward scan alone, its backward scan alone, and autodiff's vjp of its ``apply``."""
    model = fnnet_model(VOCAB, HIDDEN, LAYERS)
    shape, rows = (T,), []

    def add(name, ms):
        rows.append({"layer": name, "ms": ms})
        print(f"{name:<52} {ms:6.2f} ms", flush=True)

    for index, layer in enumerate(layer_children(model)):
        key = jax.random.PRNGKey(index)
        x = (jax.random.randint(key, (BATCH,) + shape, 0, VOCAB) if shape == (T,)
             else jax.random.normal(key, (BATCH,) + shape))
        add(f"{index}:{layer_name(layer)} forward + backward", layer_ms(layer, x, jax.random.PRNGKey(100 + index)))
        shape = tuple(abstract_init(layer, shape)[0])

    layer = layer_children(model)[2]
    _, params = layer.init(jax.random.PRNGKey(0), (T, HIDDEN))
    x = jax.random.normal(jax.random.PRNGKey(1), (T, BATCH, HIDDEN))       # time-major, as the cell runs
    dys = jax.random.normal(jax.random.PRNGKey(2), (T, BATCH, HIDDEN))
    zeros = jnp.zeros((BATCH, HIDDEN))

    def repeated(body):
        def run(*args):
            return jax.lax.scan(lambda carry, _: (carry + 1e-9 * body(carry, *args), None),
                                jnp.zeros(()), None, length=REPEAT)[0]
        return jax.jit(run)

    def forward_only(carry, params, x):   # everything it keeps is used: XLA may not drop the factors' work
        h, _, residuals = lstm_cell.lstm_forward(params, x + carry, None, (zeros, zeros))
        return jnp.sum(h) + sum(jnp.sum(r) for r in jax.tree.leaves(residuals))

    _, _, residuals = jax.jit(lstm_cell.lstm_forward)(params, x, None, (zeros, zeros))

    def backward_only(carry, params, residuals, dys):
        grads, dx, _ = lstm_cell.lstm_backward(params, residuals, dys + carry, None)
        return jnp.sum(dx) + sum(jnp.sum(g) for g in grads.values())

    batch_x = jnp.swapaxes(x, 0, 1)

    def autodiff(carry, params, x, dys):
        y, vjp = jax.vjp(layer.apply, params, x + carry)
        grads, dx = vjp(jnp.swapaxes(dys, 0, 1))
        return jnp.sum(y) + jnp.sum(dx) + sum(jnp.sum(g) for g in grads.values())

    add("  LSTM(128) forward scan alone (lstm_forward)", timed(repeated(forward_only), params, x))
    add("  LSTM(128) backward scan alone (lstm_backward)", timed(repeated(backward_only), params, residuals, dys))
    add("  LSTM(128) autodiff: jax.vjp of apply, forward + backward", timed(repeated(autodiff), params, batch_x, dys))
    return rows


def product_flops():
    """``(big, sequential)`` FLOPs of one step's products: those over all rows, and the step-by-step ones."""
    big = LAYERS * 4 * 2 * ROWS * HIDDEN * G            # x·W_ih, dW_ih, dW_hh, dx  (F = H = 128)
    big += 3 * 2 * ROWS * HIDDEN * VOCAB                 # the head: forward, dx, dW
    sequential = LAYERS * 2 * 2 * ROWS * HIDDEN * G      # h·W_hh forward, da·W_hhᵀ backward, every step
    return big, sequential


def xla_products():
    """``(big ms, sequential ms)``: the step's products in XLA, plain ``jnp.dot`` in jitted scans."""
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 16))
    x = jax.random.normal(next(keys), (ROWS, HIDDEN))
    da = jax.random.normal(next(keys), (ROWS, G))
    w = jax.random.normal(next(keys), (HIDDEN, G)) * 0.05
    head = jax.random.normal(next(keys), (HIDDEN, VOCAB)) * 0.05
    dlogits = jax.random.normal(next(keys), (ROWS, VOCAB))

    def big(carry, x, da, w, head, dlogits):
        total = 0.0
        for layer in range(LAYERS):   # operands of their own per layer and product: nothing for XLA to share
            xs, das = x + (layer + 1) * carry, da + (layer + 1) * carry
            total += jnp.sum(xs @ w) + jnp.sum(xs.T @ das) + jnp.sum(xs.T @ (das + carry)) + jnp.sum(das @ w.T)
        xs = x + carry
        return total + jnp.sum(xs @ head) + jnp.sum(dlogits @ head.T) + jnp.sum(xs.T @ dlogits)

    h0 = jax.random.normal(next(keys), (BATCH, HIDDEN))
    d0 = jax.random.normal(next(keys), (BATCH, G))

    def sequential(carry, h0, d0, w):
        times_w_t = gate_product(w, BATCH)
        def forward(h, _):
            return (h @ w)[:, :HIDDEN] * 0.1, None          # each product waits for the one before

        def backward(d, _):   # da·W_hhᵀ in the form the layer's reverse loop uses here (one product, or per gate)
            return jnp.tile(times_w_t(jnp.split(d, 4, axis=-1)), (1, 4)) * 0.1, None
        total = 0.0
        for layer in range(LAYERS):
            total += jnp.sum(jax.lax.scan(forward, h0 + (layer + 1) * carry, None, length=T)[0])
            total += jnp.sum(jax.lax.scan(backward, d0 + (layer + 1) * carry, None, length=T)[0])
        return total

    def repeated(body):   # the operands are arguments: XLA would fold products of constants at compile time
        return jax.jit(lambda *args: jax.lax.scan(lambda c, _: (c + 1e-9 * body(c, *args), None), jnp.zeros(()),
                                                  None, length=REPEAT)[0])
    return timed(repeated(big), x, da, w, head, dlogits), timed(repeated(sequential), h0, d0, w)


def torch_products():
    """``(big ms, sequential ms)``: the same products in PyTorch (``torch.mm``), or None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch  # optional: the comparison runs only where torch is installed

    torch.set_num_threads(cores())
    x, da = torch.randn(ROWS, HIDDEN), torch.randn(ROWS, G)
    w, head, dlogits = torch.randn(HIDDEN, G) * 0.05, torch.randn(HIDDEN, VOCAB) * 0.05, torch.randn(ROWS, VOCAB)

    def big():
        for _ in range(LAYERS):
            x @ w, x.T @ da, x.T @ da, da @ w.T
        x @ head, dlogits @ head.T, x.T @ dlogits

    def sequential():
        for _ in range(LAYERS):
            h = torch.randn(BATCH, HIDDEN)
            for _ in range(T):
                h = torch.mm(h, w)[:, :HIDDEN] * 0.1
            d = torch.randn(BATCH, G)
            for _ in range(T):
                d = torch.mm(d, w.T).repeat(1, 4) * 0.1

    return eager_ms(big), eager_ms(sequential)


def thunk_trace(top: int = 20):
    """The compiled step's thunks (``profile_thunks.thunk_times``), the top ``top`` by time."""
    import re

    from fnnet.train import language
    from profile_thunks import STEPS, op_names, thunk_times  # only with --trace (it loads the other contenders)

    runner = FnnetLSTM(workload(STEPS), "manual", data_parallel=False)   # one device's program, thunk by thunk
    model, opt = fnnet_model(VOCAB, HIDDEN, LAYERS), optimizer(WORKLOADS["lstm"].lr)
    jitted = jax.jit(language.make_interval(model, opt, block_size=T, batch_size=BATCH), static_argnums=2)
    args = (runner.state, runner.tokens, STEPS)                # not donated: traced three times
    names = op_names(jitted.lower(*args).compile().as_text())
    spans, _ = thunk_times(jitted, args)
    print(f"\nthunks of the whole step ({sum(spans.values()):.1f} ms of spans per step over the runtime's threads)")
    rows = []
    for name in sorted(spans, key=lambda n: -spans[n])[:top]:
        where = re.sub(r"^jit\([^)]*\)/(while/body/)*(closed_call/)?", "", names.get(name, ""))
        rows.append({"thunk": name, "ms": spans[name], "op_name": where})
        print(f"{spans[name]:8.2f}  {name:34s} {where[-90:]}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", action="store_true", help="also trace the compiled step (jax.profiler)")
    args = parser.parse_args()
    (HERE / "results").mkdir(exist_ok=True)
    process.use_every_core()   # before JAX starts: the data-parallel step has its CPU devices (one a core)
    rows = layer_costs()
    big, sequential = product_flops()
    xla_big, xla_seq = xla_products()
    torch_ms = torch_products()
    steps = whole_steps()
    print(f"\nthe step's matrix products alone, {(big + sequential) / 1e9:.2f} GFLOP "
          f"({big / 1e9:.2f} over all {ROWS:,} rows, {sequential / 1e9:.2f} step by step):")
    form = "per gate" if per_gate_is_faster(BATCH, HIDDEN, 4, "float32") else "one product"
    print(f"  (the reverse loop's da·W_hhᵀ at this size, as the layer runs it here: {form})")
    print(f"  XLA    over all rows {xla_big:6.2f} ms ({big / xla_big / 1e6:4.0f} GFLOP/s)   step by step "
          f"{xla_seq:6.2f} ms ({sequential / xla_seq / 1e6:4.0f} GFLOP/s)   together {xla_big + xla_seq:6.2f} ms")
    if torch_ms:
        print(f"  torch  over all rows {torch_ms[0]:6.2f} ms ({big / torch_ms[0] / 1e6:4.0f} GFLOP/s)   step by step "
              f"{torch_ms[1]:6.2f} ms ({sequential / torch_ms[1] / 1e6:4.0f} GFLOP/s)   together "
              f"{sum(torch_ms):6.2f} ms   ({cores()} threads)")
    print("whole step (ms, tokens/s): " + ", ".join(
        f"{name} {ms:.1f} ({ROWS / ms * 1e3:,.0f})" for name, ms in steps.items()))
    ratios = {"manual/autodiff": steps["autodiff"] / steps["manual"]}
    if "torch" in steps:
        ratios["manual/torch"] = steps["torch"] / steps["manual"]
    print("  " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
          + f"; the products alone (XLA) are {(xla_big + xla_seq) / steps['manual, one device']:.0%} of fnnet's "
          f"step on one device")
    thunks = thunk_trace() if args.trace else None
    out = HERE / "results" / "lstm_profile.json"
    out.write_text(json.dumps(
        {"layers": rows, "products_gflop": {"all_rows": big / 1e9, "step_by_step": sequential / 1e9},
         "xla_products_ms": {"all_rows": xla_big, "step_by_step": xla_seq},
         "torch_products_ms": None if torch_ms is None else {"all_rows": torch_ms[0], "step_by_step": torch_ms[1]},
         "reverse_loop_product": form, "step_ms": steps, "ratios": ratios, "threads": cores(), "thunks": thunks,
         "sizes": {"vocab": VOCAB, "hidden": HIDDEN, "layers": LAYERS, "T": T, "batch": BATCH}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
