"""Suite-wide fixtures."""

import gc

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test file.

    Every MCMC run compiles its own closures, and JAX keeps them all: over the
    whole suite the process grew past 6 GB and XLA aborted while compiling on a
    2-core CI machine. Nothing is shared between files, so nothing is lost.
    """
    yield
    jax.clear_caches()
    gc.collect()
