"""Test configuration: JAX is strict about broadcasting, as in equinox's test suite.

The suite is dominated by XLA compilations of small functions run a few times, so it asks
XLA's CPU backend for quick compiles (LLVM at -O0, no expensive passes), unless XLA_FLAGS is
already set; subprocess tests inherit it. The arithmetic is the same IEEE float math; only
how fast the compiled code runs changes (benchmarks never run with these flags).
"""

import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


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
