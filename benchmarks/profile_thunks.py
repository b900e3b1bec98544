"""Where a whole training step's time goes, operation by operation, as XLA runs it.

``profile_cnn.py`` and ``profile_gpt.py`` time each layer in a program of its own; inside the whole
step XLA fuses across layers, and the CPU runtime runs independent operations side by side on its
threads, so a layer can cost more or less there. This script traces the compiled step itself
(``jax.profiler``), sums each thunk's time over the runtime's threads and the steps, and names the
layer each comes from (the HLO's ``op_name``, which carries fnnet's named scopes such as
``Conv(64, 3x3)/backward``). It is how YNNPACK's slow convolutions inside the CNN's step were found
(``fnnet.xla_options``).

Run: ``python benchmarks/profile_thunks.py --net cnn|small|gpt [--top 25] [--xla-defaults]``
(``--xla-defaults``: compile without fnnet's XLA options, to compare)
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import tempfile

import jax

from contenders.gpt import BLOCK, FEATURES, HEADS, LAYERS, VOCAB, _optimizer, random_tokens
from fnnet import gpt, train, xla_options
from fnnet.train import language
from profile_cnn import training_steps
from workloads import WORKLOADS

STEPS = 10
"""Training steps per traced call (one ``lax.scan``); three calls are traced."""


def step_program(net: str, xla_defaults: bool):
    """``(jitted, args)``: ``STEPS`` training steps of the network in one call."""
    if net == "gpt":
        model, optimizer = gpt.GPT(gpt.GPTConfig(VOCAB, BLOCK, LAYERS, HEADS, FEATURES)), _optimizer()
        state = train.init_state(model, optimizer, jax.random.PRNGKey(0), (BLOCK,))
        interval = language.make_interval(model, optimizer, block_size=BLOCK, batch_size=WORKLOADS["gpt"].batch)
        jitted = jax.jit(interval, static_argnums=2) if xla_defaults else \
            xla_options.jit(interval, model, static_argnums=2)
        return jitted, (state, jax.device_put(random_tokens()), STEPS)
    steps, model, args = training_steps(net, STEPS)
    return (jax.jit(steps) if xla_defaults else xla_options.jit(steps, model)), args


def thunk_times(jitted, args, calls: int = 3) -> tuple[collections.Counter, collections.Counter]:
    """Milliseconds per step of each thunk from a trace of ``calls`` calls, summed over the
    runtime's threads: its span on the thread that ran it; and, for the thunks whose work went on
    after that span (XLA's own convolutions and dots, loops split over the thread pool), the time
    from launch to end, which overlaps whatever ran meanwhile."""
    jax.block_until_ready(jitted(*args))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(calls):
                jax.block_until_ready(jitted(*args))
        trace = next(pathlib.Path(folder).rglob("*.xplane.pb"))
        data = jax.profiler.ProfileData.from_file(str(trace))
    spans, launches, ends = collections.Counter(), collections.defaultdict(list), collections.defaultdict(list)
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # the CPU client's thread and the runtime's workers
                continue
            for event in line.events:
                # leave out the executor's own spans, waits inside a thunk (YNNPACK's thread pool's),
                # and the while loop, which holds the thunks of its body
                if "::" in event.name or event.name.startswith("while"):
                    continue
                if event.name.startswith("end: "):  # the runtime marks when each thunk's work is done
                    ends[event.name[len("end: "):]].append(event.start_ns)
                else:
                    spans[event.name] += event.duration_ns
                    launches[event.name].append((event.start_ns, event.end_ns))
    to_end = collections.Counter()
    for name, finished in ends.items():
        pairs = list(zip(sorted(launches[name]), sorted(finished)))
        if pairs and sum(end - span_end for (_, span_end), end in pairs) / len(pairs) > 50_000:
            to_end[name] = sum(end - start for (start, _), end in pairs)  # its work went on after its span
    per_step = 1e6 * calls * STEPS
    return (collections.Counter({name: ns / per_step for name, ns in spans.items()}),
            collections.Counter({name: ns / per_step for name, ns in to_end.items()}))


def op_names(compiled_text: str) -> dict:
    """Each HLO instruction's ``op_name`` (the layer and pass it comes from), by instruction name."""
    names = {}
    for match in re.finditer(r"%?([\w.\-]+) = [^\n]*?op_name=\"([^\"]*)\"", compiled_text):
        octal = re.sub(r"\\([0-7]{3})", lambda byte: chr(int(byte.group(1), 8)), match.group(2))
        names[match.group(1)] = octal.encode("latin-1", "replace").decode("utf-8", "replace")  # HLO escapes UTF-8 bytes
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=("cnn", "small", "gpt"), default="cnn")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--xla-defaults", action="store_true", help="compile without fnnet.xla_options")
    args = parser.parse_args()
    jitted, inputs = step_program(args.net, args.xla_defaults)
    names = op_names(jitted.lower(*inputs).compile().as_text())
    spans, to_end = thunk_times(jitted, inputs)
    print(f"{args.net}: thunks' spans add up to {sum(spans.values()):.1f} ms per step over the runtime's threads; "
          f"'to end' is launch to end for work that went on after its span (it overlaps other thunks)")
    print(f"{'span ms':>8} {'to end':>7}  {'thunk':34s} layer/pass")
    for name in sorted(spans, key=lambda name: -max(spans[name], to_end[name]))[:args.top]:
        where = re.sub(r"^jit\([^)]*\)/(while/body/)?(closed_call/)?", "", names.get(name, ""))
        where = re.sub(r"\b(serial|parallel)/(forward|backward)/", "", where)  # the combinators' own scopes
        after = f"{to_end[name]:7.2f}" if name in to_end else ""
        print(f"{spans[name]:8.2f} {after:>7}  {name:34s} {where[-80:]}")

if __name__ == "__main__":
    main()
