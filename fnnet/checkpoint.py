"""Checkpoints that lose nothing: pytrees in safetensors files, written atomically.

* No pickle: a safetensors file is a JSON header plus raw tensor bytes, so
  loading a file cannot run code.
* Keys are pytree paths (``params/0/w``, ``opt_state/0/mu/2/b``...); the header also
  records the tree's shape (its "skeleton": dicts, sequences, ``None`` s and empty
  entries such as a ``Relu``'s ``()`` params), so ``load(path)`` gives back the real
  nesting without being told what to expect.
* Writes go to a temporary file in the same folder, are flushed to disk, then
  renamed over the old file: a crash mid-write leaves the previous checkpoint.
* The header records a SHA-256 of the tensor bytes, so a truncated or corrupted
  file is refused with an error naming the file.
* ``load(path, like=tree)`` validates structure, shapes and dtypes against
  ``like`` and names the first path that does not fit; ``like=params`` also reads just
  the params out of a full :class:`fnnet.train.TrainState` checkpoint.

Example:
  >>> import tempfile, os, jax.numpy as jnp, fnnet
  >>> path = os.path.join(tempfile.mkdtemp(), "params.safetensors")
  >>> written = fnnet.save(path, {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, metadata={"epoch": 3})
  >>> fnnet.load(path, like={"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})["w"].shape
  (2, 3)
  >>> fnnet.checkpoint.read_metadata(path)["epoch"]
  3
  >>> _ = fnnet.save(path, ({"w": jnp.ones((2, 3))}, (), {"w": jnp.ones((3, 1))}))
  >>> [sorted(entry) for entry in fnnet.load(path)]      # no like: lists and dicts
  [['w'], [], ['w']]
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from fnnet.host import on_device

_CHECKSUM = "fnnet.sha256"
_USER = "fnnet.metadata"
_KEYS = "fnnet.prng_key_impls"
_SKELETON = "fnnet.skeleton"
_PARAMS_PREFIX = "params/"  # TrainState's params, for load(path, like=params)


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted, or does not fit the expected tree."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, file too large, no permission); the file
    that was there before, if any, is left as it was (writes are atomic)."""


def _key_to_str(entry) -> str:
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return entry.name
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def path_to_str(path) -> str:
    """``params/0/w`` for a pytree key path (the checkpoint's key for that leaf)."""
    return "/".join(_key_to_str(entry) for entry in path) or "."


def _children(node) -> list[tuple[Any, Any]]:
    """``(key entry, child)`` for each child of one pytree node (one level down)."""
    entries = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda child: child is not node)[0]
    return [(path[0], child) for path, child in entries]


def _skeleton(tree, path=()):
    """The tree's shape as JSON: an object for a dict or NamedTuple (or any node with named
    children), an array for a list or tuple, ``null`` for ``None``, and for each array leaf
    its key in the file (a string)."""
    if tree is None:
        return None
    structure = jax.tree.structure(tree)
    if structure.num_nodes == 1 and structure.num_leaves == 1:
        return path_to_str(path)
    children = _children(tree)
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return [_skeleton(child, path + (entry,)) for entry, child in children]
    if not isinstance(tree, dict) and not hasattr(tree, "_fields") and children and \
            all(isinstance(entry, (jax.tree_util.SequenceKey, jax.tree_util.FlattenedIndexKey))
                for entry, _ in children):
        return [_skeleton(child, path + (entry,)) for entry, child in children]
    return {_key_to_str(entry): _skeleton(child, path + (entry,)) for entry, child in children}


def _flatten(tree) -> list[tuple[str, Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(path_to_str(path), leaf) for path, leaf in leaves]


def _is_prng_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _checksum(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(str(tensors[name].dtype).encode())
        digest.update(str(tensors[name].shape).encode())
        digest.update(np.asarray(tensors[name], order="C").tobytes())
    return digest.hexdigest()


def save(path, tree, *, metadata: dict | None = None) -> pathlib.Path:
    """Saves a pytree of arrays to ``path`` (safetensors), atomically.

    Args:
      path: the file to write (its folder is created if needed).
      tree: any pytree of arrays (params, a :class:`fnnet.train.TrainState`...).
        Typed PRNG keys are stored as their key data.
      metadata: JSON-serialisable extra information (epoch, history...), read back
        by :func:`read_metadata`.

    Returns:
      the path written.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give the checkpoint's file name, e.g. "
                              f"{path / 'checkpoint.safetensors'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CheckpointError(f"{path}: cannot write it, {parent} is a file, not a folder")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, key_impls = {}, {}
    for name, leaf in _flatten(tree):
        if _is_prng_key(leaf):
            key_impls[name] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        if name in tensors:
            raise CheckpointError(f"{path}: two leaves share the key {name!r}")
        tensors[name] = np.array(jax.device_get(leaf), order="C")  # (ascontiguousarray makes 0-d 1-d)
    header = {_CHECKSUM: _checksum(tensors), _USER: json.dumps(metadata or {}),
              _KEYS: json.dumps(key_impls), _SKELETON: json.dumps(_skeleton(tree))}
    data = safetensors.numpy.save(tensors, metadata=header)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        kept = "; the previous checkpoint there is kept" if path.exists() else ""
        raise CheckpointWriteError(f"could not write {path}: {error.strerror or error}{kept}") from error
    finally:
        if temporary.exists():
            temporary.unlink()
    try:  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass
    return path


def _read(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    data = path.read_bytes()
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        tensors = safetensors.numpy.load(data)
    except Exception as error:  # safetensors raises its own error types for broken headers
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint (truncated or "
                              f"corrupted, {len(data)} bytes): {error}") from None
    metadata = header.get("__metadata__") or {}
    if _CHECKSUM not in metadata:
        raise CheckpointError(f"{path}: not an fnnet checkpoint (no checksum in its header)")
    if _checksum(tensors) != metadata[_CHECKSUM]:
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
    return tensors, metadata


def read_metadata(path) -> dict:
    """The ``metadata`` dict given to :func:`save` (the file is verified first)."""
    return json.loads(_read(path)[1].get(_USER, "{}"))


def _nest(flat: dict[str, np.ndarray]):
    root: dict = {}
    for name, value in flat.items():
        node = root
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(node):
        if not isinstance(node, dict):
            return on_device(node, copy=False)  # read from the file just now: ours alone
        items = {k: listify(v) for k, v in node.items()}
        if items and sorted(items) == sorted(str(i) for i in range(len(items))):
            return [items[str(i)] for i in range(len(items))]
        return items

    return listify(root)


def _rebuild(path, skeleton, tensors: dict[str, np.ndarray], key_impls: dict[str, str]):
    used = set()

    def build(node):
        if node is None:
            return None
        if isinstance(node, str):
            if node not in tensors:
                raise CheckpointError(f"{path}: its header's tree names {node!r}, which the file "
                                      f"does not hold (corrupted header)")
            used.add(node)
            value = on_device(tensors[node], copy=False)
            return jax.random.wrap_key_data(value, impl=key_impls[node]) if node in key_impls else value
        if isinstance(node, list):
            return [build(child) for child in node]
        if isinstance(node, dict):
            return {key: build(child) for key, child in node.items()}
        raise CheckpointError(f"{path}: its header's tree holds {node!r} (corrupted header)")

    tree = build(skeleton)
    if used != set(tensors):
        raise CheckpointError(f"{path}: holds {sorted(set(tensors) - used)[0]!r}, which its header's tree "
                              f"does not place (corrupted header)")
    return tree


def load(path, like=None, *, prefix: str | None = None):
    """Loads a pytree saved by :func:`save`.

    Args:
      path: the checkpoint file.
      like: the expected tree (arrays or ``jax.ShapeDtypeStruct`` s). The result has
        its exact structure (tuples, NamedTuples, optax states), and every leaf must
        have its shape and dtype; a leaf of ``like`` with a sharding puts the loaded
        array on that sharding. When the file holds a whole
        :class:`fnnet.train.TrainState` (keys ``params/...``, ``opt_state/...``) and none
        of ``like``'s keys, they are looked for under ``params/``: ``like=params`` loads just
        the params (every one must be there, and nothing else under ``params/``), so
        ``load(run_dir / "checkpoint.safetensors", like=params)`` works.
      prefix: with ``like``, read only the entries under this key prefix, e.g.
        ``prefix="model_state/"`` for a TrainState file's model state.

    Returns:
      With ``like``: a tree of ``like``'s structure. Without it: the saved tree's nesting
      in plain containers: dicts for dicts and NamedTuples (keyed by field name, e.g.
      ``"params"``, ``"opt_state"``), lists for lists and tuples (empty ones kept, so a
      ``serial`` model's params are a list with one entry per layer and
      ``model.apply(load(path)["params"], x)`` works), ``None`` for ``None``, and
      arrays (typed PRNG keys as keys). Files written before fnnet recorded the tree
      give nested dicts, lists where the keys are exactly 0..n-1, and no empty entries.

    Raises:
      CheckpointError: naming the file and, for a mismatch with ``like``, the path.
    """
    tensors, metadata = _read(path)
    key_impls = json.loads(metadata.get(_KEYS, "{}"))
    if like is None:
        if _SKELETON not in metadata:
            return _nest(tensors)
        try:
            skeleton = json.loads(metadata[_SKELETON])
        except ValueError as error:
            raise CheckpointError(f"{path}: its header's tree is not valid JSON ({error})") from None
        return _rebuild(path, skeleton, tensors, key_impls)
    expected = _flatten(like)
    names = [name for name, _ in expected]
    if prefix is None:
        prefix = ""
        if names and "." not in names and not any(name in tensors for name in names) and \
                any(name.startswith(_PARAMS_PREFIX) for name in tensors):  # a TrainState file, like=params
            prefix = _PARAMS_PREFIX
    if prefix:
        tensors = {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}
    missing = [name for name in names if name not in tensors]
    if missing:
        raise CheckpointError(f"{path}: has no entry for {prefix + missing[0]!r} "
                              f"({len(missing)} of {len(names)} expected leaves missing)")
    extra = sorted(set(tensors) - set(names))
    if extra:
        raise CheckpointError(f"{path}: holds {prefix + extra[0]!r}, which the expected tree does not have "
                              f"({len(extra)} unexpected leaves)")
    leaves = []
    for name, reference in expected:
        value = tensors[name]
        if _is_prng_key(reference):
            want_shape = jax.random.key_data(reference).shape if isinstance(reference, jax.Array) \
                else None
            value = jax.random.wrap_key_data(on_device(value, copy=False), impl=key_impls.get(prefix + name))
            if want_shape is not None and jax.random.key_data(value).shape != want_shape:
                raise CheckpointError(f"{path}: {prefix + name!r} has key data of shape "
                                      f"{jax.random.key_data(value).shape}, expected {want_shape}")
            leaves.append(value)
            continue
        want_shape, want_dtype = np.shape(reference), np.dtype(jnp.result_type(reference))
        if value.shape != want_shape or value.dtype != want_dtype:
            raise CheckpointError(f"{path}: {prefix + name!r} is {value.dtype}{list(value.shape)}, expected "
                                  f"{want_dtype}{list(want_shape)}")
        sharding = getattr(reference, "sharding", None)
        leaves.append(jax.device_put(value, sharding) if sharding is not None else on_device(value, copy=False))
    return jax.tree.unflatten(jax.tree.structure(like), leaves)
