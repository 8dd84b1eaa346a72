"""Mode-weight correction: importance estimates of mode masses and resampling."""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_dilation.core.multimodal import modes, rebalancing
from numpyro_dilation.validation import targets

KEY = jax.random.PRNGKey(0)


def population(target, counts, scale, seed=1):
    """Exact draws of each component of ``target`` (sd ``scale``), ``counts[k]``."""
    keys = jax.random.split(jax.random.PRNGKey(seed), len(counts))
    parts = [
        m + scale * jax.random.normal(k, (c, target.dim))
        for k, m, c in zip(keys, target.means, counts, strict=True)
    ]
    return jnp.concatenate(parts)


_REBALANCERS = {}


def rebalancer(target):
    """One compiled rebalancing per target."""
    if id(target) in _REBALANCERS:
        return _REBALANCERS[id(target)]
    fn = jax.value_and_grad(target.logdensity_fn)

    @jax.jit
    def go(x, min_ess):
        found, _ = modes.find_modes(KEY, x, jax.vmap(target.logdensity_fn)(x), fn, 16)
        return rebalancing.rebalance(
            jax.random.PRNGKey(1), x, found, target.logdensity_fn, min_ess
        )

    _REBALANCERS[id(target)] = go
    return go


def rebalanced(target, x, min_ess=20.0):
    return rebalancer(target)(x, min_ess)


TWO_MODES = targets.two_unequal_modes(8)


def test_wrong_shares_are_corrected_in_dimension_8():
    # Two modes 2:1, particles 1:4: the heavy mode holds 20% instead of 67%.
    target = TWO_MODES
    x = population(target, [800, 3200], np.sqrt(0.05))
    index, found = rebalanced(target, x)
    share = float(np.mean(targets.nearest_mode(x[index], target.means) == 0))
    # Delta method: Var(log Z_m) ~ 1/ESS_m, so the heavy share w = Z_h/(Z_h+Z_l)
    # has sd w(1-w) sqrt(1/ESS_h + 1/ESS_l); systematic resampling adds < 1/n.
    ess = np.asarray(found.ess)[np.isfinite(found.log_mass)]
    assert len(ess) == 2 and np.all(ess > 100), ess
    sd = (2 / 9) * np.sqrt(np.sum(1 / ess))
    assert abs(share - 2 / 3) < 5 * sd + 1 / x.shape[0], (share, sd)


def test_unreliable_estimates_or_one_mode_keep_the_population():
    target = TWO_MODES
    x = population(target, [800, 3200], np.sqrt(0.05))
    index, found = rebalanced(target, x, min_ess=1e9)
    assert np.array_equal(index, np.arange(x.shape[0]))
    masses = np.sort(np.exp(np.asarray(found.log_mass))[np.isfinite(found.log_mass)])
    assert np.allclose(masses, [0.2, 0.8])
    one = targets.gaussian_mixture(jnp.zeros((1, 3)), 1.0, jnp.ones(1))
    x = population(one, [1000], 1.0)
    index, found = rebalanced(one, x)
    assert int(found.num_modes) == 1
    assert np.array_equal(index, np.arange(1000))


def test_corrected_shares_split_among_reliable_modes_only():
    shares = jnp.array([0.5, 0.3, 0.2])
    log_z = jnp.log(jnp.array([1.0, 3.0, 100.0]))
    ess = jnp.array([50.0, 80.0, 3.0])
    new, reliable = rebalancing.corrected_shares(shares, log_z, ess, 20.0)
    assert np.array_equal(reliable, [True, True, False])
    assert np.allclose(new, [0.2, 0.6, 0.2])


def test_systematic_resampling_rounds_each_expected_count():
    w = jax.random.dirichlet(KEY, jnp.ones(50))
    index = rebalancing.systematic_resample(jax.random.PRNGKey(3), jnp.log(w), 1000)
    counts = np.bincount(np.asarray(index), minlength=50)
    expected = 1000 * np.asarray(w)
    assert np.all(np.abs(counts - expected) < 1 + 1e-3), counts - expected
