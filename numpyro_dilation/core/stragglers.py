"""Replacing stragglers while tuning: particles stuck far out in the tails.

A particle initialised where the posterior is sharp (a small scale parameter, a
far corner of a logistic regression) can reject every move at the step size that
suits the rest of the population, so it never joins the posterior. Worse, the
population's mean acceptance, which sets the shared step size, counts its zeros.

While tuning at ``l = 1``, a particle is a straggler when its potential energy
``U_i = -log p(x_i)`` is not finite or lies far above the population's:

    U_i > median(U) + 10 s + 10,        s = (median(U) - q_1/4(U)) / 0.6745

(``s`` is a robust standard deviation of ``U`` from its lower half: for a
Gaussian, the lower quartile lies 0.6745 sd below the median. Stuck particles
have a high ``U``, so the median and ``s`` ignore up to half the population
being stuck, as the median absolute deviation would; unlike it, both come out
of one selection, ``order_statistics`` at two ranks at once). For draws from a
d-dimensional Gaussian posterior ``U - min U ~ chi2_d / 2``, so the threshold
is exceeded with probability below 1e-6 (d = 1: ``s = 0.26``, ``P(Gamma(1/2) >
12.9) = 4e-7``) and far less for larger d; modes whose weights differ by a
factor below e^10 are never cut. Each straggler is replaced by a
copy of a particle drawn uniformly from the others. This happens during warmup
only, so the sampling phase stays exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = [
    "order_statistic",
    "order_statistics",
    "robust_location_scale",
    "find_stragglers",
    "replace_stragglers",
]

QUARTILE_Z = 0.6745
"""``Phi^-1(3/4)``: a Gaussian's median minus its lower quartile, in sds."""

_BELOW = np.triu(np.ones((256, 256), np.int32), 1)
"""``counts @ _BELOW``: for each byte value, the count of smaller ones (an
exclusive prefix sum as one product, where ``cumsum`` compiles to several
XLA kernels)."""


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
        below = counts @ _BELOW
        byte = jnp.sum(below <= rank) - 1
        return prefix | (byte.astype(key.dtype) << shift), rank - below[byte]

    start = (jnp.zeros((), key.dtype), rank.astype(jnp.int32))
    prefix, _ = jax.lax.fori_loop(0, bits // 8, select_byte, start)
    return _from_key(prefix, values.dtype)


def order_statistics(values: Array, include: Array, ranks: Array) -> Array:
    """The ``ranks``-th smallest (from 0) of ``values[include]``, exactly (each
    rank below the number of included values).

    With one device, a sort of the values (the excluded ones as ``+inf``). With
    several, where the particles may be split over them, ``order_statistic``
    at each rank: its histograms are its only sums over the particles, where a
    sort would gather them, but it compiles to more XLA kernels (ten more in a
    warmup loop; docs/benchmarks.md, "Where compile time goes").
    """
    if jax.device_count() == 1:
        return jnp.sort(jnp.where(include, values, jnp.inf))[ranks]
    return jax.vmap(order_statistic, (None, None, 0))(values, include, ranks)


def robust_location_scale(values: Array, include: Array) -> tuple[Array, Array]:
    """The median of ``values[include]`` and ``s = (median - q_1/4) / 0.6745``.

    Both are order statistics of the ``m`` included values, at ranks
    ``(m - 1) // 2`` and ``(m - 1) // 4``, taken by one ``order_statistics``
    call. NaN if nothing is included.
    """
    m = jnp.sum(include)
    ranks = jnp.stack([(m - 1) // 2, (m - 1) // 4])
    median, quartile = order_statistics(values, include, jnp.maximum(ranks, 0))
    nan = jnp.full((), jnp.nan, values.dtype)
    return (
        jnp.where(m > 0, median, nan),
        jnp.where(m > 0, (median - quartile) / QUARTILE_Z, nan),
    )


def find_stragglers(potential: Array) -> Array:
    """Mask of particles with ``U_i > median(U) + 10 s + 10`` or non-finite ``U_i``."""
    finite = jnp.isfinite(potential)
    median, spread = robust_location_scale(potential, finite)
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
        # The k-th kept particle, k uniform in 0..m-1 (m kept ones): a stable
        # sort puts the kept ones first, in order.
        index = jnp.arange(n)
        kept = jnp.argsort(stragglers, stable=True)
        m = jnp.sum(keep)
        pick = jnp.floor(jax.random.uniform(key, (n,)) * m).astype(kept.dtype)
        donors = kept[jnp.minimum(pick, m - 1)]
        source = jnp.where(stragglers, donors, index)
        return jax.tree.map(lambda leaf: leaf[source], particles)

    # Most iterations have no straggler: skip the draw and the copies then.
    particles = jax.lax.cond(
        jnp.any(stragglers) & jnp.any(keep), replace, lambda p: p, particles
    )
    return particles, stragglers
