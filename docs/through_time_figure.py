"""Draws docs/images/through_time.png: the gradient through time of a tanh RNN and of an LSTM, on the
same sequences, at initialisation (``python docs/through_time_figure.py``; a few seconds on a CPU).

The task needs memory: each sequence is ``T`` steps of Gaussian noise and its label is the sign of
its first step, read from the last step's output (``return_sequences=False``, then ``Dense(2)``), so
every gradient reaching ``h_t`` comes from the last output, back through time. Each curve is
``‖∂L/∂h_t‖`` from :func:`fnnet.trace` (the layers' hand-written backward scan, checked against
``jax.grad`` through a zero perturbation of each ``h_t``, in float64; the script stops if a check
fails). Three layers of 32 units, each from its own fixed seed, on the same data:

* a tanh RNN at PyTorch's initialisation: the gradient is multiplied by ``W_hhᵀ·diag(1 − h_t²)``
  at every step back, and fades by a roughly constant factor per step;
* an LSTM at PyTorch's initialisation (all biases uniform in ±1/√H, so forget gates f ≈ 0.5);
* an LSTM whose forget-gate bias starts at +1 (f ≈ 0.73; Keras's ``unit_forget_bias=True``,
  Jozefowicz et al. 2015): its cell path ``c_{t-1} → c_t`` multiplies the gradient by ``f`` alone,
  with no ``W_hh`` and no squashing, so it reaches far further back.

The honest reading: at PyTorch's initialisation the LSTM fades too, only less steeply than the
RNN; with its forget gates biased open it keeps a sizable share of the gradient over all T steps,
while the RNN's falls by orders of magnitude within the first ten. ``tests/test_through_time.py``
checks the same ordering on a small case.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp

import fnnet
from fnnet.plots import plot_through_time

STEPS, HIDDEN, SEQUENCES = 40, 32, 64
LABELS = {"rnn": "tanh RNN (PyTorch's init)", "lstm": "LSTM (PyTorch's init: f ≈ 0.5)",
          "lstm_open": "LSTM, forget-gate bias +1 (f ≈ 0.73)"}


def curves(steps: int = STEPS, hidden: int = HIDDEN, sequences: int = SEQUENCES, seed: int = 0) -> dict:
    """``{name: ‖∂L/∂h_t‖ for t = 1…T}`` of the three layers on the same ``sequences`` sequences, each
    norm from :func:`fnnet.trace` (ValueError when a trace's check fails)."""
    x = jax.random.normal(jax.random.PRNGKey(seed), (sequences, steps, 1))
    y = (x[:, 0, 0] > 0).astype(jnp.int32)                   # the first step's sign: a memory task
    out = {}
    for name, cell in (("rnn", fnnet.RNN), ("lstm", fnnet.LSTM), ("lstm_open", fnnet.LSTM)):
        model = fnnet.serial(cell(hidden, return_sequences=False), fnnet.Dense(2))
        _, params = model.init(jax.random.PRNGKey(seed + 1), (steps, 1))
        if name == "lstm_open":   # gates (i, f, g, o): the second block of H columns is the forget gate's
            params[0]["b_ih"] = params[0]["b_ih"].at[hidden:2 * hidden].add(1.0)
        trace = fnnet.trace(model, fnnet.losses.softmax_cross_entropy, params, x, y)
        if not trace.passed:
            raise ValueError(f"{name}: the trace's checks failed:\n{trace}")
        out[name] = trace.layers[0].through_time
    return out


def ratios(found: dict) -> dict:
    """``‖∂L/∂h_1‖ / ‖∂L/∂h_T‖`` of each curve."""
    return {name: float(norms[0] / norms[-1]) for name, norms in found.items()}


def main(path=pathlib.Path(__file__).resolve().parent / "images" / "through_time.png") -> None:
    found = curves()
    styles = {LABELS["rnn"]: {"color": "tab:red"}, LABELS["lstm"]: {"color": "tab:blue", "linestyle": "--"},
              LABELS["lstm_open"]: {"color": "tab:blue"}}
    written = plot_through_time({LABELS[k]: v for k, v in found.items()}, path, styles=styles,
                                title=f"‖∂L/∂h_t‖ from the last output back, {SEQUENCES} sequences of {STEPS} steps")
    print(f"wrote {written}")
    for name, ratio in ratios(found).items():
        print(f"{LABELS[name]}: ‖∂L/∂h_1‖/‖∂L/∂h_T‖ = {ratio:.2e}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
