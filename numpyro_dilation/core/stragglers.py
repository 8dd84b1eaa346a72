"""Replacing stragglers while tuning: particles stuck far out in the tails.

A particle initialised where the posterior is sharp (a small scale parameter, a
far corner of a logistic regression) can reject every move at the step size that
suits the rest of the population, so it never joins the posterior. Worse, the
population's mean acceptance, which sets the shared step size, counts its zeros.

While tuning at ``l = 1``, a particle is a straggler when its potential energy
``U_i = -log p(x_i)`` is not finite or lies far above the population's:

    U_i > median(U) + 10 s + 10,        s = 1.4826 median(|U - median(U)|)

(``s`` is the robust standard deviation of ``U``; the median and ``s`` ignore up
to half the population being stuck). For draws from a d-dimensional Gaussian
posterior ``U - min U ~ chi2_d / 2``, so the threshold is exceeded with
probability below 1e-5 (d = 1) and far less for larger d; modes whose weights
differ by a factor below e^10 are never cut. Each straggler is replaced by a
copy of a particle drawn uniformly from the others. This happens during warmup
only, so the sampling phase stays exact.
"""

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["order_statistic", "finite_median", "find_stragglers", "replace_stragglers"]


def _sortable_key(values: Array) -> Array:
    """Unsigned integers in the order of the float ``values`` (IEEE 754: flip
    every bit of a negative number, the sign bit of a positive one)."""
    bits = values.dtype.itemsize * 8
    utype = jnp.dtype(f"uint{bits}")
    raw = jax.lax.bitcast_convert_type(values, utype)
    sign = jnp.asarray(1 << (bits - 1), utype)
    return jnp.where(raw & sign, ~raw, raw | sign)


def _from_key(key: Array, dtype) -> Array:
    """The float whose ``_sortable_key`` is ``key``."""
    bits = key.dtype.itemsize * 8
    sign = jnp.asarray(1 << (bits - 1), key.dtype)
    return jax.lax.bitcast_convert_type(jnp.where(key & sign, key ^ sign, ~key), dtype)


def order_statistic(values: Array, include: Array, rank: Array) -> Array:
    """The ``rank``-th smallest (from 0) of ``values[include]``, exactly, by a
    radix selection on the bytes of the values' sortable keys, most
    significant first: each round counts the candidates per value of the next
    byte (a 256-bin histogram) and keeps the byte whose bin holds the rank.

    The population is touched only through those histograms, which are sums
    over the particles: with the particles split over devices or processes,
    each round is an all-reduce of 256 counts (8 rounds for float64, 4 for
    float32), whatever the number of particles, where a sort would gather them.
    """
    key = _sortable_key(values)
    bits = key.dtype.itemsize * 8

    def select_byte(i, carry):
        prefix, rank = carry
        shift = jnp.asarray(bits - 8 - 8 * i, key.dtype)
        # Candidates: the included keys whose higher bytes match the prefix.
        higher = jnp.minimum(shift + 8, bits - 1)
        same = (i == 0) | ((key >> higher) == (prefix >> higher))
        digit = ((key >> shift) & 0xFF).astype(jnp.int32)
        candidate = (include & same).astype(jnp.int32)
        counts = jnp.zeros(256, jnp.int32).at[digit].add(candidate)
        below = jnp.cumsum(counts) - counts
        byte = jnp.sum(below <= rank) - 1
        return prefix | (byte.astype(key.dtype) << shift), rank - below[byte]

    start = (jnp.zeros((), key.dtype), rank.astype(jnp.int32))
    prefix, _ = jax.lax.fori_loop(0, bits // 8, select_byte, start)
    return _from_key(prefix, values.dtype)


def finite_median(values: Array, finite: Array) -> Array:
    """The median of ``values[finite]`` (NaN if none), as ``jnp.nanmedian``:
    the mean of the order statistics at ``(m - 1) // 2`` and ``m // 2`` of the
    ``m`` finite values (``order_statistic``, both in one pass)."""
    m = jnp.sum(finite)
    ranks = jnp.stack([jnp.maximum(m - 1, 0) // 2, m // 2])
    low, high = jax.vmap(order_statistic, (None, None, 0))(values, finite, ranks)
    return jnp.where(m > 0, 0.5 * (low + high), jnp.nan)


def find_stragglers(potential: Array) -> Array:
    """Mask of particles with ``U_i > median(U) + 10 s + 10`` or non-finite ``U_i``."""
    finite = jnp.isfinite(potential)
    median = finite_median(potential, finite)
    spread = 1.4826 * finite_median(jnp.abs(potential - median), finite)
    return ~finite | (potential > median + 10.0 * spread + 10.0)


def replace_stragglers(key: Array, particles, potential: Array):
    """Copy a uniformly drawn non-straggler over each straggler.

    ``particles`` is a pytree whose leaves have the particle axis first. Returns
    the new pytree and the straggler mask. If every particle is a straggler,
    nothing changes.
    """
    stragglers = find_stragglers(potential)
    n = potential.shape[0]
    keep = ~stragglers

    def replace(particles):
        weights = keep.astype(potential.dtype)
        donors = jax.random.choice(key, n, (n,), p=weights / jnp.sum(weights))
        source = jnp.where(stragglers, donors, jnp.arange(n))
        return jax.tree.map(lambda leaf: leaf[source], particles)

    # Most iterations have no straggler: skip the draw and the copies then.
    particles = jax.lax.cond(
        jnp.any(stragglers) & jnp.any(keep), replace, lambda p: p, particles
    )
    return particles, stragglers
