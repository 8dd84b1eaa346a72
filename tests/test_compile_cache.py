"""The persistent compilation cache: a second process reads the program back."""

import subprocess
import sys

import pytest

from numpyro_dilation import compile_cache

# One process: turn the cache on, compile a program, count JAX's cache hits.
PROGRAM = """
import sys
import jax, jax.numpy as jnp
from jax import monitoring
from numpyro_dilation import compile_cache

hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("/cache_hits") else None
)
compile_cache.enable(sys.argv[1], min_compile_time_s=0.0)
jax.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2))(jnp.arange(7.0)).block_until_ready()
print(len(hits))
"""


def _hits(directory) -> int:
    run = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(run.stdout.split()[-1])


def test_a_second_process_reads_the_compiled_program_back(tmp_path):
    directory = tmp_path / "cache"
    assert _hits(directory) == 0
    assert any(directory.iterdir())
    assert _hits(directory) >= 1


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENVIRONMENT_VARIABLE, str(tmp_path / "x"))
    assert compile_cache.default_directory() == tmp_path / "x"
    monkeypatch.delenv(compile_cache.ENVIRONMENT_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_directory() == tmp_path / "numpyro-dilation" / "xla"


def test_negative_min_compile_time_is_refused():
    with pytest.raises(ValueError, match="min_compile_time_s"):
        compile_cache.enable(min_compile_time_s=-1.0)
