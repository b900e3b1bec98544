"""Data loading: IDX parsing, the search order, checksums, and clear errors for bad files."""

import gzip
import hashlib
import io
import os
import struct

import numpy as np
import pytest

from fnnet import datasets
from fnnet.datasets import DataError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_split(folder, n=12, split="train", labels=None, images=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels
    files = datasets.SPLITS[split]
    (folder / files.images).write_bytes(gzip.compress(_idx_bytes(images)))
    (folder / files.labels).write_bytes(gzip.compress(_idx_bytes(labels)))
    return images, labels


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real data, cache or network: every test builds its own files."""
    monkeypatch.delenv("FNNET_DATA", raising=False)
    monkeypatch.setenv("FNNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FNNET_OFFLINE", "1")


def test_read_synthetic_idx_round_trip(tmp_path):
    images, labels = _write_split(tmp_path / "mnist")
    x, y = datasets.mnist("train", path=tmp_path / "mnist", verify=False)
    assert x.shape == (12, 28, 28) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    assert 0.0 <= x.min() and x.max() <= 1.0
    flat, _ = datasets.mnist("train", path=tmp_path / "mnist", verify=False, flatten=True)
    assert flat.shape == (12, 784)


def test_uncompressed_idx(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(_idx_bytes(np.arange(5, dtype=np.uint8)))
    np.testing.assert_array_equal(datasets.read_idx(path), np.arange(5))


@pytest.mark.parametrize("damage,message", [
    ("bad-magic", "not an IDX file"),
    ("truncated-gzip", "not a readable gzip file"),
    ("truncated-data", "truncated: magic 2051 with dimensions 12x28x28 needs 9424 bytes"),
    ("trailing", "has trailing bytes"),
    ("not-gzip", "not a readable gzip file"),
])
def test_broken_files_name_the_file_and_the_problem(tmp_path, damage, message):
    _write_split(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if damage == "bad-magic":
        path.write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    elif damage == "truncated-gzip":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "truncated-data":
        path.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "trailing":
        path.write_bytes(gzip.compress(raw + b"\x00" * 7))
    else:
        path.write_bytes(raw)  # named .gz but not compressed
    with pytest.raises(DataError, match=message) as info:
        datasets.mnist("train", path=tmp_path / "mnist", verify=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_label_count_and_range_are_checked(tmp_path):
    _write_split(tmp_path / "a", labels=np.zeros(11, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: expected 12 labels"):
        datasets.mnist("train", path=tmp_path / "a", verify=False)
    _write_split(tmp_path / "b", labels=np.full(12, 12, np.uint8))
    with pytest.raises(DataError, match="label 12 out of range"):
        datasets.mnist("train", path=tmp_path / "b", verify=False)


def test_checksum_mismatch_names_the_file(tmp_path):
    _write_split(tmp_path / "mnist")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: SHA-256 [0-9a-f]{64} does not match"):
        datasets.mnist("train", path=tmp_path / "mnist")


def test_verified_files_are_remembered_until_they_change(tmp_path, monkeypatch):
    _write_split(tmp_path / "mnist")
    files = datasets.SPLITS["train"]
    sums = {name: {hashlib.sha256((tmp_path / "mnist" / name).read_bytes()).hexdigest()} for name in files}
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", sums)
    datasets.mnist("train", path=tmp_path / "mnist")
    assert (tmp_path / "cache" / "verified.json").exists()
    calls = []
    monkeypatch.setattr(datasets, "_sha256", lambda p: calls.append(p) or "0" * 64)
    datasets.mnist("train", path=tmp_path / "mnist")          # remembered: no re-hash
    assert calls == []
    image = tmp_path / "mnist" / files.images
    image.write_bytes(image.read_bytes())                      # touched: new mtime, hashed again
    os.utime(image, ns=(1, 1))
    with pytest.raises(DataError, match="does not match"):
        datasets.mnist("train", path=tmp_path / "mnist")


def test_search_order(tmp_path, monkeypatch):
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", tmp_path / "cache"
    _write_split(explicit / "mnist", labels=np.full(12, 1, np.uint8))
    _write_split(env / "mnist", labels=np.full(12, 2, np.uint8))
    _write_split(cache / "mnist", labels=np.full(12, 3, np.uint8))
    monkeypatch.setenv("FNNET_DATA", str(env))
    assert datasets.mnist("train", path=explicit, verify=False)[1][0] == 1   # parent folder works
    assert datasets.mnist("train", verify=False)[1][0] == 2
    monkeypatch.delenv("FNNET_DATA")
    assert datasets.mnist("train", verify=False)[1][0] == 3
    monkeypatch.delenv("FNNET_SYSTEM_DATA", raising=False)   # the tests point it at an empty folder
    places = datasets.search_paths("fashion-mnist")
    assert places[-1].as_posix() == "/usr/share/datasets/fashion-mnist"     # Debian's package


def test_missing_data_error_lists_places_and_remedy(tmp_path, monkeypatch):
    monkeypatch.delenv("FNNET_SYSTEM_DATA", raising=False)   # the message names Debian's folder
    real_is_file = datasets.pathlib.Path.is_file                 # as on a machine without Debian's package:
    monkeypatch.setattr(datasets.pathlib.Path, "is_file",
                        lambda self: not str(self).startswith("/usr/share/datasets") and real_is_file(self))
    with pytest.raises(DataError) as info:
        datasets.fashion_mnist("test", path=tmp_path / "nothing")
    text = str(info.value)
    assert "t10k-images-idx3-ubyte.gz not found" in text
    assert str(tmp_path / "nothing") in text and "/usr/share/datasets/fashion-mnist" in text
    assert "FNNET_DATA" in text and "dataset-fashion-mnist" in text and "FNNET_OFFLINE" in text


def test_download_verifies_checksum(tmp_path, monkeypatch):
    monkeypatch.delenv("FNNET_OFFLINE")
    payload = gzip.compress(_idx_bytes(np.arange(12, dtype=np.uint8) % 10))
    good = {"t10k-labels-idx1-ubyte.gz": {hashlib.sha256(payload).hexdigest()}}
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", good)
    served = []

    def fake_urlopen(url, timeout):
        served.append((url, timeout))
        return io.BytesIO(payload)

    monkeypatch.setattr(datasets.urllib.request, "urlopen", fake_urlopen)
    path = datasets.find_file("mnist", "t10k-labels-idx1-ubyte.gz")
    assert path == tmp_path / "cache" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert served[0][1] == datasets.DOWNLOAD_TIMEOUT_S
    np.testing.assert_array_equal(datasets.read_idx(path), np.arange(12) % 10)
    path.unlink()
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", {"t10k-labels-idx1-ubyte.gz": {"0" * 64}})
    with pytest.raises(DataError, match="wrong SHA-256"):
        datasets.find_file("mnist", "t10k-labels-idx1-ubyte.gz")
    assert not path.exists()


def test_offline_download_fails_fast_with_reasons(tmp_path, monkeypatch):
    monkeypatch.delenv("FNNET_OFFLINE")

    def refuse(url, timeout):
        raise datasets.urllib.error.URLError("network unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", refuse)
    with pytest.raises(DataError, match=r"download failed:\n  https://.*network unreachable"):
        datasets.mnist("test")


def test_breast_cancer_split_is_stratified_and_standardised_on_train():
    (x_train, y_train), (x_test, y_test) = datasets.breast_cancer(seed=0)
    assert x_train.shape == (455, 30) and x_test.shape == (114, 30) and y_train.shape == (455, 1)
    np.testing.assert_allclose(x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(0), 1, atol=1e-4)
    assert np.abs(x_test.mean(0)).max() > 1e-3                  # test set uses the train statistics
    assert abs(y_train.mean() - y_test.mean()) < 0.01           # stratified
    again = datasets.breast_cancer(seed=0)
    np.testing.assert_array_equal(again[0][0], x_train)


def test_digits_and_regression_and_xor():
    (x, y), (xt, yt) = datasets.digits()
    assert x.shape[1] == 64 and x.max() <= 1.0 and y.dtype == np.int32 and set(np.unique(y)) == set(range(10))
    (rx, ry), _ = datasets.regression(n=100, noise=0.0)
    np.testing.assert_allclose(rx, ry)
    (_, noisy), _ = datasets.regression(n=100, noise=0.1)
    assert np.abs(noisy - rx).max() > 0.01
    x, y = datasets.xor()
    assert y.ravel().tolist() == [0, 1, 1, 0]


def test_real_mnist_and_fashion_through_fnnet_data(shared_data, monkeypatch):
    monkeypatch.setenv("FNNET_DATA", str(shared_data))
    for loader in (datasets.mnist, datasets.fashion_mnist):
        x, y = loader("test")
        assert x.shape == (10000, 28, 28) and y.shape == (10000,)
        assert np.bincount(y).min() > 800
    x, y = datasets.mnist("train", flatten=True)
    assert x.shape == (60000, 784) and y[:5].tolist() == [5, 0, 4, 1, 9]
