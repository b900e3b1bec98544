"""Test configuration: JAX is strict about broadcasting, as in equinox's test suite."""

import os
import pathlib
import sys

import jax
import pytest

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
