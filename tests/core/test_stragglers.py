"""Stragglers (particles stuck in the tails while tuning) are replaced."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size
from runs import run_vectorized
from scipy.stats import halfnorm, norm

from numpyro_dilation import DilationKernel, core
from numpyro_dilation.core.calendar import STRAGGLER_PERIOD
from numpyro_dilation.core.stragglers import (
    find_stragglers,
    order_statistic,
    order_statistics,
    replace_stragglers,
    robust_location_scale,
)


def test_robust_location_scale_reads_the_median_and_lower_quartile():
    # Odd and even sizes, with and without non-finite entries, all non-finite:
    # the order statistics at (m - 1) // 2 and (m - 1) // 4 of the m finite
    # values, as np.sort gives them.
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 8, 1023, 1024):
        for bad in (0.0, 0.3, 1.0):
            v = rng.normal(size=n).astype(np.float32)
            v[rng.uniform(size=n) < bad] = rng.choice([np.nan, np.inf, -np.inf])
            finite = np.isfinite(v)
            median, scale = robust_location_scale(jnp.asarray(v), jnp.asarray(finite))
            if not finite.any():
                assert np.isnan(median) and np.isnan(scale)
                continue
            ordered = np.sort(v[finite])
            m = ordered.size
            expected = ordered[(m - 1) // 2]
            assert float(median) == expected, (n, bad)
            np.testing.assert_allclose(
                float(scale), (expected - ordered[(m - 1) // 4]) / 0.6745, rtol=1e-6
            )


def test_find_stragglers_with_four_in_ten_stuck():
    # Up to half the population stuck far out leaves the median and the scale
    # to the rest: with 40% of the energies at 1e6, the threshold (median
    # 0.97 + 10 s + 10, s = 1.74 from the bulk's 83rd and 42nd percentiles)
    # cuts every stuck particle and none of a N(0, 1) bulk of 6000.
    bulk = jax.random.normal(jax.random.PRNGKey(2), (6000,))
    mask = np.asarray(find_stragglers(jnp.concatenate([bulk, jnp.full(4000, 1e6)])))
    assert not mask[:6000].any() and mask[6000:].all()


def test_order_statistic_is_exact_at_every_rank():
    # The radix selection returns an element of the data, bit for bit: every
    # rank against np.sort, with duplicates, signed zeros, negatives, values
    # over many decades and excluded entries; float32 and float64.
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        v = np.concatenate(
            [
                rng.normal(size=40) * 10.0 ** rng.integers(-30, 30, 40),
                [0.0, -0.0, 1.5, 1.5, 1.5, -2.0, -2.0, 3e38, -3e38, 1e-40],
            ]
        ).astype(dtype)
        include = rng.uniform(size=v.size) < 0.8
        expected = np.sort(v[include])
        with jax.enable_x64(dtype == np.float64):
            ranks = jnp.arange(expected.size)
            got = jax.jit(jax.vmap(order_statistic, (None, None, 0)))(
                jnp.asarray(v), jnp.asarray(include), ranks
            )
            got = np.asarray(got)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)


def test_order_statistics_sort_on_one_device_and_select_on_several(monkeypatch):
    # One device: a sort (few XLA kernels); several, where the particles may
    # be split over them: the radix selection (its histograms the only sums
    # over the particles). Both give np.sort's values at every rank, with
    # ties, infinities and excluded entries.
    rng = np.random.default_rng(2)
    v = np.concatenate(
        [rng.normal(size=60), [1.5, 1.5, -2.0, np.inf, -np.inf, 0.0]]
    ).astype(np.float32)
    include = rng.uniform(size=v.size) < 0.7
    expected = np.sort(v[include])
    args = (jnp.asarray(v), jnp.asarray(include), jnp.arange(expected.size))
    programs = {}
    for devices in (1, 4):
        monkeypatch.setattr(jax, "device_count", lambda d=devices: d)

        def select(*a):  # a new function: traced anew, not from JAX's caches
            return order_statistics(*a)

        programs[devices] = str(jax.make_jaxpr(select)(*args))
        np.testing.assert_array_equal(np.asarray(jax.jit(select)(*args)), expected)
    # The selection works on the values' bits (bitcast to sortable keys).
    assert "sort[" in programs[1] and "bitcast_convert_type[" not in programs[1]
    assert "sort[" not in programs[4] and "bitcast_convert_type[" in programs[4]


def test_find_stragglers_on_chi_square_energies():
    # 4096 draws of chi2_10 / 2 (the energies of a 10-d Gaussian) are never cut;
    # appended points 50 nats above and NaN are.
    energies = jax.random.chisquare(jax.random.PRNGKey(0), 10.0, (4096,)) / 2
    energies = jnp.concatenate([energies, jnp.array([energies.max() + 50, jnp.nan])])
    mask = np.asarray(find_stragglers(energies))
    assert not mask[:4096].any() and mask[4096:].all()


def test_replace_stragglers_copies_other_particles():
    positions = jnp.arange(8.0)[:, None] * jnp.ones((8, 2))
    energies = jnp.array([0.0, 1.0, 0.5, 1e4, 0.2, jnp.inf, 0.7, 0.1])
    new, mask = replace_stragglers(jax.random.PRNGKey(1), positions, energies)
    assert mask.tolist() == [False] * 3 + [True, False, True, False, False]
    kept = np.asarray(positions)[~np.asarray(mask)]
    np.testing.assert_array_equal(new[~mask], kept)
    assert all(any(np.array_equal(row, k) for k in kept) for row in np.asarray(new))


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def test_small_scale_initialisations_do_not_bias_the_posterior():
    # With init_to_uniform, particles start at sigma down to e^-2, where the
    # likelihood of 30 points of sd 2 is extremely sharp; before stragglers were
    # replaced a fifth of them never moved and E[sigma] came out 1.30 instead of
    # 1.95. Reference: 2-D quadrature of the posterior on a (mu, sigma) grid.
    # Tolerance: 5 Monte Carlo standard errors sd / sqrt(ESS).
    y = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (30,)) + 1.0
    mu_grid = np.linspace(-3, 5, 801)[:, None]
    sigma_grid = np.linspace(0.5, 5, 901)[None, :]
    logp = (
        norm.logpdf(mu_grid, 0, 10)
        + halfnorm.logpdf(sigma_grid, scale=5)
        + norm.logpdf(np.asarray(y)[:, None, None], mu_grid, sigma_grid).sum(0)
    )
    weights = np.exp(logp - logp.max())
    weights /= weights.sum()
    mcmc = run_vectorized(
        DilationKernel(normal_model), y, num_warmup=300, num_samples=100, num_chains=512
    )
    draws = mcmc.get_samples(group_by_chain=True)
    for site, grid in [("mu", mu_grid), ("sigma", sigma_grid)]:
        mean = np.sum(weights * grid)
        sd = np.sqrt(np.sum(weights * (grid - mean) ** 2))
        value = np.asarray(draws[site])
        se = sd / np.sqrt(effective_sample_size(value))
        assert abs(value.mean() - mean) < 5 * se, site
        assert abs(value.std() - sd) < 5 * sd / np.sqrt(
            2 * effective_sample_size(value)
        )


def test_stragglers_are_replaced_every_straggler_period_while_tuning():
    # A particle put on a far plateau (log p = -1e6, no gradient: its moves
    # are accepted and it stays there) one iteration after the tuning's first
    # check is left alone until the next check, t = A + STRAGGLER_PERIOD, and
    # replaced by a copy of a particle from the bulk there.
    def logdensity(x):
        far = jnp.abs(x[0]) > 100.0
        return jnp.where(far, -1e6, -0.5 * jnp.sum(x**2))

    fn = jax.value_and_grad(logdensity)
    options = core.SamplerOptions(jump_prob=0.0, rebalance=False)
    cal = core.build_calendar(100, options, num_levels=4)
    num_anneal = int(cal.num_anneal)
    state = core.init(
        jax.random.normal(jax.random.PRNGKey(0), (64, 2)), fn, cal, options
    )
    step = jax.jit(lambda key, s: core.step(key, s, fn, options)[0])
    keys = jax.random.split(jax.random.PRNGKey(1), num_anneal + 1 + STRAGGLER_PERIOD)
    for key in keys[: num_anneal + 1]:
        state = step(key, state)
    assert int(state.iteration) == num_anneal + 1
    far = jnp.array([1000.0, 0.0])
    p = state.particles
    state = state._replace(
        particles=p._replace(
            position=p.position.at[0].set(far),
            center=p.center.at[0].set(far),
            logdensity=p.logdensity.at[0].set(-1e6),
            logdensity_grad=p.logdensity_grad.at[0].set(0.0),
        )
    )
    logdensities = []
    for key in keys[num_anneal + 1 :]:
        state = step(key, state)
        logdensities.append(float(state.particles.logdensity[0]))
    assert int(state.iteration) == num_anneal + STRAGGLER_PERIOD + 1
    assert logdensities[:-1] == [-1e6] * (STRAGGLER_PERIOD - 1)
    assert logdensities[-1] > -50.0
