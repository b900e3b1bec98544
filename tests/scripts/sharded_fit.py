"""Run with N fake CPU devices: data-parallel fit over a mesh vs. a single device.

Usage: python sharded_fit.py N OUT_DIR   (prints one JSON line)
"""
import json
import os
import sys

devices, out_dir = int(sys.argv[1]), sys.argv[2]
# quick compiles (as conftest.py asks for the rest of the suite): these tiny models are compile-bound
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0 "
                           "--xla_llvm_disable_expensive_passes=true")

import chex  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import fnnet  # noqa: E402
from fnnet import checkpoint, distributed, train  # noqa: E402

assert len(jax.devices()) == devices, jax.devices()
kx, kw = jax.random.split(jax.random.PRNGKey(0))
x = np.asarray(jax.random.normal(kx, (200, 10)))
y = np.asarray(jnp.argmax(x @ jax.random.normal(kw, (10, 3)), -1)).astype(np.int32)
model = fnnet.serial(fnnet.Dense(32), fnnet.Relu, fnnet.Dense(3))
loss = fnnet.losses.softmax_cross_entropy
kwargs = dict(epochs=3, batch_size=8 * devices, key=jax.random.PRNGKey(1), eval_data=(x[:50], y[:50]),
              verbose=False)
mesh = distributed.data_mesh()
with jax.default_matmul_precision("highest"):
    single, single_history = train.fit(model, loss, optax.adam(1e-2), (x, y), **kwargs)
    sharded, sharded_history = train.fit(model, loss, optax.adam(1e-2), (x, y), mesh=mesh,
                                         checkpoint_dir=out_dir, **kwargs)
chex.assert_trees_all_close(jax.device_get(sharded.params), jax.device_get(single.params), rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(sharded_history.train_loss, single_history.train_loss, rtol=1e-5)
np.testing.assert_allclose(sharded_history.eval_accuracy, single_history.eval_accuracy, rtol=1e-6)
spec = sharded.params[0]["w"].sharding
assert spec.is_fully_replicated and len(spec.device_set) == devices, spec

# evaluation sharded over the mesh equals the single-device one (odd batch size: padded, masked)
one = train.evaluate(model, loss, single.params, (x, y), batch_size=37)
many = train.evaluate(model, loss, sharded.params, (x, y), batch_size=37, mesh=mesh)
assert abs(one["loss"] - many["loss"]) < 1e-5 and one["accuracy"] == many["accuracy"], (one, many)

# the checkpoint written by the sharded run loads on one device, and back onto the mesh
path = os.path.join(out_dir, train.CHECKPOINT_NAME)
on_one = checkpoint.load(path, like=jax.device_get(single))
chex.assert_trees_all_equal(jax.device_get(on_one.params), jax.device_get(sharded.params))
replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), single)
back = checkpoint.load(path, like=like)
assert back.params[0]["w"].sharding == replicated
saved_single = os.path.join(out_dir, "single.safetensors")
fnnet.save(saved_single, single)
reloaded = checkpoint.load(saved_single, like=like)
assert len(reloaded.params[0]["w"].sharding.device_set) == devices

# a batch that does not divide over the devices is refused up front
try:
    train.fit(model, loss, optax.sgd(0.1), (x, y), epochs=1, batch_size=devices + 1,
              key=jax.random.PRNGKey(0), mesh=mesh, verbose=False)
    raise SystemExit("indivisible batch accepted")
except ValueError as error:
    assert f"does not divide evenly over the mesh's {devices} devices" in str(error), error

# a CNN with BatchNorm and Dropout: its batch statistics are the global batch's (same process, 4 devices)
batchnorm = False
if devices == 4:
    import runpy  # noqa: E402

    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sharded_batchnorm.py"),
                   run_name="__main__")
    batchnorm = True

print(json.dumps({"devices": devices, "loss": sharded_history.train_loss[-1], "batchnorm": batchnorm, "ok": True}))
