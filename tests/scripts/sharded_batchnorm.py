"""Run with N fake CPU devices: a CNN with BatchNorm and Dropout trained over a mesh equals one device.

BatchNorm's batch statistics must be those of the *global* batch (XLA inserts the reductions).
The last batch (2 examples, fewer than the devices) runs unpadded and unsharded.
Usage: python sharded_batchnorm.py N   (prints one JSON line)
"""
import json
import os
import sys

devices = int(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[0].endswith(
    "sharded_batchnorm.py") else 4
# quick compiles (as conftest.py asks for the rest of the suite): these tiny models are compile-bound
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0 "
                           "--xla_llvm_disable_expensive_passes=true")

import chex  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import fnnet  # noqa: E402
from fnnet import distributed, train  # noqa: E402

assert len(jax.devices()) == devices, jax.devices()
rng = np.random.default_rng(0)
x = rng.normal(size=(98, 6, 6, 2)).astype(np.float32)  # 3 batches of 32, then a tail of 2 (no padding in BN)
y = (x[:, :3].mean(axis=(1, 2, 3)) > x[:, 3:].mean(axis=(1, 2, 3))).astype(np.int32)
model = fnnet.serial(fnnet.Conv(4, 3, use_bias=False), fnnet.BatchNorm(), fnnet.Relu, fnnet.MaxPool(2), fnnet.Dropout(0.2),
                     fnnet.Flatten, fnnet.Dense(2))
loss = fnnet.losses.softmax_cross_entropy
kwargs = dict(epochs=2, batch_size=8 * devices, key=jax.random.PRNGKey(1), eval_data=(x[:40], y[:40]),
              verbose=False)
with jax.default_matmul_precision("highest"):
    single, single_history = train.fit(model, loss, optax.adam(1e-2), (x, y), **kwargs)
    sharded, sharded_history = train.fit(model, loss, optax.adam(1e-2), (x, y), mesh=distributed.data_mesh(),
                                         **kwargs)
chex.assert_trees_all_close(jax.device_get(sharded.params), jax.device_get(single.params), rtol=1e-4, atol=1e-5)
chex.assert_trees_all_close(jax.device_get(sharded.model_state), jax.device_get(single.model_state),
                            rtol=1e-4, atol=1e-5)
np.testing.assert_allclose(sharded_history.train_loss, single_history.train_loss, rtol=1e-4)
np.testing.assert_allclose(sharded_history.eval_loss, single_history.eval_loss, rtol=1e-4)
print(json.dumps({"devices": devices, "loss": sharded_history.train_loss[-1], "ok": True}))
