"""One of two processes training together over 127.0.0.1 with gloo CPU collectives.

Usage: python two_process_fit.py PROCESS_ID PORT OUT_FILE
Each process has one CPU device; the mesh spans both processes' devices.
"""
import sys
from pathlib import Path

process_id, port, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 1)

from fnnet import distributed  # noqa: E402

distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                       cpu_collectives="gloo", initialization_timeout=60)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import fnnet  # noqa: E402
from fnnet import train  # noqa: E402

assert jax.process_count() == 2 and len(jax.devices()) == 2, jax.devices()
kx, kw = jax.random.split(jax.random.PRNGKey(0))
x = np.asarray(jax.random.normal(kx, (96, 6)))
y = np.asarray(jnp.argmax(x @ jax.random.normal(kw, (6, 3)), -1)).astype(np.int32)
model = fnnet.serial(fnnet.Dense(16), fnnet.Tanh, fnnet.Dense(3))
state, history = train.fit(model, fnnet.losses.softmax_cross_entropy, optax.sgd(0.1), (x, y), epochs=3,
                           batch_size=16, key=jax.random.PRNGKey(1), verbose=False,
                           mesh=distributed.data_mesh(),
                           checkpoint_dir=Path(out_file).parent / f"checkpoints-{process_id}")
params = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), state.params)
np.savez(out_file, *jax.tree.leaves(params), loss=np.asarray(history.train_loss))
jax.distributed.shutdown()
