"""Seconds JAX spends tracing, lowering and compiling inside a block.

:class:`CompileTimer` measures the union of the time spans of JAX's
``/jax/core/compile/*`` monitoring events (tracing to a jaxpr, lowering to MLIR,
XLA compilation) recorded while the block runs, so nested spans (a jit traced
inside another's trace) count once. :func:`timed` calls a function under it and
subtracts that time from the call's wall time: the "after compilation" time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax
from jax import monitoring

__all__ = ["CompileTimer", "timed"]

_COMPILE_EVENTS = "/jax/core/compile/"
T = TypeVar("T")


class CompileTimer:
    """Context manager: ``seconds``, the union of the compile spans in the block.

    Its listener is registered with ``jax.monitoring`` on entry and removed on
    exit, also when the block raises: spans recorded outside the block are not
    counted.
    """

    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []

    def __enter__(self) -> CompileTimer:
        monitoring.register_event_time_span_listener(self.listen)
        return self

    def __exit__(self, *exc: object) -> None:
        monitoring.unregister_event_time_span_listener(self.listen)

    def listen(self, event: str, start: float, end: float, **_: Any) -> None:
        """The time-span listener: keeps the spans of compile events."""
        if event.startswith(_COMPILE_EVENTS):
            self._spans.append((start, end))

    @property
    def seconds(self) -> float:
        """Length of the union of the compile spans seen so far.

        Spans sorted by start: each adds its part past the furthest end before it.
        """
        total, reach = 0.0, -math.inf
        for start, end in sorted(self._spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """Call ``fn`` and wait for its result (``jax.block_until_ready``).

    Returns the result, the call's wall seconds minus its compile seconds, and
    its compile seconds (:class:`CompileTimer`).
    """
    with CompileTimer() as timer:
        start = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        wall = time.perf_counter() - start
    return out, wall - timer.seconds, timer.seconds
