"""Population-sized random draws, generated flat and then reshaped.

``normal(key, shape)`` is ``jax.random.normal(key, shape)`` and ``uniform(key,
shape)`` is ``jax.random.uniform(key, shape)``, bit for bit: JAX generates the
``prod(shape)`` values of a draw in row-major order whatever the shape
(threefry, partitionable or not, and rbg alike; ``tests/core/test_draws.py``),
so drawing them flat and reshaping gives the same array. The flat form is
cheaper to compile: XLA's CPU compiler takes longer over the multi-dimensional
form of the same draw, by 0.03 to 0.1 s for most shapes and by about 0.3 s
when the trailing dimension is 9 to 12 (``(1024, 10)`` normals: 0.43 s
against 0.11 s on jax 0.10.2, 0.34 s against 0.08 s on jax 0.12), and every
compiled program pays it once per call site. See docs/benchmarks.md, "Where
compile time goes".
"""

import math

import jax
from jax import Array

__all__ = ["normal", "uniform"]


def _flat(sample, key: Array, shape: tuple[int, ...], dtype) -> Array:
    return sample(key, (math.prod(shape),), dtype).reshape(shape)


def normal(key: Array, shape: tuple[int, ...], dtype=float) -> Array:
    """Standard normal draws of ``shape``: ``jax.random.normal(key, shape)``."""
    return _flat(jax.random.normal, key, shape, dtype)


def uniform(key: Array, shape: tuple[int, ...], dtype=float) -> Array:
    """Uniform ``[0, 1)`` draws of ``shape``: ``jax.random.uniform(key, shape)``."""
    return _flat(jax.random.uniform, key, shape, dtype)
