"""Checkpoints: round trips, validation against `like`, corruption and atomic writes."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import checkpoint, draws, train
from fnnet.app import cli
from test_cli import _one_line_error


def _state():
    model = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(2))
    return model, train.init_state(model, optax.adam(1e-3), jax.random.PRNGKey(0), (3,))


def test_round_trip_train_state_exactly(tmp_path):
    _, state = _state()
    path = fnnet.save(tmp_path / "state.safetensors", state, metadata={"epoch": 7, "note": "hi"})
    loaded = fnnet.load(path, like=state)
    assert jax.tree.structure(loaded) == jax.tree.structure(state)
    chex.assert_trees_all_equal(loaded, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(loaded, state)
    assert checkpoint.read_metadata(path) == {"epoch": 7, "note": "hi"}


def test_load_without_like_gives_the_real_nesting(tmp_path):
    params = ({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, (), {"w": jnp.ones((3, 1)), "b": jnp.ones(1)})
    fnnet.save(tmp_path / "p.safetensors", params)
    loaded = fnnet.load(tmp_path / "p.safetensors")
    assert isinstance(loaded, list) and len(loaded) == 3 and loaded[1] == []  # the Relu's () is kept
    chex.assert_trees_all_equal(jax.tree.leaves(loaded), jax.tree.leaves(params))
    assert jax.tree.structure(loaded) == jax.tree.structure([{"b": 0, "w": 0}, [], {"b": 0, "w": 0}])


def test_load_without_like_rebuilds_a_train_state(tmp_path):
    model = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(2), fnnet.Tanh)
    optimizer = optax.chain(optax.add_decayed_weights(1e-4, mask=train.weight_decay_mask), optax.adam(1e-3))
    state = train.init_state(model, optimizer, jax.random.PRNGKey(0), (3,))
    tree = {"state": state, "none": None, "empty": [], "key": jax.random.key(5)}
    loaded = fnnet.load(fnnet.save(tmp_path / "s.safetensors", tree))
    # NamedTuples come back as dicts keyed by field, tuples as lists, None and empties kept
    assert sorted(loaded["state"]) == sorted(state._fields)  # params, opt_state, step, key...
    assert loaded["none"] is None and loaded["empty"] == []
    assert jax.tree.structure(loaded["state"]["params"]) == jax.tree.structure([{"b": 0, "w": 0}, [], {"b": 0, "w": 0}, []])
    assert loaded["state"]["opt_state"][0] == {"inner_state": {}}  # MaskedState(EmptyState())
    for field in state._fields:
        chex.assert_trees_all_equal(jax.tree.leaves(loaded["state"][field]), jax.tree.leaves(getattr(state, field)))
    np.testing.assert_array_equal(jax.random.key_data(loaded["key"]), jax.random.key_data(tree["key"]))
    x = jnp.linspace(-1, 1, 15).reshape(5, 3)
    np.testing.assert_array_equal(model.apply(loaded["state"]["params"], x), model.apply(state.params, x))


def test_model_applies_to_params_loaded_from_a_fit_checkpoint(tmp_path):
    """The file ``fnnet train`` writes: ``model.apply(fnnet.load(path)["params"], x)`` just works."""
    model = fnnet.serial(fnnet.Dense(5), fnnet.Relu, fnnet.Dense(3), fnnet.Relu, fnnet.Dense(1))
    x = draws.normal(jax.random.PRNGKey(1), (16, 2))
    y = (x[:, :1] > 0).astype(jnp.float32)
    state, _ = train.fit(model, fnnet.losses.sigmoid_binary_cross_entropy, optax.adam(1e-2), (x, y), epochs=1,
                         batch_size=8, key=jax.random.PRNGKey(0), verbose=False, checkpoint_dir=tmp_path)
    loaded = fnnet.load(tmp_path / train.CHECKPOINT_NAME)
    np.testing.assert_array_equal(model.apply(loaded["params"], x), model.apply(state.params, x))
    # like=params on the whole-TrainState file loads just the params, in their exact structure
    params = fnnet.load(tmp_path / train.CHECKPOINT_NAME, like=state.params)
    assert jax.tree.structure(params) == jax.tree.structure(state.params)
    chex.assert_trees_all_equal(params, state.params)
    bigger = fnnet.serial(fnnet.Dense(5), fnnet.Relu, fnnet.Dense(3), fnnet.Relu, fnnet.Dense(2))
    with pytest.raises(checkpoint.CheckpointError, match=r"'params/4/b' is float32\[1\], expected float32\[2\]"):
        fnnet.load(tmp_path / train.CHECKPOINT_NAME, like=bigger.init(jax.random.PRNGKey(0), (2,))[1])


def test_files_without_a_recorded_tree_still_load(tmp_path):
    import safetensors.numpy

    params = ({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, (), {"w": jnp.ones((3, 1)), "b": jnp.ones(1)})
    path = fnnet.save(tmp_path / "p.safetensors", params)
    tensors, metadata = checkpoint._read(path)
    del metadata["fnnet.skeleton"]  # as written before fnnet recorded it
    safetensors.numpy.save_file(tensors, str(path), metadata=metadata)
    loaded = fnnet.load(path)
    assert sorted(loaded) == ["0", "2"]  # the old nesting: dicts, and no entry for the Relu
    np.testing.assert_array_equal(loaded["2"]["w"], np.ones((3, 1)))
    chex.assert_trees_all_equal(fnnet.load(path, like=params), params)


def test_save_refuses_a_folder_or_a_path_under_a_file(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match=f"{tmp_path}: is a folder"):
        fnnet.save(tmp_path, {"w": jnp.ones(2)})
    (tmp_path / "file").write_text("x")
    with pytest.raises(checkpoint.CheckpointError, match="file is a file, not a folder"):
        fnnet.save(tmp_path / "file" / "c.safetensors", {"w": jnp.ones(2)})


def test_typed_prng_keys_round_trip(tmp_path):
    tree = {"key": jax.random.key(3), "x": jnp.arange(3)}
    fnnet.save(tmp_path / "k.safetensors", tree)
    loaded = fnnet.load(tmp_path / "k.safetensors", like=tree)
    np.testing.assert_array_equal(jax.random.key_data(loaded["key"]), jax.random.key_data(tree["key"]))
    np.testing.assert_array_equal(jax.random.normal(loaded["key"], (2,)), jax.random.normal(tree["key"], (2,)))


def test_wrong_structure_names_the_path(tmp_path):
    model, state = _state()
    path = fnnet.save(tmp_path / "s.safetensors", state.params)
    bigger = fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(5)).init(jax.random.PRNGKey(0), (3,))[1]
    with pytest.raises(checkpoint.CheckpointError, match=r"s\.safetensors.*'2/b' is float32\[2\], expected float32\[5\]"):
        fnnet.load(path, like=bigger)
    with pytest.raises(checkpoint.CheckpointError, match=r"has no entry for '3/w'"):
        fnnet.load(path, like=state.params + ({"w": jnp.zeros((2, 2))},))
    with pytest.raises(checkpoint.CheckpointError, match=r"holds '2/b'"):
        fnnet.load(path, like=state.params[:2])
    as_f64 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.int32), state.params)
    with pytest.raises(checkpoint.CheckpointError, match="expected int32"):
        fnnet.load(path, like=as_f64)


@pytest.mark.parametrize("damage", ["truncate-header", "truncate-data", "flip-byte", "empty", "garbage"])
def test_damaged_file_is_refused_naming_the_file(tmp_path, damage):
    _, state = _state()
    path = fnnet.save(tmp_path / "ckpt.safetensors", state)
    data = path.read_bytes()
    if damage == "truncate-header":
        data = data[:20]
    elif damage == "truncate-data":
        data = data[:-50]
    elif damage == "flip-byte":
        data = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]
    elif damage == "empty":
        data = b""
    else:
        data = os.urandom(300)
    path.write_bytes(data)
    with pytest.raises(checkpoint.CheckpointError, match="ckpt.safetensors"):
        fnnet.load(path, like=state)


def test_missing_file(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint file"):
        fnnet.load(tmp_path / "nope.safetensors")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    _, state = _state()
    path = fnnet.save(tmp_path / "c.safetensors", state, metadata={"epoch": 1})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(checkpoint.CheckpointWriteError,
                       match=r"could not write .*c.safetensors: disk full \(simulated\); the previous checkpoint there is kept"):
        fnnet.save(path, jax.tree.map(lambda a: a + 1, state), metadata={"epoch": 2})
    assert path.read_bytes() == before
    assert checkpoint.read_metadata(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left behind


def test_no_pickle_in_files(tmp_path):
    _, state = _state()
    data = fnnet.save(tmp_path / "c.safetensors", state).read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    import json
    header = json.loads(data[8:8 + header_len])
    assert "params/0/w" in header and "opt_state/0/mu/0/w" in header


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_which(capsys, tmp_path, monkeypatch):
    out = tmp_path / "bc"
    real_replace, calls = os.replace, []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) > 2:
            raise OSError(27, "File too large")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    assert cli.main(["train", "xor", "--epochs", "5", "--checkpoint-every", "0", "--out", str(out), "--quiet"]) == 4
    _one_line_error(capsys, f"could not write {out / 'checkpoint.safetensors'}: File too large; "
                            f"the previous checkpoint (epoch 2) is kept")
    assert checkpoint.read_metadata(out / "checkpoint.safetensors")["epoch"] == 2
