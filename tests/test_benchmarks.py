"""A smoke run of the benchmark suite at tiny sizes: it runs, writes JSON, prints the table.

No timing is asserted here (the machines are shared and noisy); `make bench` measures.
"""

import json
import re
import subprocess
import sys

import pytest


@pytest.mark.slow  # ~15 processes, ~35 s: in test-all and CI's slow run, not in the make test loop
def test_benchmark_suite_smoke(repo_root, tmp_path):
    """Every kind of workload (MLP, XOR, ensemble, CNN, GPT) through run.py, one process per measurement."""
    out = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "run.py"), "--smoke",
                          "--workloads", "mnist-sgd,xor-ensemble,cnn,gpt",
                          "--contenders", "fnnet-manual,jax-loop,numpy", "--epochs", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    mnist = results["workloads"]["mnist-sgd"]["contenders"]
    for contender in ("fnnet-manual", "jax-loop", "numpy"):
        entry = mnist[contender]
        assert entry["throughput"] > 0 and entry["peak_mb"] > 0 and 0 < entry["ratio_to_fastest"] <= 1
        assert "matmul_fraction" in entry
    assert results["workloads"]["xor-ensemble"]["contenders"]["fnnet-manual"]["throughput"] > 0
    cnn = results["workloads"]["cnn"]["contenders"]
    assert cnn["fnnet-manual"]["throughput"] > 0 and cnn["jax-loop"]["throughput"] > 0
    assert results["workloads"]["gpt"]["contenders"]["fnnet-manual"]["throughput"] > 0
    for target in ("mnist-sgd: fnnet-manual / jax-scan", "cnn: fnnet-manual / best plain-JAX autodiff",
                   "gpt: fnnet-manual / torch-eager", "xor-ensemble: fnnet net-steps/s"):
        assert target in out.stdout, target
    assert "tokens/s" in out.stdout and "Targets" in out.stdout


def test_lstm_workload_trains_each_contender_at_tiny_sizes(repo_root, monkeypatch):
    """The LSTM workload's three contenders (fnnet hand-written and autodiff, PyTorch's nn.LSTM) in
    this process at tiny sizes: each trains, counts B·T tokens a step, and lowers its loss on a
    repeated text; run.py's ratio line reads them side by side."""
    import dataclasses

    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import contenders
    import run
    from contenders import lstm
    from workloads import WORKLOADS

    tiny = dataclasses.replace(WORKLOADS["lstm"], sizes=(65, 16, 16, 65), batch=4, block=6, n=4 * 8, lr=1e-2)
    assert contenders.PLAN["lstm"] == ["fnnet-manual", "fnnet-autodiff", "torch-eager"]
    assert lstm.sizes(WORKLOADS["lstm"]) == (65, 128, 2, 50, 50)            # char-rnn's: H 128, 2 layers, T 50, B 50
    entry = {"contenders": {}}
    for name in contenders.PLAN["lstm"]:
        if name == "torch-eager":
            pytest.importorskip("torch")
        runner = contenders.runner(name, tiny)
        assert runner.run_epoch() == 8 * 4 * 6                           # steps · B · T tokens
        entry["contenders"][name] = {"throughput": 1.0 + len(entry["contenders"])}
    line = run.lstm_ratios(entry)
    assert "fnnet/torch" in line and "hand/autodiff" in line


@pytest.mark.slow  # 3 fresh processes (JAX, JAX, PyTorch), ~20 s
def test_lstm_benchmark_runs_side_by_side(repo_root, tmp_path):
    out = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "run.py"), "--smoke", "--workloads", "lstm",
                          "--epochs", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    assert results["machine"]["cpu"]["model"] and isinstance(results["machine"]["cpu"]["isa"], list)
    lstm = results["workloads"]["lstm"]
    assert lstm["contenders"]["fnnet-manual"]["throughput"] > 0 and lstm["contenders"]["fnnet-autodiff"]["throughput"] > 0
    assert lstm["torch_threads"] >= 1
    for text in ("fnnet/torch", "hand/autodiff", "lstm: fnnet-manual / torch-eager", "lstm: fnnet-manual / fnnet-autodiff",
                 "tokens/s"):
        assert text in out.stdout, text


@pytest.mark.slow  # ~10 fresh processes, ~20 s
def test_small_jobs_benchmark_runs_each_command_and_writes_its_times(repo_root, tmp_path):
    out_file = tmp_path / "small.json"
    out = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "e2e_small.py"), "--repeats", "1",
                          "--no-demo", "--out", str(out_file)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out_file.read_text())
    assert set(results) == {"help", "xor_first_run", "xor_again", "numpy_xor"}
    assert all(seconds > 0 for seconds in results.values())
    assert "fnnet train xor, first run" in out.stdout and "target <= 2 s" in out.stdout


@pytest.mark.slow  # one traced CNN step, ~15 s
def test_thunk_profile_names_the_layer_of_each_operation(repo_root):
    out = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "profile_thunks.py"), "--net", "small",
                          "--top", "5"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = out.stdout.splitlines()[2:]
    assert len(rows) == 5 and all(re.search(r"\w\)?/(forward|backward)/\w", row) for row in rows), out.stdout


def test_worker_reports_a_skip_for_missing_peers(repo_root):
    out = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; "
                          f"sys.argv = ['worker', 'torch-eager', 'xor', '--smoke']; "
                          f"sys.path.insert(0, {str(repo_root / 'benchmarks')!r}); "
                          "import worker; worker.main()"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipped" in json.loads(out.stdout.strip().splitlines()[-1])
