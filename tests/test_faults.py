"""Faults and bad input: each case samples correctly or says clearly what is wrong.

Draws are checked against exact answers in units of Monte Carlo error
(``mc_error``: ESS-based standard errors, ``|z| <= 5``).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.stats
from mc_error import assert_matches
from numpyro.infer import MCMC
from runs import run_vectorized

from numpyro_dilation import DilationKernel
from numpyro_dilation.diagnostics import DilationWarning
from numpyro_dilation.validation.reference import Z_MAX, z_scores


def run(kernel, num_chains, num_warmup, num_samples, *args, **kwargs) -> MCMC:
    return run_vectorized(
        kernel,
        *args,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        **kwargs,
    )


def by_chain(mcmc, site=None):
    draws = mcmc.get_samples(group_by_chain=True)
    return np.asarray(draws if site is None else draws[site])


def test_nan_and_inf_regions_are_rejected_and_draws_stay_exact():
    # NaN for x0 < 0 and inf for x1 > 1: the target is a half-normal times a
    # normal truncated above 1. Proposals into either region are rejected
    # (MALA stays exact) and reported as divergent.
    def potential(x):
        pe = 0.5 * jnp.sum(x**2)
        return jnp.where(x[0] < 0, jnp.nan, jnp.where(x[1] > 1, jnp.inf, pe))

    init = jax.random.uniform(jax.random.PRNGKey(1), (256, 2), minval=0.05, maxval=0.9)
    # The plain path (no jumps, whose proposals from the snapshot stay inside the
    # support and dilute the divergent share below the warning's 5%).
    kernel = DilationKernel(potential_fn=potential, rebalance=False, jump_prob=0.0)
    with pytest.warns(DilationWarning, match="divergent"):
        mcmc = run(kernel, 256, 200, 100, init_params=init)
    x = by_chain(mcmc)
    half = scipy.stats.halfnorm()
    assert_matches(
        x[..., 0], half.mean(), half.std(), {q: half.ppf(q) for q in (0.1, 0.5, 0.9)}
    )
    trunc = scipy.stats.truncnorm(-np.inf, 1.0)
    assert_matches(
        x[..., 1], trunc.mean(), trunc.std(), {q: trunc.ppf(q) for q in (0.1, 0.5, 0.9)}
    )
    assert np.mean(np.asarray(mcmc.get_extra_fields()["diverging"])) > 0


def bernoulli_latent():
    z = numpyro.sample("z", dist.Bernoulli(0.3))
    numpyro.sample("y", dist.Normal(2.0 * z, 1.0), obs=1.0)


def poisson_latent():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    k = numpyro.sample("k", dist.Poisson(3.0))
    numpyro.sample("y", dist.Normal(mu + k, 1.0), obs=1.0)


@pytest.mark.parametrize(
    ("model", "site"), [(bernoulli_latent, "'z'"), (poisson_latent, "'k'")]
)
def test_discrete_latent_site_raises_error_naming_the_fix(model, site):
    # funsor is not a dependency: enumeration is unavailable (Bernoulli), or
    # impossible whatever is installed (Poisson has no enumerate support).
    with pytest.raises(ValueError, match=rf"\[{site}\] are discrete.*Marginalise"):
        run(DilationKernel(model), 8, 100, 10)


def test_empty_and_integer_data():
    # mu sees no data: its posterior is its prior N(0, 1). r sees integer counts:
    # Gamma(2, 1) prior and Poisson likelihood give the Gamma(2 + sum y, 1 + n)
    # posterior, checked in constrained space.
    def model(empty, counts):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=empty)
        r = numpyro.sample("r", dist.Gamma(2.0, 1.0))
        with numpyro.plate("n", counts.shape[0]):
            numpyro.sample("counts", dist.Poisson(r), obs=counts)

    counts = jnp.array([1, 4, 2, 0, 3], dtype=jnp.int32)
    mcmc = run(DilationKernel(model), 256, 200, 100, jnp.zeros((0,)), counts)
    prior = scipy.stats.norm()
    assert_matches(
        by_chain(mcmc, "mu"), 0.0, 1.0, {q: prior.ppf(q) for q in (0.1, 0.5, 0.9)}
    )
    post = scipy.stats.gamma(2 + 10, scale=1 / (1 + 5))
    assert_matches(
        by_chain(mcmc, "r"),
        post.mean(),
        post.std(),
        {q: post.ppf(q) for q in (0.1, 0.9)},
    )


def test_integer_init_params_are_promoted_to_float():
    init = jnp.ones((128, 2), dtype=jnp.int32)
    mcmc = run(
        DilationKernel(potential_fn=lambda x: 0.5 * jnp.sum(x**2)),
        128,
        100,
        100,
        init_params=init,
    )
    x = by_chain(mcmc)
    assert x.dtype.kind == "f"
    for j in range(2):
        assert_matches(x[..., j], 0.0, 1.0, {0.5: 0.0})


def test_extreme_scales_with_init_near_the_posterior():
    # Coordinates of scale 1e-6 and 1e6 in one target: the population's diagonal
    # preconditioner takes both; draws are checked in units of each scale.
    scales = jnp.array([1e-6, 1e6])

    def potential(x):
        return 0.5 * jnp.sum(((x - 3.0 * scales) / scales) ** 2)

    init = 3.0 * scales + scales * jax.random.normal(jax.random.PRNGKey(2), (256, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DilationWarning)
        mcmc = run(
            DilationKernel(potential_fn=potential), 256, 200, 100, init_params=init
        )
    x = by_chain(mcmc) / np.asarray(scales)
    for j in range(2):
        assert_matches(x[..., j], 3.0, 1.0, {0.1: 3 - 1.2816, 0.5: 3.0}, f"coord {j}")


def test_tiny_scale_far_from_the_initial_points_warns():
    # Posterior N(3e-6, 1e-6^2) and NumPyro's default initial points in (-2, 2):
    # 1e6 posterior sds from the mass. Particles get stuck (steps below float32
    # resolution of their position); the run must say so rather than return the
    # spread-out population silently.
    def model():
        numpyro.sample("x", dist.Normal(3e-6, 1e-6))

    with pytest.warns(DilationWarning, match="did not move"):
        run(DilationKernel(model), 128, 200, 10)


def test_single_particle_is_refused_naming_the_fix():
    # NumPyro hands an ensemble kernel a single key when num_chains=1 (and
    # cannot continue such a run: it takes rng_key[0] of the unsplit key).
    with pytest.raises(ValueError, match="chain_method='vectorized'"):
        run(
            DilationKernel(potential_fn=lambda x: 0.5 * jnp.sum(x**2)),
            1,
            200,
            10,
            init_params=jnp.zeros(2),
        )


def test_short_warmup_warns_naming_num_warmup():
    # The warning comes before the warmup, so init is traced, not compiled
    # (jax.eval_shape; the end-of-warmup checks, which need values, are then
    # left out: tests/test_diagnostics.py has them).
    kernel = DilationKernel(potential_fn=lambda x: 0.5 * jnp.sum(x**2))
    keys = jax.random.split(jax.random.PRNGKey(0), 8)

    def init(num_warmup):
        return jax.eval_shape(
            lambda k: kernel.init(k, num_warmup, jnp.zeros((8, 2))), keys
        )

    with pytest.warns(DilationWarning, match="num_warmup=20 .*at least 100"):
        init(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DilationWarning)
        init(100)


def test_wrong_draws_of_a_scale_parameter_are_not_silent():
    # A normal model with unknown mean and scale, NumPyro's default initial
    # points (log sigma in (-2, 2)). Particles started at small sigma sit where
    # the curvature is hundreds of times the bulk's, and the shared step size
    # leaves them stuck (39% of them with this seed). Whatever the sampler
    # does, it must not be silent: either the draws of sigma match the exact
    # posterior (by quadrature on a grid), or a DilationWarning was raised.
    y = np.random.default_rng(0).normal(1.0, 2.0, size=20)

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)

    mu = np.linspace(-6.0, 8.0, 1401)[:, None]
    sigma = np.linspace(1e-3, 12.0, 4000)[None, :]
    log_post = (
        scipy.stats.norm.logpdf(mu, 0.0, 5.0)
        + scipy.stats.halfnorm.logpdf(sigma, scale=5.0)
        - len(y) * np.log(sigma)
        - (len(y) * (y.mean() - mu) ** 2 + np.sum((y - y.mean()) ** 2)) / (2 * sigma**2)
    )
    marginal = np.exp(log_post - log_post.max()).sum(0)
    marginal /= marginal.sum()
    grid = sigma[0]
    mean = float(marginal @ grid)
    sd = float(np.sqrt(marginal @ (grid - mean) ** 2))
    cdf = np.cumsum(marginal)
    quantiles = {q: float(np.interp(q, cdf, grid)) for q in (0.05, 0.5, 0.95)}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DilationWarning)
        mcmc = run(DilationKernel(model), 64, 100, 100, y)
    warned = [w for w in caught if w.category is DilationWarning]
    z = z_scores(by_chain(mcmc, "sigma"), mean, sd, quantiles)
    wrong = {k: round(v, 1) for k, v in z.items() if abs(v) > Z_MAX}
    assert warned or not wrong, f"wrong draws of sigma {wrong} and no warning"
