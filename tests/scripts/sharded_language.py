"""Run with 2 fake CPU devices: a char-rnn trained data-parallel (each device its share of every
step's windows, ``jax.shard_map``) against the same on one device, the data-parallel gradients of a
padded batch (weights; a GRU) against one device's, in float64 (the CLI's char-rnn on the cores:
the slow test of tests/test_charrnn.py).

Usage: python sharded_language.py OUT_DIR   (prints one JSON line)
"""
import json
import os
import sys

out_dir = sys.argv[1]
# quick compiles (as conftest.py asks for the rest of the suite): these tiny models are compile-bound
os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import fnnet  # noqa: E402
from fnnet import distributed, train  # noqa: E402
from fnnet.train import language  # noqa: E402

assert len(jax.devices()) == 2, jax.devices()
mesh = distributed.data_mesh()
VOCAB, T = 11, 6
tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (2_000,), 0, VOCAB), np.int32)


def char_rnn(cell):
    return fnnet.serial(fnnet.Embedding(VOCAB, 8), cell(8), cell(8), fnnet.Dense(VOCAB))


# 1. fit_language_model over the mesh equals the one-device run (the recurrent layers' scans
#    under shard_map: their zero carries vary over the devices as the input does); the state replicated
for cell in (fnnet.LSTM,):
    runs = {}
    for name, mesh_ in (("one", None), ("two", mesh)):
        runs[name] = language.fit_language_model(
            char_rnn(cell), optax.adam(1e-2), tokens[:1500], tokens[1500:], block_size=T, batch_size=4, steps=4,
            eval_interval=2, eval_batches=2, key=jax.random.PRNGKey(1), verbose=False, mesh=mesh_,
            checkpoint_dir=os.path.join(out_dir, f"{cell.__name__}-{name}"))
    (one, one_history), (two, two_history) = runs["one"], runs["two"]
    chex.assert_trees_all_close(jax.device_get(two.params), jax.device_get(one.params), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(two_history.train_loss, one_history.train_loss, rtol=1e-10)
    np.testing.assert_allclose(two_history.val_loss, one_history.val_loss, rtol=1e-10)
    sharding = jax.tree.leaves(two.params)[0].sharding
    assert sharding.is_fully_replicated and len(sharding.device_set) == 2, sharding

# 2. make_train_step(mesh=...): a padded batch's loss and gradients are the mean over its valid examples,
#    whichever device holds them (here device 1's share is all padding), as on one device
model = fnnet.serial(fnnet.Embedding(VOCAB, 5), fnnet.GRU(5, return_sequences=False), fnnet.Dense(VOCAB))
loss = fnnet.losses.softmax_cross_entropy
state = train.init_state(model, optax.sgd(0.1), jax.random.PRNGKey(2), (T,))
x = jax.random.randint(jax.random.PRNGKey(3), (8, T), 0, VOCAB)
y = jax.random.randint(jax.random.PRNGKey(4), (8,), 0, VOCAB)
for weights in (None, jnp.array([1, 1, 0, 1, 0, 0, 0, 0], jnp.float64)):
    after = {}
    for name, mesh_ in (("one", None), ("two", mesh)):
        step = jax.jit(train.make_train_step(model, loss, optax.sgd(0.1), mesh=mesh_))
        after[name] = jax.device_get(step(state, x, y, weights))
    chex.assert_trees_all_close(after["two"], after["one"], rtol=1e-10, atol=1e-12)

# 3. what cannot be split is refused, naming why
def refused(call, words):
    try:
        call()
    except ValueError as error:
        assert words in str(error), error
        return
    raise SystemExit(f"accepted: {words}")


refused(lambda: language.fit_language_model(char_rnn(fnnet.LSTM), optax.adam(1e-2), tokens[:1500], tokens[1500:],
                                            block_size=T, batch_size=3, steps=1, key=jax.random.PRNGKey(1),
                                            verbose=False, mesh=mesh),
        "batch_size 3 does not divide evenly over the mesh's 2 devices")
refused(lambda: language.fit_language_model(char_rnn(fnnet.LSTM), optax.adam(1e-2), tokens[:1500], tokens[1500:],
                                            block_size=T, batch_size=4, steps=1, key=jax.random.PRNGKey(1),
                                            verbose=False, mesh=mesh, windows="streams"),
        "windows='streams' keeps each stream's carry")
refused(lambda: train.make_train_step(model, loss, optax.sgd(0.1), monitor=1, mesh=mesh), "cannot be combined with mesh")

print(json.dumps({"devices": len(jax.devices()), "ok": True}))
