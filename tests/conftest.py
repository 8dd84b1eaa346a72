"""Suite-wide fixtures and settings."""

import gc
import os
import shutil
import tempfile

import jax
import pytest

from numpyro_dilation import compile_cache

# JAX's persistent compilation cache in a folder of this session's own: a
# program that several tests build (same model, shapes and options) compiles
# once; every session starts empty, so nothing is reused from an earlier one.
# The CLI's default cache (tests call its main) is this folder too.
_CACHE = tempfile.mkdtemp(prefix="numpyro-dilation-test-xla-")
os.environ[compile_cache.ENVIRONMENT_VARIABLE] = _CACHE
compile_cache.enable(_CACHE)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test file.

    Every MCMC run compiles its own closures, and JAX keeps them all: over the
    whole suite the process grew past 6 GB and XLA aborted while compiling on a
    2-core CI machine. Nothing is shared between files in memory (the
    persistent cache on disk stays), so nothing is lost.
    """
    yield
    jax.clear_caches()
    gc.collect()
