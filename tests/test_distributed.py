"""Data parallelism with JAX's own sharding: 4 and 8 fake CPU devices, and two processes.

Each case runs in a subprocess, so the rest of the suite keeps its single device.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import draws, train

SCRIPTS = os.path.join(os.path.dirname(__file__), "scripts")


def _run(args, timeout=300, env=None):
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    environment.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=environment)


@pytest.mark.multidevice
@pytest.mark.parametrize("devices", [4, pytest.param(8, marks=pytest.mark.slow)])  # 8: in make test-all
def test_sharded_fit_matches_single_device(tmp_path, devices):
    out = _run([os.path.join(SCRIPTS, "sharded_fit.py"), str(devices), str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["devices"] == devices
    assert result["batchnorm"] == (devices == 4)  # tests/scripts/sharded_batchnorm.py: global BN statistics


@pytest.mark.multidevice
def test_a_char_rnn_trains_data_parallel_over_two_cpu_devices_as_on_one(tmp_path):
    """tests/scripts/sharded_language.py: fit_language_model over 2 CPU devices (each its share of every
    step's windows, jax.shard_map) equals one device in float64 (an LSTM); a padded batch's
    data-parallel gradients are the mean over its valid examples (the CLI's char-rnn on the cores: the
    slow test of tests/test_charrnn.py)."""
    out = _run([os.path.join(SCRIPTS, "sharded_language.py"), str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"devices": 2, "ok": True}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_two_processes(tmp_path, attempts=3):
    """Both processes to the end; a port another program took between our probe and their bind
    (the probe must release it) is retried on a fresh port."""
    script = os.path.join(SCRIPTS, "two_process_fit.py")
    environment = dict(os.environ, PYTHONUNBUFFERED="1")  # with the suite's quick-compile XLA_FLAGS
    for attempt in range(attempts):
        port = _free_port()
        procs = [subprocess.Popen([sys.executable, script, str(i), str(port), str(tmp_path / f"p{i}.npz")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
                 for i in range(2)]
        outputs = [p.communicate(timeout=240) for p in procs]
        errors = " ".join(err for _, err in outputs)
        if any(p.returncode for p in procs) and "ddress already in use" in errors and attempt + 1 < attempts:
            continue
        return procs, outputs


@pytest.mark.multidevice
def test_two_processes_train_together_and_agree(tmp_path):
    procs, outputs = _run_two_processes(tmp_path)
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    # only process 0 writes checkpoints (each process was given its own folder here)
    assert (tmp_path / "checkpoints-0" / train.CHECKPOINT_NAME).is_file()
    assert not (tmp_path / "checkpoints-1" / train.CHECKPOINT_NAME).exists()
    first, second = (np.load(tmp_path / f"p{i}.npz") for i in range(2))
    assert sorted(first.files) == sorted(second.files)
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])  # the processes agree exactly

    # and they computed what one process on one device computes
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = np.asarray(draws.normal(kx, (96, 6)))
    y = np.asarray(jnp.argmax(x @ draws.normal(kw, (6, 3)), -1)).astype(np.int32)
    model = fnnet.serial(fnnet.Dense(16), fnnet.Tanh, fnnet.Dense(3))
    state, history = train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=3,
                               batch_size=16, key=jax.random.PRNGKey(1), verbose=False)
    np.testing.assert_allclose(first["loss"], history.train_loss, rtol=1e-5)
    for i, leaf in enumerate(jax.tree.leaves(state.params)):
        np.testing.assert_allclose(first[f"arr_{i}"], leaf, rtol=1e-5, atol=1e-6)


def test_mesh_argument_is_checked():
    x, y = np.zeros((8, 2), np.float32), np.zeros((8,), np.int32)
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        train.fit(fnnet.Dense(2), fnnet.losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=1,
                  batch_size=4, key=jax.random.PRNGKey(0), mesh="all", verbose=False)
