"""Population-sized random draws, generated flat and then reshaped.

``uniform(key, shape)`` is ``jax.random.uniform(key, shape)``, bit for bit:
JAX generates the ``prod(shape)`` values of a draw in row-major order whatever
the shape (threefry, partitionable or not, and rbg alike;
``tests/core/test_draws.py``), so drawing them flat and reshaping gives the
same array. The flat form is cheaper to compile: XLA's CPU compiler takes
longer over the multi-dimensional form of the same draw, by 0.03 to 0.1 s for
most shapes and by about 0.3 s when the trailing dimension is 9 to 12
(``(1024, 10)`` normals: 0.43 s against 0.11 s on jax 0.10.2, 0.34 s against
0.08 s on jax 0.12), and every compiled program pays it once per call site.
See docs/benchmarks.md, "Where compile time goes".

``normal_and_uniform`` draws a move's noise and its accept uniforms at once
(or a jump's, or a mixture's draws: normals and uniforms of one row per
particle).
"""

import math

import jax
import numpy as np
from jax import Array

__all__ = ["uniform", "normal_and_uniform"]


def uniform(key: Array, shape: tuple[int, ...], dtype=float) -> Array:
    """Uniform ``[0, 1)`` draws of ``shape``: ``jax.random.uniform(key, shape)``."""
    return jax.random.uniform(key, (math.prod(shape),), dtype).reshape(shape)


def normal_and_uniform(
    key: Array, shape: tuple[int, ...], dtype=float, uniform_shape: tuple[int, ...] = ()
) -> tuple[Array, Array]:
    """Standard normals of ``shape`` and uniforms on ``(0, 1)`` of shape
    ``(shape[0], *uniform_shape)``, all independent, from one draw of ``v ~
    U(-1, 1)`` laid out as ``(shape[0], m + k)`` rows (``m`` the product of the
    other dimensions of ``shape``, ``k`` of ``uniform_shape``): ``z = sqrt(2)
    erf^-1(v)`` (how ``jax.random.normal`` makes its normals) from each row's
    first ``m`` values, ``u = (v + 1) / 2`` from its last ``k``.

    One threefry hash in the compiled program where separate normal and
    uniform draws make two (each a few XLA kernels to compile). Row by row, so
    that a population split over devices along ``shape[0]`` draws its own rows
    where they lie (splitting one flat draw at ``prod(shape)`` would move
    values between devices).
    """
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    n, m, k = shape[0], math.prod(shape[1:]), math.prod(uniform_shape)
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    v = jax.random.uniform(key, (n * (m + k),), dtype, low, 1.0).reshape(n, m + k)
    z = np.sqrt(2.0).astype(dtype) * jax.lax.erf_inv(v[:, :m])
    return z.reshape(shape), ((v[:, m:] + 1) / 2).reshape(n, *uniform_shape)
