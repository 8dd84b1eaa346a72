"""Suite-wide fixtures and settings."""

import gc
import importlib.metadata
import os
import shutil
import tempfile
import warnings

from packaging.version import Version


def _default_xla_flag(flag: str, value: str) -> None:
    """Add ``flag=value`` to ``XLA_FLAGS`` unless the caller set ``flag``."""
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}={value}"


# XLA's CPU backend at optimisation level 0, set before JAX starts its backend
# (subprocesses inherit it): the suite is mostly compilation (each test builds
# its own closures), and level 0 compiles a DilationKernel run about 40% faster
# for compiled code about 2-3x slower. The suite checks what the programs
# compute, which the level changes by rounding only (no fast-math at either
# level; a float32 run of 250 iterations ends within 1e-4 of the default
# level's), and took 690 s instead of 857 s (2 cores, docs/benchmarks.md "The
# test suite"). Speed is measured by benchmarks/, at XLA's default level.
_default_xla_flag("--xla_backend_optimization_level", "0")

# On jaxlib < 0.11 (the Python 3.10/3.11 stack), also XLA's older CPU fusion
# emitters: they compile a DilationKernel run in about half the time of the
# MLIR emitters that jaxlib 0.10 uses by default (eight schools, level 0:
# backend compilation 7.4 -> 3.5 s). Their code rounds differently, so a run's
# draws are other draws of the same chains (a float32 eight-schools run of
# 200 + 50 iterations: individual draws differ; avg_effect's mean 5.78 and sd
# 5.47 against 5.77 and 5.48), which the statistical tolerances allow for.
# jaxlib 0.11+ has no such flag (XLA refuses an unknown one).
if Version(importlib.metadata.version("jaxlib")) < Version("0.11"):
    _default_xla_flag("--xla_cpu_use_fusion_emitters", "false")

import filelock  # noqa: E402, F401  (the locked cache below needs it: test extras)
import jax  # noqa: E402
import pytest  # noqa: E402

from numpyro_dilation import compile_cache  # noqa: E402
from numpyro_dilation.core import sampler  # noqa: E402

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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Warn when ``--dist loadgroup`` did not group the tests marked ``xdist_group``.

    pytest-xdist groups a marked test by renaming its node id; where pytest
    ignores the rename (pytest 9.2 with xdist 3.8, pytest-dev/pytest-xdist#1386)
    the tests are spread over the workers as if unmarked, silently, and a
    file's module fixtures can be built on both (the two-process cluster of
    test_distributed.py: 80 s more on 2 cores). The pytest range of the test
    extras keeps that away; this names it in the warnings summary if it comes
    back (an error raised here reaches the xdist controller as an unrelated
    internal error).
    """
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [
        item.nodeid
        for item in items
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
    ]
    if lost:
        warnings.warn(
            pytest.PytestWarning(
                f"--dist loadgroup did not group {len(lost)} tests marked "
                f"xdist_group (e.g. {lost[0]}): their module fixtures can be "
                "built on both workers. This pytest-xdist does not support this pytest "
                "(pytest-dev/pytest-xdist#1386); install the pytest range of "
                "pyproject.toml's test extras."
            ),
            stacklevel=1,
        )


@pytest.fixture
def warmup_programs(monkeypatch):
    """What a run compiles for its warmup: the names of the programs XLA
    compiled and, per traced ``sampler.step_from_keys``, ``(options.hmc,
    phase)``. Both lists are the caller's to clear between runs."""
    compiled, traced = [], []
    step_from_keys = sampler.step_from_keys

    def recording_step(keys, state, fn, options, *args, phase=None, **kwargs):
        traced.append((options.hmc, phase))
        return step_from_keys(keys, state, fn, options, *args, phase=phase, **kwargs)

    def record(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name", ""))

    monkeypatch.setattr(sampler, "step_from_keys", recording_step)
    jax.monitoring.register_event_duration_secs_listener(record)
    yield compiled, traced
    jax.monitoring.unregister_event_duration_listener(record)
