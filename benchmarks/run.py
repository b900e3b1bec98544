"""The benchmark suite: ``make bench`` (full, ~10 minutes on 2 cores) or ``--smoke`` (tiny sizes).

Every measurement runs in a fresh process (``worker.py``), so peak memory and
compile time are the contender's own. Contenders of one workload run side by
side, in two rounds of alternating order, each with a first (compiling) epoch
followed by timed epochs; the throughput is examples per median timed epoch.
Results go to ``benchmarks/results/latest.json`` (and a time-stamped copy) and a
table is printed with the ratio to the fastest contender, the compile time
(first epoch minus a steady one), peak memory, and the fraction of XLA's own
matmul rate at the same shapes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import contenders  # noqa: E402
from contenders.lstm import cores  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

TARGETS = """Targets (issue 5), checked on this run:
  mnist-sgd / mnist-adam: fnnet-manual >= 1.0x jax-scan, >= 1.2x torch-eager, >= 0.85 of matmul rate
  xor: fnnet-manual >= 10x numpy; xor-ensemble: fnnet-manual >= 7.5M net-steps/s
  compile: fnnet-manual first-epoch compile <= 1.5x jax-scan's; peak memory (mnist) <= 1.2x jax-scan's
  cnn (issue 10): fnnet-manual >= 1.0x the faster of jax-scan / jax-loop, >= 1.0x torch-eager
  gpt (issue 11): fnnet-manual >= 1.0x fnnet-autodiff, >= 1.0x jax-scan, >= 1.2x torch-eager (tokens/s)
  progress bar (issue 16): fnnet-progress (a terminal bar moved inside each epoch) >= 0.98x fnnet-manual
  monitor (issue 18): fnnet-monitor (fit(monitor=10): per-layer health in the step) >= 0.95x fnnet-manual
  lstm (issue 31): fnnet-manual >= 1.0x torch-eager's nn.LSTM (aim 1.25x), >= 3x fnnet-autodiff (tokens/s)"""


def cpu() -> dict:
    """The CPU's model name (with its family and model numbers, which name the generation where a
    virtual machine shows only "AMD EPYC") and the vector instruction sets XLA and oneDNN may use
    on it, from Linux's ``/proc/cpuinfo`` (elsewhere only ``platform.processor()``)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve")
           if f in flags]
    return {"model": model, "isa": isa}


def measure(contender, workload, epochs, smoke):
    command = [sys.executable, str(HERE / "worker.py"), contender, workload, "--epochs", str(epochs)]
    if smoke:
        command.append("--smoke")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def aggregate(samples):
    ok = [s for s in samples if "epoch_s" in s]
    if not ok:
        return next((s for s in samples if "skipped" in s or "error" in s), {"error": "no result"})
    times = [t for s in ok for t in s["epoch_s"]]
    steady = statistics.median(times)
    return {"per_epoch": ok[0]["per_epoch"], "median_epoch_s": steady, "epoch_s": times,
            "throughput": ok[0]["per_epoch"] / steady,
            "compile_s": min(max(0.0, s["first_s"] - steady) for s in ok),
            "peak_mb": max(s["peak_mb"] for s in ok), "base_mb": min(s["base_mb"] for s in ok)}


def run(workloads, rounds, epochs, smoke, verbose=True, only=None):
    results = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpus": os.cpu_count(), "cpu": cpu()},
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "smoke": smoke, "workloads": {}}
    for name in workloads:
        plan = [c for c in contenders.PLAN[name] if only is None or c in only]
        workload = WORKLOADS[name]
        samples = {c: [] for c in plan}
        for r in range(rounds):
            order = plan if r % 2 == 0 else list(reversed(plan))
            for contender in order:
                samples[contender].append(measure(contender, name, epochs, smoke))
                if verbose:
                    last = samples[contender][-1]
                    print(f"  [{name} round {r + 1}] {contender}: "
                          + (f"{last['per_epoch'] / statistics.median(last['epoch_s']):,.0f}/s"
                             if "epoch_s" in last else last.get("skipped") or last.get("error")),
                          flush=True)
        entry = {"workload": vars(workload), "contenders": {c: aggregate(samples[c]) for c in plan}}
        if workload.kind == "mlp":
            rate = measure("matmul", name, epochs, smoke)
            entry["matmul_gflops"] = rate.get("gflops")
            for result in entry["contenders"].values():
                if "throughput" in result and rate.get("gflops"):
                    result["gflops"] = result["throughput"] * workload.flops_per_example() / 1e9
                    result["matmul_fraction"] = result["gflops"] / rate["gflops"]
        fastest = max((r["throughput"] for r in entry["contenders"].values() if "throughput" in r), default=None)
        for result in entry["contenders"].values():
            if "throughput" in result:
                result["ratio_to_fastest"] = result["throughput"] / fastest
        if workload.kind == "lstm":
            entry["torch_threads"] = cores()   # what the PyTorch contender sets
        results["workloads"][name] = entry
    results["targets"] = check_targets(results)
    return results


def _get(results, workload, contender, field):
    return results["workloads"].get(workload, {}).get("contenders", {}).get(contender, {}).get(field)


def check_targets(results):
    checks = []

    def add(name, value, target, ok):
        checks.append({"target": name, "value": value, "bound": target,
                       "met": None if value is None else bool(ok)})

    for w in ("mnist-sgd", "mnist-adam"):
        ours, base, torch = (_get(results, w, c, "throughput") for c in ("fnnet-manual", "jax-scan", "torch-eager"))
        add(f"{w}: fnnet-manual / jax-scan", ours / base if ours and base else None, ">= 1.0",
            ours and base and ours / base >= 1.0)
        add(f"{w}: fnnet-manual / torch-eager", ours / torch if ours and torch else None, ">= 1.2",
            ours and torch and ours / torch >= 1.2)
        frac = _get(results, w, "fnnet-manual", "matmul_fraction")
        add(f"{w}: fnnet-manual fraction of matmul rate", frac, ">= 0.85", frac and frac >= 0.85)
        c_ours, c_base = _get(results, w, "fnnet-manual", "compile_s"), _get(results, w, "jax-scan", "compile_s")
        add(f"{w}: compile fnnet / jax-scan", c_ours / c_base if c_ours and c_base else None, "<= 1.5",
            c_ours and c_base and c_ours / c_base <= 1.5)
        m_ours, m_base = _get(results, w, "fnnet-manual", "peak_mb"), _get(results, w, "jax-scan", "peak_mb")
        add(f"{w}: peak memory fnnet / jax-scan", m_ours / m_base if m_ours and m_base else None, "<= 1.2",
            m_ours and m_base and m_ours / m_base <= 1.2)
    ours, bar = (_get(results, "mnist-adam", c, "throughput") for c in ("fnnet-manual", "fnnet-progress"))
    add("mnist-adam: the in-epoch progress bar's cost, fnnet-progress / fnnet-manual", bar / ours if bar and ours
        else None, ">= 0.98", bar and ours and bar / ours >= 0.98)
    for w in ("mnist-adam", "cnn"):
        ours, watched = (_get(results, w, c, "throughput") for c in ("fnnet-manual", "fnnet-monitor"))
        add(f"{w}: the monitor's cost, fnnet-monitor (monitor=10) / fnnet-manual",
            watched / ours if watched and ours else None, ">= 0.95", watched and ours and watched / ours >= 0.95)
    ours = _get(results, "cnn", "fnnet-manual", "throughput")
    plain = max((t for t in (_get(results, "cnn", c, "throughput") for c in ("jax-scan", "jax-loop")) if t),
                default=None)
    torch = _get(results, "cnn", "torch-eager", "throughput")
    add("cnn: fnnet-manual / best plain-JAX autodiff", ours / plain if ours and plain else None, ">= 1.0",
        ours and plain and ours / plain >= 1.0)
    add("cnn: fnnet-manual / torch-eager", ours / torch if ours and torch else None, ">= 1.0",
        ours and torch and ours / torch >= 1.0)
    ours = _get(results, "gpt", "fnnet-manual", "throughput")
    for other, bound in (("fnnet-autodiff", 1.0), ("jax-scan", 1.0), ("torch-eager", 1.2)):
        theirs = _get(results, "gpt", other, "throughput")
        add(f"gpt: fnnet-manual / {other}", ours / theirs if ours and theirs else None, f">= {bound}",
            ours and theirs and ours / theirs >= bound)
    ours = _get(results, "lstm", "fnnet-manual", "throughput")
    for other, bound in (("torch-eager", 1.0), ("fnnet-autodiff", 3.0)):
        theirs = _get(results, "lstm", other, "throughput")
        add(f"lstm: fnnet-manual / {other}", ours / theirs if ours and theirs else None, f">= {bound}",
            ours and theirs and ours / theirs >= bound)
    ours, numpy = _get(results, "xor", "fnnet-manual", "throughput"), _get(results, "xor", "numpy", "throughput")
    add("xor: fnnet-manual / numpy", ours / numpy if ours and numpy else None, ">= 10", ours and numpy and ours / numpy >= 10)
    ens = _get(results, "xor-ensemble", "fnnet-manual", "throughput")
    add("xor-ensemble: fnnet net-steps/s", ens, ">= 7.5e6", ens and ens >= 7.5e6)
    return checks


def lstm_ratios(entry) -> str:
    """The LSTM workload's two ratios, side by side: fnnet / PyTorch's nn.LSTM and hand-written / autodiff."""
    rate = {c: r.get("throughput") for c, r in entry["contenders"].items()}
    manual, torch, autodiff = rate.get("fnnet-manual"), rate.get("torch-eager"), rate.get("fnnet-autodiff")
    text = "fnnet/torch " + (f"{manual / torch:.2f}x" if manual and torch else "n/a")
    text += ", hand/autodiff " + (f"{manual / autodiff:.2f}x" if manual and autodiff else "n/a")
    threads = entry.get("torch_threads")
    return f"({text}; torch threads = {threads}, the cores JAX's CPU client uses)" if threads else f"({text})"


def print_table(results):
    machine = results["machine"]
    processor = machine.get("cpu", {})
    print(f"\nfnnet benchmark ({results['date']}, {machine['cpus']} CPUs"
          + (f": {processor['model']}, {' '.join(processor['isa']) or 'ISA unknown'}" if processor else "")
          + (", SMOKE sizes" if results["smoke"] else "") + ")")
    header = f"{'workload':<14}{'contender':<16}{'ex/s':>12}{'vs fastest':>11}{'compile s':>10}{'peak MB':>9}{'matmul':>8}"
    print(header)
    print("-" * len(header))
    for name, entry in results["workloads"].items():
        unit = {"ensemble": "net-steps/s", "gpt": "tokens/s", "lstm": "tokens/s"}.get(entry["workload"]["kind"], "ex/s")
        for contender, r in sorted(entry["contenders"].items(), key=lambda kv: -kv[1].get("throughput", 0)):
            if "throughput" not in r:
                print(f"{name:<14}{contender:<16}  {r.get('skipped') or r.get('error')}")
                continue
            frac = f"{r['matmul_fraction']:.2f}" if "matmul_fraction" in r else "-"
            print(f"{name:<14}{contender:<16}{r['throughput']:>12,.0f}{r['ratio_to_fastest']:>10.2f}x"
                  f"{r['compile_s']:>10.2f}{r['peak_mb']:>9.0f}{frac:>8}" + ("" if unit == "ex/s" else f"  ({unit})"))
        if entry.get("matmul_gflops"):
            print(f"{'':<14}(XLA float32 matmul at these shapes: {entry['matmul_gflops']:.0f} GFLOP/s)")
        if entry["workload"]["kind"] == "lstm":
            print(f"{'':<14}" + lstm_ratios(entry))
    print("\n" + TARGETS.splitlines()[0])
    for check in results["targets"]:
        value = "n/a" if check["value"] is None else f"{check['value']:.3g}"
        status = {True: "met", False: "NOT MET", None: "not measured"}[check["met"]]
        print(f"  {check['target']:<48} {value:>10} (target {check['bound']}): {status}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the suite runs")
    parser.add_argument("--workloads", default=",".join(contenders.PLAN))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
    parser.add_argument("--contenders", default=None, help="comma-separated subset of contenders")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in contenders.PLAN]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(contenders.PLAN)}")
    only = set(args.contenders.split(",")) if args.contenders else None
    results = run(workloads, 1 if args.smoke else args.rounds, args.epochs, args.smoke, only=only)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["date"].replace(":", "").replace("-", "")
    name = "smoke" if args.smoke else "latest"
    for path in (out / f"{name}.json", out / f"{name}-{stamp}.json"):
        path.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwrote {out / (name + '.json')}")
    return results


if __name__ == "__main__":
    main()
