"""Test configuration: JAX is strict about broadcasting, as in equinox's test suite.

The suite is dominated by XLA compilations of small functions run a few times, so it asks
XLA's CPU backend for quick compiles (LLVM at -O0, no expensive passes), unless XLA_FLAGS is
already set; subprocess tests inherit it. The arithmetic is the same IEEE float math; only
how fast the compiled code runs changes (benchmarks never run with these flags).

The same programs (a CLI training run, an example's model) compile in several tests, in
both xdist workers and in the subprocesses they start, so the run shares one persistent
XLA compilation cache: a temporary folder made by the first pytest process, inherited by
the workers and subprocesses through the environment, removed when the run ends. Nothing
outside the test run uses it.
"""

import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
# data sets are found where a test puts them, never in a system folder a machine may happen to have
# (/usr/share/datasets/fashion-mnist from Debian's package would satisfy a "missing data" test)
os.environ.setdefault("FNNET_SYSTEM_DATA", os.path.join(tempfile.gettempdir(), "fnnet-tests-no-system-data"))
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controlling pytest process: make the run's cache
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _RUN_CACHE = tempfile.mkdtemp(prefix="fnnet-test-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
else:
    _RUN_CACHE = None

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
