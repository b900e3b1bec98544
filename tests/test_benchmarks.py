"""A smoke run of the benchmark suite at tiny sizes: it runs, writes JSON, prints the table.

No timing is asserted here (the machines are shared and noisy); `make bench` measures.
"""

import json
import subprocess
import sys


def test_benchmark_suite_smoke(repo_root, tmp_path):
    out = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "run.py"), "--smoke",
                          "--workloads", "mnist-sgd,xor,xor-ensemble",
                          "--contenders", "fnnet-manual,fnnet-autodiff,jax-scan,numpy", "--epochs", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    mnist = results["workloads"]["mnist-sgd"]["contenders"]
    for contender in ("fnnet-manual", "fnnet-autodiff", "jax-scan", "numpy"):
        entry = mnist[contender]
        assert entry["throughput"] > 0 and entry["peak_mb"] > 0 and 0 < entry["ratio_to_fastest"] <= 1
        assert "matmul_fraction" in entry
    assert results["workloads"]["xor-ensemble"]["contenders"]["fnnet-manual"]["throughput"] > 0
    assert any(check["target"].startswith("xor: fnnet-manual / numpy") for check in results["targets"])
    assert "fnnet-manual" in out.stdout and "Targets" in out.stdout


def test_cnn_and_gpt_workload_smoke(repo_root, tmp_path):
    out = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "run.py"), "--smoke", "--workloads", "cnn,gpt",
                          "--contenders", "fnnet-manual,jax-loop", "--epochs", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    cnn = json.loads((tmp_path / "smoke.json").read_text())["workloads"]["cnn"]["contenders"]
    assert cnn["fnnet-manual"]["throughput"] > 0 and cnn["jax-loop"]["throughput"] > 0
    assert "cnn: fnnet-manual / best plain-JAX autodiff" in out.stdout
    gpt = json.loads((tmp_path / "smoke.json").read_text())["workloads"]["gpt"]["contenders"]
    assert gpt["fnnet-manual"]["throughput"] > 0 and "gpt: fnnet-manual / torch-eager" in out.stdout
    assert "tokens/s" in out.stdout


def test_worker_reports_a_skip_for_missing_peers(repo_root):
    out = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; "
                          f"sys.argv = ['worker', 'torch-eager', 'xor', '--smoke']; "
                          f"sys.path.insert(0, {str(repo_root / 'benchmarks')!r}); "
                          "import worker; worker.main()"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipped" in json.loads(out.stdout.strip().splitlines()[-1])
