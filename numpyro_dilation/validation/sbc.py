"""Simulation-based calibration (Talts et al. 2018, arXiv 1804.06788).

For a model with a prior one can simulate from: draw ``theta_r`` from the prior,
data ``y_r`` from the model given ``theta_r``, draw ``L`` values from the
posterior given ``y_r`` with DilationKernel, and take the rank of ``theta_r``
among them, ``rank_r = #{l : theta_l < theta_r}`` in ``{0, ..., L}``. If the
sampler draws from the exact posterior, every scalar component's ranks are
uniform on ``{0, ..., L}``; a chi-square test on ``B`` equal bins of ranks checks
it.

All ``R`` replications run in one MCMC run: each model here is *stacked*, its
parameters and data carry a leading replication axis under a ``plate``, so its
posterior is the product of the ``R`` independent posteriors. The ``L`` draws of
replication ``r`` are the ``L`` particles' values of its coordinates at the last
iteration (particles are exchangeable draws of the population). The kernel
shares one step size over all replications, and adapts one diagonal
preconditioner entry per coordinate.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.stats
from jax import Array
from numpyro.distributions import constraints
from numpyro.infer import MCMC

from numpyro_dilation.kernel import DilationKernel
from numpyro_dilation.validation.targets import EIGHT_SCHOOLS_SIGMA

__all__ = [
    "SBCCase",
    "CASES",
    "simulate_ranks",
    "rank_counts",
    "chi_square",
]


class SBCCase(NamedTuple):
    """``simulate(key, R) -> (truth, data)``; ``model(*data)`` is the stacked model.

    ``truth`` maps each latent site to its true values, shape ``(R, ...)``.
    """

    name: str
    simulate: Callable[[Array, int], tuple[dict, tuple]]
    model: Callable[..., None]


NORMAL_OBS = 10


def _normal_normal_simulate(key, num_rep):
    k1, k2 = jax.random.split(key)
    mu = jax.random.normal(k1, (num_rep,))
    return {"mu": mu}, (mu[:, None] + jax.random.normal(k2, (num_rep, NORMAL_OBS)),)


def _normal_normal(y):
    """``mu ~ N(0, 1)``, ``y_i ~ N(mu, 1)``, ``i = 1..10``."""
    with numpyro.plate("replications", y.shape[0]):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu[:, None], 1.0).to_event(1), obs=y)


GROUP_SD = jnp.asarray(EIGHT_SCHOOLS_SIGMA)
GROUPS = GROUP_SD.shape[0]


def _hierarchical_simulate(key, num_rep):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    mu = 5.0 * jax.random.normal(k1, (num_rep, 1))
    tau = jnp.abs(5.0 * jax.random.normal(k2, (num_rep, 1)))
    eta = jax.random.normal(k3, (num_rep, GROUPS))
    y = mu + tau * eta + GROUP_SD * jax.random.normal(k4, (num_rep, GROUPS))
    return {"mu": mu, "tau": tau, "eta": eta}, (y,)


def _hierarchical(y):
    """Non-centred normal hierarchy with the eight schools' standard errors
    ``sigma_j``: ``mu ~ N(0, 5^2)``, ``tau ~ HalfNormal(5)``, ``eta_j ~ N(0, 1)``,
    ``y_j ~ N(mu + tau eta_j, sigma_j^2)``, ``j = 1..8``. The data are weak
    against the prior's group spread, the regime the non-centred form suits."""
    with numpyro.plate("replications", y.shape[0], dim=-2):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfNormal(5.0))
        with numpyro.plate("groups", GROUPS, dim=-1):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(mu + tau * eta, GROUP_SD), obs=y)


LOGISTIC_OBS, PREDICTORS = 50, 3


def _logistic_simulate(key, num_rep):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x = jax.random.normal(k1, (num_rep, LOGISTIC_OBS, PREDICTORS))
    beta = jax.random.normal(k2, (num_rep, PREDICTORS))
    intercept = jax.random.normal(k3, (num_rep,))
    logits = jnp.einsum("rnp,rp->rn", x, beta) + intercept[:, None]
    y = jax.random.bernoulli(k4, jax.nn.sigmoid(logits)).astype(jnp.int32)
    return {"beta": beta, "intercept": intercept}, (x, y)


def _logistic(x, y):
    """``beta_p ~ N(0, 1)`` (3 predictors), ``intercept ~ N(0, 1)``,
    ``y_i ~ Bernoulli(sigmoid(x_i beta + intercept))``, 50 observations."""
    with numpyro.plate("replications", x.shape[0]):
        beta = numpyro.sample(
            "beta", dist.Normal(0.0, 1.0).expand([PREDICTORS]).to_event(1)
        )
        intercept = numpyro.sample("intercept", dist.Normal(0.0, 1.0))
        logits = jnp.einsum("rnp,rp->rn", x, beta) + intercept[:, None]
        numpyro.sample("y", dist.Bernoulli(logits=logits).to_event(1), obs=y)


MIXTURE_OBS, MIXTURE_PRIOR_SD = 50, 2.0


def _mixture_simulate(key, num_rep):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    mu = jnp.sort(MIXTURE_PRIOR_SD * jax.random.normal(k1, (num_rep, 2)), axis=-1)
    w = jax.random.beta(k2, 2.0, 2.0, (num_rep,))
    upper = jax.random.uniform(k3, (num_rep, MIXTURE_OBS)) > w[:, None]
    centre = jnp.where(upper, mu[:, 1:], mu[:, :1])
    return {"mu": mu, "w": w}, (centre + jax.random.normal(k4, centre.shape),)


def _mixture(y):
    """Two unit-variance components with ordered means: ``mu`` is the sorted pair
    of two ``N(0, 2^2)`` draws (density ``2 N(mu_1) N(mu_2)`` on ``mu_1 < mu_2``),
    ``w ~ Beta(2, 2)`` the weight of the lower component, 50 observations."""
    with numpyro.plate("replications", y.shape[0]):
        mu = numpyro.sample(
            "mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,))
        )
        numpyro.factor(
            "mu_prior", dist.Normal(0.0, MIXTURE_PRIOR_SD).log_prob(mu).sum(-1)
        )
        w = numpyro.sample("w", dist.Beta(2.0, 2.0))
        log_w = jnp.stack([jnp.log(w), jnp.log1p(-w)], -1)[:, None, :]
        components = dist.Normal(mu[:, None, :], 1.0).log_prob(y[..., None])
        numpyro.factor(
            "likelihood", jax.nn.logsumexp(log_w + components, axis=-1).sum(-1)
        )


CASES = {
    case.name: case
    for case in [
        SBCCase("normal_normal", _normal_normal_simulate, _normal_normal),
        SBCCase("hierarchical", _hierarchical_simulate, _hierarchical),
        SBCCase("logistic_regression", _logistic_simulate, _logistic),
        SBCCase("ordered_mixture", _mixture_simulate, _mixture),
    ]
}
"""The stacked models of docs/validation.md, by name."""


def simulate_ranks(
    case: SBCCase,
    key: Array,
    num_replications: int,
    num_particles: int,
    num_warmup: int,
    **kernel_kwargs,
) -> dict[str, np.ndarray]:
    """Ranks of the true values among the particles, ``(R, k)`` per site.

    ``k`` counts the scalar components of the site; ranks lie in
    ``{0, ..., num_particles}``.
    """
    key_sim, key_run = jax.random.split(key)
    truth, data = case.simulate(key_sim, num_replications)
    mcmc = MCMC(
        DilationKernel(case.model, **kernel_kwargs),
        num_warmup=num_warmup,
        num_samples=1,
        num_chains=num_particles,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(key_run, *data)
    draws = mcmc.get_samples(group_by_chain=True)
    ranks = {}
    for site, value in truth.items():
        last = np.asarray(draws[site])[:, -1]
        below = np.sum(last < np.asarray(value)[None], axis=0)
        ranks[site] = below.reshape(num_replications, -1)
    return ranks


def rank_counts(ranks: np.ndarray, num_draws: int, num_bins: int) -> np.ndarray:
    """Counts of ``ranks`` (in ``{0..L}``) in ``num_bins`` equal bins.

    Needs ``L + 1`` divisible by ``num_bins`` so that every bin holds as many
    rank values (else the uniform law does not give equal bin probabilities).
    """
    if (num_draws + 1) % num_bins:
        raise ValueError(
            f"num_draws + 1 = {num_draws + 1} must be divisible by num_bins="
            f"{num_bins}: choose e.g. num_draws = {num_bins * 16 - 1}."
        )
    bins = np.asarray(ranks) // ((num_draws + 1) // num_bins)
    return np.bincount(bins.ravel(), minlength=num_bins)


def chi_square(ranks: np.ndarray, num_draws: int, num_bins: int) -> tuple[float, float]:
    """Pearson's chi-square statistic of uniform bins and its p-value
    (``num_bins - 1`` degrees of freedom)."""
    result = scipy.stats.chisquare(rank_counts(ranks, num_draws, num_bins))
    return float(result.statistic), float(result.pvalue)
