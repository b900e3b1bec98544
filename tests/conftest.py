"""Test configuration: JAX is strict about broadcasting, as in equinox's test suite.

The suite is dominated by XLA compilations of small functions run a few times, so it asks
XLA's CPU backend for quick compiles (LLVM at -O0, no expensive passes, and the elemental
emitters instead of the MLIR fusion emitters: the gradient checks of the catalogue and the
batch-axes tests compile in 34 s instead of 55 s; and each program as one LLVM module, not split
for parallel code generation, which on two busy workers only adds work: a GPT's backward compiles
in 179 instead of 256 ms of CPU, and a cold suite took 486 instead of 550 CPU seconds), unless
XLA_FLAGS is already set; subprocess tests inherit it. The arithmetic is the same IEEE float math; only
how fast the compiled code runs changes (benchmarks never run with these flags).

The same programs (a CLI training run, an example's model, a layer built again by another
test) compile in several tests, in both xdist workers and in the subprocesses they start, so
the suite shares one persistent XLA compilation cache (JAX's own, keyed by the program, the
compiler flags and the jax/jaxlib versions), inherited through the environment: every
compiled program is kept, so a program compiled twice in one run compiles once (about a
tenth of a cold run), and a second run of the suite in the same checkout reuses the first's
(about half the time). It lives in ``.pytest_cache/d/fnnet-xla-cache`` (``pytest
--cache-clear`` or removing the folder empties it; past 2 GB it is emptied at the start of
a run), and nothing outside the tests uses it. (JAX's own size limit is not used: it records
every read in a file of its own, which made a run slower than no cache at all.) ``FNNET_TEST_XLA_CACHE=off``
runs without it (a fresh temporary cache per run).
"""

import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                                   "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1")
# the interpreters the tests start (and the workers) keep fnnet's compiled bytecode in __pycache__, as
# Python does by default: an environment that turns it off would compile every module again in each
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# data sets are found where a test puts them, never in a system folder a machine may happen to have
# (/usr/share/datasets/fashion-mnist from Debian's package would satisfy a "missing data" test)
os.environ.setdefault("FNNET_SYSTEM_DATA", os.path.join(tempfile.gettempdir(), "fnnet-tests-no-system-data"))
_RUN_CACHE = None  # a temporary cache this process made and removes at the end
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controlling pytest process: choose the suite's cache
    if os.environ.get("FNNET_TEST_XLA_CACHE") == "off":
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _RUN_CACHE = tempfile.mkdtemp(prefix="fnnet-test-xla-cache-")
    else:
        _KEPT = pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "d" / "fnnet-xla-cache"
        if _KEPT.is_dir() and sum(entry.stat().st_size for entry in os.scandir(_KEPT)) > 2 * 1024**3:
            shutil.rmtree(_KEPT, ignore_errors=True)  # past 2 GB (programs of old code): start again
        _KEPT.mkdir(parents=True, exist_ok=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(_KEPT)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# the same examples on every run (CI and make test reproducible); FNNET_HYPOTHESIS=explore draws new ones
settings.register_profile("fnnet", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile("explore" if os.environ.get("FNNET_HYPOTHESIS") == "explore" else "fnnet")

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture(scope="session")
def shakespeare_data():
    """The folder holding tinyshakespeare/input.txt (FNNET_DATA or ../shared/data); skips if absent."""
    for candidate in (os.environ.get("FNNET_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (pathlib.Path(candidate) / "tinyshakespeare" / "input.txt").is_file():
            return pathlib.Path(candidate)
    pytest.skip("Tiny Shakespeare not found: set FNNET_DATA to a folder holding tinyshakespeare/input.txt")


def pytest_sessionfinish(session, exitstatus):
    if _RUN_CACHE is not None and "PYTEST_XDIST_WORKER" not in os.environ:
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled (exact gradient comparisons)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def shared_data():
    """The shared MNIST / Fashion-MNIST folder, from FNNET_DATA or ../shared/data; skips if absent."""
    for candidate in (os.environ.get("FNNET_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (pathlib.Path(candidate) / "mnist").is_dir():
            return pathlib.Path(candidate)
    pytest.skip("MNIST not found: set FNNET_DATA to a folder holding mnist/ and fashion-mnist/")
