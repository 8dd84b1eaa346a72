"""The compile timer: the union of JAX's compile spans inside a block."""

import time

import jax
import jax.numpy as jnp
import pytest
from jax import monitoring

from numpyro_dilation.compile_timer import CompileTimer, timed

EVENT = "/jax/core/compile/backend_compile_duration"


def _fresh_jit():
    """A function JAX has not compiled yet (a new closure each call)."""
    return jax.jit(lambda x: jnp.sin(x) * 2.0 + 1.0)


def test_nested_and_overlapping_spans_count_once():
    with CompileTimer() as timer:
        for start, end in [(0.0, 2.0), (1.0, 1.5), (1.8, 3.0), (5.0, 6.0)]:
            timer.listen(EVENT, start, end)
        timer.listen("/jax/other", 10.0, 20.0)
    assert timer.seconds == pytest.approx(3.0 + 1.0)


def test_a_jit_compiled_while_another_is_traced_counts_once():
    def outer(x):
        # Lowered and compiled during outer's trace: its spans lie inside.
        _fresh_jit().lower(jnp.ones(3)).compile()
        return x + 1.0

    summed = []

    def listen(event, duration, **_):
        if event.startswith("/jax/core/compile/"):
            summed.append(duration)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        with CompileTimer() as timer:
            start = time.perf_counter()
            jax.block_until_ready(jax.jit(outer)(jnp.ones(3)))
            wall = time.perf_counter() - start
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert 0 < timer.seconds <= wall
    assert timer.seconds < sum(summed)


def test_nothing_outside_the_block_is_counted():
    x = jnp.ones(3)
    compiled = _fresh_jit()
    jax.block_until_ready(compiled(x))
    with CompileTimer() as timer:
        jax.block_until_ready(compiled(x))
    assert timer.seconds == 0.0
    jax.block_until_ready(_fresh_jit()(x))
    assert timer.seconds == 0.0


def test_the_listener_is_removed_on_exit_also_when_the_block_raises():
    x = jnp.ones(3)
    with pytest.raises(RuntimeError, match="boom"), CompileTimer() as timer:
        jax.block_until_ready(_fresh_jit()(x))
        raise RuntimeError("boom")
    counted = timer.seconds
    assert counted > 0
    jax.block_until_ready(_fresh_jit()(x))
    assert timer.seconds == counted


def test_timed_returns_the_time_after_compilation_and_the_compile_time():
    x, fn = jnp.ones(3), _fresh_jit()
    start = time.perf_counter()
    out, after_s, compile_s = timed(lambda: fn(x))
    wall = time.perf_counter() - start
    assert out.shape == (3,)
    assert compile_s > 0 and after_s >= 0 and after_s + compile_s <= wall
    assert timed(lambda: fn(x))[2] == 0.0
