"""Data sets: the tutorials' XOR, regression, breast cancer and digits; MNIST and Fashion-MNIST;
Tiny Shakespeare (:func:`tiny_shakespeare`, character ids for a GPT).

MNIST-style sets are read from the four standard IDX ``.gz`` files (Tiny Shakespeare from
char-rnn's ``input.txt``). They are looked for, in this order:

1. an explicit ``path=`` (the folder holding the four files, or its parent);
2. ``$FNNET_DATA/<name>/`` (or ``$FNNET_DATA`` itself);
3. the user cache ``~/.cache/fnnet/<name>/`` (``$FNNET_CACHE`` overrides ``~/.cache/fnnet``);
4. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-fashion-mnist`` package;
   ``$FNNET_SYSTEM_DATA`` names another system folder, e.g. an empty one for tests);
5. a download from the canonical mirrors into the cache, verified by SHA-256
   (skipped when ``download=False`` or ``FNNET_OFFLINE=1``; a network failure is an
   error after a short timeout, never a hang).

Every file is checked: its SHA-256 against the published value (remembered in the
cache after the first check, so later loads skip re-hashing), then the IDX magic
number, dimensions and byte count. A missing, truncated or corrupted file raises
:class:`DataError` naming the file, what is wrong, and where fnnet looked.

Example:
  >>> from fnnet import datasets
  >>> x, y = datasets.xor()
  >>> x.shape, y.shape
  ((4, 2), (4, 1))
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import struct
import tempfile
import urllib.error
import urllib.request
from typing import NamedTuple

import numpy as np


class DataError(OSError):
    """A data file is missing, truncated or corrupted; the message names it."""


# --- the tutorials' small sets -------------------------------------------------------------

def xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR examples: ``x`` (4, 2) and ``y`` (4, 1), float32."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    return x, np.array([[0], [1], [1], [0]], np.float32)


def regression(n: int = 256, dim: int = 4, *, noise: float = 0.0, seed: int = 0,
               weights: np.ndarray | None = None, test_fraction: float = 0.25):
    """The single-layer-perceptron case: learn a linear map ``y = x @ W`` (default ``W = I``).

    Returns ``((x_train, y_train), (x_test, y_test))``, float32, inputs uniform in
    [0, 1), targets with optional Gaussian ``noise`` (stddev).
    """
    rng = np.random.default_rng(seed)
    weights = np.eye(dim, dtype=np.float32) if weights is None else np.asarray(weights, np.float32)
    x = rng.random((n, weights.shape[0]), dtype=np.float32)
    y = x @ weights + noise * rng.standard_normal((n, weights.shape[1])).astype(np.float32)
    cut = n - int(round(n * test_fraction))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _standardise(train, test):
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def breast_cancer(*, test_size: float = 0.2, seed: int = 0):
    """scikit-learn's Wisconsin breast-cancer set: 569 examples, 30 features, binary labels.

    A seeded, stratified train/test split, standardised with the train set's mean and
    standard deviation only. Returns ``((x_train, y_train), (x_test, y_test))`` with
    labels of shape (N, 1), float32 (1 = benign).
    """
    from sklearn.datasets import load_breast_cancer  # optional: scikit-learn loads slowly, only these sets need it
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=test_size, random_state=seed, stratify=data.target)
    x_train, x_test = _standardise(x_train, x_test)
    return ((x_train, y_train[:, None].astype(np.float32)),
            (x_test, y_test[:, None].astype(np.float32)))


def digits(*, test_size: float = 0.2, seed: int = 0, flatten: bool = True):
    """scikit-learn's 8x8 digits: 1,797 images scaled to [0, 1], integer labels 0-9.

    Returns ``((x_train, y_train), (x_test, y_test))``; images (N, 64), or (N, 8, 8)
    with ``flatten=False``; a seeded, stratified split.
    """
    from sklearn.datasets import load_digits  # optional: as above
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    if flatten:
        images = images.reshape(len(images), -1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target.astype(np.int32), test_size=test_size, random_state=seed,
        stratify=data.target)
    return (x_train, y_train), (x_test, y_test)


# --- IDX files -----------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (gzip-compressed if its name ends in ``.gz``), checking it fully.

    The header is two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension; the data must be exactly that many items.
    """
    path = pathlib.Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (EOFError, gzip.BadGzipFile, OSError) as error:
        raise DataError(f"{path}: not a readable gzip file (truncated or corrupted: {error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: magic {int.from_bytes(raw[:4], 'big')} with dimensions "
                        f"{'x'.join(map(str, dims))} needs {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


class _Files(NamedTuple):
    images: str
    labels: str


SPLITS = {"train": _Files("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": _Files("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

# SHA-256 of each published file (Fashion-MNIST: upstream and Debian's re-headered gzip).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": {"440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"},
        "train-labels-idx1-ubyte.gz": {"3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"},
        "t10k-images-idx3-ubyte.gz": {"8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"},
        "t10k-labels-idx1-ubyte.gz": {"f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": {"3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                       "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"},
        "train-labels-idx1-ubyte.gz": {"a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                       "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"},
        "t10k-images-idx3-ubyte.gz": {"346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                      "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"},
        "t10k-labels-idx1-ubyte.gz": {"67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                      "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"},
    },
    "tinyshakespeare": {
        "input.txt": {"86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
    },
}

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"],
    "tinyshakespeare": ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"],
}

DOWNLOAD_TIMEOUT_S = 20


def cache_dir() -> pathlib.Path:
    """``$FNNET_CACHE`` or ``~/.cache/fnnet``: downloads and the record of verified files."""
    return pathlib.Path(os.environ.get("FNNET_CACHE") or pathlib.Path.home() / ".cache" / "fnnet")


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified_record() -> pathlib.Path:
    return cache_dir() / "verified.json"


def _already_verified(path: pathlib.Path) -> bool:
    try:
        record = json.loads(_verified_record().read_text())
        stat = path.stat()
        return record.get(str(path.resolve())) == [stat.st_size, stat.st_mtime_ns]
    except (OSError, ValueError):
        return False


def _remember_verified(path: pathlib.Path) -> None:
    try:
        record_path = _verified_record()
        record_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        stat = path.stat()
        record[str(path.resolve())] = [stat.st_size, stat.st_mtime_ns]
        temporary = record_path.with_name(f".verified.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record, indent=1))
        os.replace(temporary, record_path)
    except OSError:
        pass  # a read-only home: verify again next time


def verify_file(path, name: str) -> None:
    """Checks ``path``'s SHA-256 against the published value for data set ``name``."""
    path = pathlib.Path(path)
    expected = CHECKSUMS[name].get(path.name)
    if expected is None or _already_verified(path):
        return
    actual = _sha256(path)
    if actual not in expected:
        raise DataError(f"{path}: SHA-256 {actual} does not match the published {name} file "
                        f"({' or '.join(sorted(expected))}); the file is corrupted or not the "
                        f"original: delete it to re-download, or pass verify=False")
    _remember_verified(path)


def search_paths(name: str, path=None) -> list[pathlib.Path]:
    """The folders searched for data set ``name``, in order."""
    places = []
    if path is not None:
        places += [pathlib.Path(path), pathlib.Path(path) / name]
    if os.environ.get("FNNET_DATA"):
        env = pathlib.Path(os.environ["FNNET_DATA"])
        places += [env / name, env]
    system = pathlib.Path(os.environ.get("FNNET_SYSTEM_DATA") or "/usr/share/datasets")
    places += [cache_dir() / name, system / name]
    return places


def _download(name: str, filename: str, target_dir: pathlib.Path, errors: list[str]) -> pathlib.Path | None:
    target_dir.mkdir(parents=True, exist_ok=True)
    for mirror in MIRRORS[name]:
        url = mirror + filename
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            errors.append(f"{url}: {error}")
            continue
        if hashlib.sha256(data).hexdigest() not in CHECKSUMS[name][filename]:
            errors.append(f"{url}: downloaded file has the wrong SHA-256")
            continue
        with tempfile.NamedTemporaryFile(dir=target_dir, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target_dir / filename)
        return target_dir / filename
    return None


def find_file(name: str, filename: str, *, path=None, download: bool = True) -> pathlib.Path:
    """Locates (or downloads) one file of data set ``name``; raises :class:`DataError` if it can't."""
    places = search_paths(name, path)
    for place in places:
        candidate = place / filename
        if candidate.is_file():
            return candidate
    errors: list[str] = []
    offline = os.environ.get("FNNET_OFFLINE", "") not in ("", "0")
    if download and not offline and name in MIRRORS:
        found = _download(name, filename, cache_dir() / name, errors)
        if found is not None:
            return found
    searched = "\n  ".join(str(p) for p in places)
    why = ("\ndownload failed:\n  " + "\n  ".join(errors)) if errors else \
        ("\n(downloads are off: FNNET_OFFLINE is set)" if offline and download else "")
    raise DataError(
        f"{name}: {filename} not found. Looked in:\n  {searched}{why}\n"
        f"To get it: set FNNET_DATA to a folder holding {name}/{filename}"
        + (" (and the other three files)" if name in SPLITS_OF else "")
        + f", put the file{'s' if name in SPLITS_OF else ''} in {cache_dir() / name}"
        + (", or, on Debian, 'apt install dataset-fashion-mnist'." if name == "fashion-mnist" else "."))


def _load_mnist_like(name: str, split: str, *, path=None, verify: bool = True, download: bool = True,
                     flatten: bool = False):
    if split not in SPLITS:
        raise ValueError(f"{name}: split must be 'train' or 'test', got {split!r}")
    files = SPLITS[split]
    image_path = find_file(name, files.images, path=path, download=download)
    label_path = find_file(name, files.labels, path=path, download=download)
    if verify:
        verify_file(image_path, name)
        verify_file(label_path, name)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3:
        raise DataError(f"{image_path}: expected images of shape (N, rows, cols), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{label_path}: expected {images.shape[0]} labels (one per image in "
                        f"{image_path.name}), got shape {labels.shape}")
    if labels.size and int(labels.max()) > 9:
        raise DataError(f"{label_path}: label {int(labels.max())} out of range 0-9")
    images = images.astype(np.float32) / 255.0
    if flatten:
        images = images.reshape(images.shape[0], -1)
    return images, labels.astype(np.int32)


def mnist(split: str = "train", *, path=None, verify: bool = True, download: bool = True,
          flatten: bool = False):
    """MNIST handwritten digits: images float32 in [0, 1] of shape (N, 28, 28) (or (N, 784)
    with ``flatten=True``), labels int32. ``split`` is ``"train"`` (60,000) or ``"test"`` (10,000)."""
    return _load_mnist_like("mnist", split, path=path, verify=verify, download=download, flatten=flatten)


def fashion_mnist(split: str = "train", *, path=None, verify: bool = True, download: bool = True,
                  flatten: bool = False):
    """Fashion-MNIST (Zalando, MIT license): the same layout as :func:`mnist`, 10 clothing classes."""
    return _load_mnist_like("fashion-mnist", split, path=path, verify=verify, download=download,
                            flatten=flatten)


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


# --- Tiny Shakespeare ----------------------------------------------------------------------

SPLITS_OF = ("mnist", "fashion-mnist")  # the data sets made of the four IDX files


class CharText(NamedTuple):
    """A text as character ids: ``train`` and ``val`` (1-D int32) and the ``vocab`` (the sorted
    distinct characters; id ``i`` is ``vocab[i]``)."""

    train: np.ndarray
    val: np.ndarray
    vocab: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Character ids of ``text`` (int32); a ValueError names a character not in the vocabulary."""
        lookup = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(text) - set(lookup))
        if missing:
            raise ValueError(f"characters not in the vocabulary: {''.join(missing)!r} "
                             f"(the vocabulary has {len(self.vocab)}: {self.vocab!r})")
        return np.array([lookup[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        """The text of character ids."""
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def char_text(text: str, *, val_fraction: float = 0.1) -> CharText:
    """Character-level ids of ``text``: the first ``1 - val_fraction`` for training, the rest
    for validation (nanoGPT's split), with the sorted distinct characters as vocabulary."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    vocab = "".join(sorted(set(text)))
    lookup = np.zeros(max(map(ord, vocab), default=0) + 1, np.int32)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
    cut = int(len(ids) * (1.0 - val_fraction))
    return CharText(ids[:cut], ids[cut:], vocab)


def tiny_shakespeare(*, path=None, verify: bool = True, download: bool = True,
                     val_fraction: float = 0.1) -> CharText:
    """Tiny Shakespeare (char-rnn's ``input.txt``, 1,115,394 characters, 65 distinct) as
    character ids: the first 90% for training, the last 10% for validation, as nanoGPT.

    ``input.txt`` is found like the MNIST files (``path``, ``$FNNET_DATA/tinyshakespeare/``,
    the user cache, a download from char-rnn's repository), and its SHA-256 is checked.

    Example::

        text = datasets.tiny_shakespeare()
        text.train.shape, text.vocab_size          # ((1003854,), 65)
        text.decode(text.train[:14])               # 'First Citizen:'
    """
    file = find_file("tinyshakespeare", "input.txt", path=path, download=download)
    if verify:
        verify_file(file, "tinyshakespeare")
    try:
        content = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{file}: not UTF-8 text ({error})") from None
    if not content:
        raise DataError(f"{file}: is empty")
    return char_text(content, val_fraction=val_fraction)
