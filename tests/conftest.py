"""Suite-wide fixtures and settings."""

import gc
import os
import shutil
import tempfile

# XLA's CPU backend at optimisation level 0, set before JAX starts its backend
# (subprocesses inherit it): the suite is mostly compilation (each test builds
# its own closures), and level 0 compiles a DilationKernel run about 40% faster
# for compiled code about 2-3x slower. The suite checks what the programs
# compute, which the level changes by rounding only (no fast-math at either
# level; a float32 run of 250 iterations ends within 1e-4 of the default
# level's), and took 690 s instead of 857 s (2 cores, docs/benchmarks.md "The
# test suite"). Speed is measured by benchmarks/, at XLA's default level.
_OPTIMIZATION = "--xla_backend_optimization_level"
if _OPTIMIZATION not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_OPTIMIZATION}=0"

import filelock  # noqa: E402, F401  (the locked cache below needs it: test extras)
import jax  # noqa: E402
import pytest  # noqa: E402

from numpyro_dilation import compile_cache  # noqa: E402

# JAX's persistent compilation cache in a folder of this session's own: a
# program that several tests build (same model, shapes and options) compiles
# once, whichever xdist worker builds it first; every session starts empty, so
# nothing is reused from an earlier one. The process that makes the folder
# (the xdist controller, or a plain pytest process) exports it before any
# worker starts, and the workers, which inherit the environment, share it. The
# CLI's default cache (tests call its main) is this folder too. A size limit
# makes JAX lock each read and write of the folder (``filelock``), so that
# one worker never reads a program another is still writing; 4 GiB is far
# above what a session writes, so nothing is evicted.
_SHARED = "NUMPYRO_DILATION_TEST_CACHE"
_OWNER = _SHARED not in os.environ
if _OWNER:
    os.environ[_SHARED] = tempfile.mkdtemp(prefix="numpyro-dilation-test-xla-")
_CACHE = os.environ[_SHARED]
os.environ[compile_cache.ENVIRONMENT_VARIABLE] = _CACHE
compile_cache.enable(_CACHE)
jax.config.update("jax_compilation_cache_max_size", 4 << 30)


def pytest_sessionfinish(session, exitstatus):
    if _OWNER:
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
