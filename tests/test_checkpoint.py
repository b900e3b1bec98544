"""Checkpoints: round trips, validation against `like`, corruption and atomic writes."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnnet
from fnnet import checkpoint, train


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


def test_load_without_like_gives_nested_dicts(tmp_path):
    params = ({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, (), {"w": jnp.ones((3, 1)), "b": jnp.ones(1)})
    fnnet.save(tmp_path / "p.safetensors", params)
    loaded = fnnet.load(tmp_path / "p.safetensors")
    np.testing.assert_array_equal(loaded["0"]["w"] if isinstance(loaded, dict) else loaded[0]["w"],
                                  np.ones((2, 3)))


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
    with pytest.raises(OSError, match="simulated"):
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
