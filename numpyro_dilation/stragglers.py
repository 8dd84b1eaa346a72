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

__all__ = ["find_stragglers", "replace_stragglers"]


def find_stragglers(potential: Array) -> Array:
    """Mask of particles with ``U_i > median(U) + 10 s + 10`` or non-finite ``U_i``."""
    finite = jnp.isfinite(potential)
    median = jnp.nanmedian(jnp.where(finite, potential, jnp.nan))
    spread = 1.4826 * jnp.nanmedian(
        jnp.where(finite, jnp.abs(potential - median), jnp.nan)
    )
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
