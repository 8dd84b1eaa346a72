"""Mode-weight correction: importance estimates of mode masses, then resampling.

The annealed particles sit in the right modes with the right shape inside each
mode, but in the wrong proportions (docs/design.md section 2). With the modes ``M``
of the population (``modes.find_modes``) and the proposal ``q`` built from
them (``modes.proposal``), ``n`` fresh draws ``x_i ~ q`` give the mass of
each mode (the normalising constant of ``p`` restricted to it):

    Z_m = E_q[ p(x)/q(x) 1{x in m} ] ~ (1/n) sum_i w_i 1{x_i in m},  w = p/q,

where ``x in m`` is the same rule that labels the particles (``modes.assign``).
Its reliability is the effective sample size of the draws in the mode,
``ESS_m = (sum_{i in m} w_i)^2 / sum_{i in m} w_i^2``. Only the modes with
``ESS_m >= min_ess`` are corrected, and only among themselves: they keep the
share of particles they hold together and split it in proportion to their
``Z_m``; every other mode keeps its particles. A failed estimate (too high a
dimension for ``q``, or many more modes than clusters) therefore leaves the
population as it was instead of collapsing it.

The particles are then resampled (systematic resampling, Kitagawa 1996) with
weight ``share_m / n_m`` for a particle in mode ``m`` holding ``n_m`` particles,
which moves whole particles between modes and keeps each mode's shape. When
nothing changes (one mode, or no reliable estimate) the population is kept as
it is.

Cost: ``n`` evaluations of the log density (no gradient) and ``O(n K d)`` for
the mixture; memory bounded by chunking (``mixture_fit.map_particles``).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp

from numpyro_dilation.core.multimodal import mixture_fit, modes
from numpyro_dilation.core.multimodal.mixture_fit import map_particles

__all__ = [
    "estimate_mode_masses",
    "corrected_shares",
    "systematic_resample",
    "rebalance",
]

LogDensityFn = Callable[[Array], Array]


def estimate_mode_masses(
    key: Array, mode_set: modes.Modes, logdensity_fn: LogDensityFn, num_draws: int
) -> tuple[Array, Array]:
    """``log Z_m`` (up to one shared constant) and ``ESS_m`` for each mode.

    Both are indexed like ``mode_set.log_mass`` (at each mode's representative
    component); entries of non-modes are ``-inf`` and 0.
    """
    q = modes.proposal(mode_set)
    k = mode_set.mode_of.shape[0]
    draws = mixture_fit.sample(key, q, num_draws)
    log_q = map_particles(
        lambda x: mixture_fit.logpdf(q, x), draws, num_components=2 * k
    )
    log_w = map_particles(logdensity_fn, draws) - log_q
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    label = modes.assign(mode_set, draws)
    segment = jnp.where(label >= 0, label, k)
    log_z = modes.segment_logsumexp(log_w, segment, k + 1)[:k]
    log_z2 = modes.segment_logsumexp(2 * log_w, segment, k + 1)[:k]
    ess = jnp.where(jnp.isfinite(log_z), jnp.exp(2 * log_z - log_z2), 0.0)
    is_mode = jnp.isfinite(mode_set.log_mass)
    return jnp.where(is_mode, log_z, -jnp.inf), jnp.where(is_mode, ess, 0.0)


def corrected_shares(
    shares: Array, log_z: Array, ess: Array, min_ess: float
) -> tuple[Array, Array]:
    """New mode shares: reliable modes (``ESS_m >= min_ess``, ``shares > 0``) split
    their total share by ``Z_m``; the others keep theirs. Returns shares, reliable."""
    reliable = (ess >= min_ess) & (shares > 0) & jnp.isfinite(log_z)
    kept = jnp.sum(jnp.where(reliable, shares, 0.0))
    z = jnp.where(
        reliable, jnp.exp(log_z - jnp.max(jnp.where(reliable, log_z, -jnp.inf))), 0.0
    )
    split = kept * z / jnp.maximum(jnp.sum(z), jnp.finfo(shares.dtype).tiny)
    return jnp.where(reliable, split, shares), reliable


def systematic_resample(key: Array, log_weights: Array, num: int) -> Array:
    """``num`` indices, ``i`` drawn ``num w_i`` times up to rounding (Kitagawa 1996)."""
    w = jnp.exp(log_weights - logsumexp(log_weights))
    cdf = jnp.cumsum(w)
    u = (jax.random.uniform(key, dtype=cdf.dtype) + jnp.arange(num)) / num
    return jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1]), log_weights.shape[0] - 1)


def rebalance(
    key: Array,
    x: Array,
    mode_set: modes.Modes,
    logdensity_fn: LogDensityFn,
    min_ess: float = 20.0,
) -> tuple[Array, modes.Modes]:
    """Indices of the resampled particles and the modes with corrected masses.

    The returned ``Modes`` carries ``log_mass = log(new shares)`` and the ESS
    of each mode's estimate: the jump proposal after warmup is built from it.
    """
    key_is, key_resample = jax.random.split(key)
    n = x.shape[0]
    k = mode_set.mode_of.shape[0]
    log_z, ess = estimate_mode_masses(key_is, mode_set, logdensity_fn, n)
    label = modes.assign(mode_set, x)
    segment = jnp.where(label >= 0, label, k)
    counts = mixture_fit.label_sums(jnp.ones(n, x.dtype), segment, k + 1)[0][:k]
    shares, _ = corrected_shares(counts / n, log_z, ess, min_ess)
    per_particle = jnp.append(shares / jnp.maximum(counts, 1.0), 0.0)[segment]
    index = systematic_resample(key_resample, jnp.log(per_particle), n)
    unchanged = jnp.allclose(per_particle, 1.0 / n, rtol=1e-5)
    index = jnp.where(unchanged, jnp.arange(n), index)
    return index, mode_set._replace(log_mass=jnp.log(shares), ess=ess)
