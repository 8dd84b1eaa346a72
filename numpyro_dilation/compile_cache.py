"""JAX's persistent compilation cache: a run repeated in a new process skips XLA.

XLA compiles each program once per process, and on a small CPU that is most of
a first ``mcmc.run`` (docs/benchmarks.md, "Where compile time goes"). With the
cache on, every compiled program is also written to ``directory``, keyed by
its HLO, the compile options, the devices and the jax/jaxlib versions; a
later process (the CLI run again, a notebook restarted, the test suite's next
file) that builds the same program (same model, data shapes, options and
``num_warmup``) reads it back instead of compiling. A different model or shape
simply compiles (and is added). The cache is JAX's own
(``jax_compilation_cache_dir``); this module only turns it on.

    from numpyro_dilation import compile_cache
    compile_cache.enable()          # before the first mcmc.run of the process
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["ENVIRONMENT_VARIABLE", "default_directory", "enable"]

ENVIRONMENT_VARIABLE = "NUMPYRO_DILATION_CACHE_DIR"


def default_directory() -> Path:
    """``$NUMPYRO_DILATION_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/numpyro-dilation/xla`` (``~/.cache/...`` by default)."""
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return Path(os.environ[ENVIRONMENT_VARIABLE])
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home, "numpyro-dilation", "xla")


def enable(
    directory: str | os.PathLike | None = None, min_compile_time_s: float = 0.1
) -> Path:
    """Write compiled programs to ``directory`` and read them back from it.

    :param directory: the cache folder (created; default
        ``default_directory()``).
    :param min_compile_time_s: programs that compile faster than this are not
        written (JAX's default is 1 s, which leaves out many of the sampler's).
    :returns: the folder.

    Call it before the process compiles anything: JAX decides whether to use
    the cache at its first compilation.
    """
    if min_compile_time_s < 0:
        raise ValueError(f"min_compile_time_s must be >= 0, got {min_compile_time_s}.")
    path = Path(default_directory() if directory is None else directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
    return path
