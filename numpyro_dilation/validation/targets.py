"""Reference targets with known answers (docs/design.md section 5).

A flat target is a :class:`Target`: a log density on R^dim, an exact sampler
and the summaries a sampler must reproduce. The Bayesian models (eight schools,
logistic regression) are NumPyro model functions. The mode metrics at the end
score samples against a target's mode centres.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm
from numpyro.distributions import constraints
from scipy import integrate


class Target(NamedTuple):
    """A density on R^dim with known answers.

    logdensity_fn: x of shape (dim,) -> log p(x) up to a constant (jittable,
    vmappable). sample_fn(key, n): n exact i.i.d. draws, shape (n, dim).
    means (K, dim) and weights (K,): mode centres and their normalised masses.
    log_z: log of the integral of exp(logdensity_fn). reference: known summaries.
    """

    name: str
    dim: int
    logdensity_fn: Callable[[Array], Array]
    sample_fn: Callable[[Array, int], Array] | None
    means: Array | None
    weights: Array | None
    log_z: float | None
    reference: dict


def gaussian_mixture(
    means: Array, scales: Array, weights: Array, name: str = "gaussian_mixture"
) -> Target:
    """Diagonal Gaussian mixture p(x) = sum_k w_k prod_j N(x_j; m_kj, s_kj^2).

    means: (K, d); scales: per-component per-coordinate std, broadcastable to
    (K, d); weights: (K,), normalised here. The density is normalised
    (log Z = 0). reference: the mixture's mean and per-coordinate variance.
    """
    means = jnp.asarray(means, dtype=float)
    scales = jnp.broadcast_to(jnp.asarray(scales, dtype=float), means.shape)
    weights = jnp.asarray(weights, dtype=float)
    weights = weights / weights.sum()
    log_weights = jnp.log(weights)

    def logdensity_fn(x: Array) -> Array:
        return logsumexp(log_weights + norm.logpdf(x, means, scales).sum(-1))

    @functools.partial(jax.jit, static_argnums=1)
    def sample_fn(key: Array, n: int) -> Array:
        key_component, key_noise = jax.random.split(key)
        k = jax.random.categorical(key_component, log_weights, shape=(n,))
        noise = jax.random.normal(key_noise, (n, means.shape[1]))
        return means[k] + scales[k] * noise

    mean = weights @ means
    var = weights @ (scales**2 + means**2) - mean**2
    return Target(
        name=name,
        dim=means.shape[1],
        logdensity_fn=logdensity_fn,
        sample_fn=sample_fn,
        means=means,
        weights=weights,
        log_z=0.0,
        reference={"mean": mean, "var": var},
    )


def forty_mode_mixture(unequal_weights: bool = False, seed: int = 0) -> Target:
    """The 2-D mixture of 40 Gaussians of FAB (Midgley et al. 2023).

    Means uniform in [-40, 40]^2 drawn with PRNGKey(seed); per-coordinate std
    softplus(1) = 1.3133. Weights equal, or with unequal_weights proportional
    to 1, 2, ..., 40 in an order shuffled with fold_in(PRNGKey(seed), 1)
    (weights k/820: lightest 0.0012, heaviest 0.049).
    """
    key = jax.random.PRNGKey(seed)
    means = jax.random.uniform(key, (40, 2), minval=-40.0, maxval=40.0)
    ranks = jax.random.permutation(jax.random.fold_in(key, 1), jnp.arange(1.0, 41.0))
    weights = ranks if unequal_weights else jnp.ones(40)
    name = "forty_mode_unequal" if unequal_weights else "forty_mode"
    return gaussian_mixture(means, jax.nn.softplus(1.0), weights, name=name)


def two_unequal_modes(dim: int) -> Target:
    """Two Gaussian modes with weights 2:1 (SLIPS, Grenioux et al. 2024).

    Component 0, the heavy one (weight 2/3), is centred at 1 + 1/3 on every
    coordinate, farther from the origin than component 1 (weight 1/3) at
    -1 + 1/3, so a sampler started at the origin is not helped. Covariance
    0.05 I. reference["heavy_share"] = 2/3.
    """
    means = jnp.stack([jnp.full(dim, 1 + 1 / 3), jnp.full(dim, -1 + 1 / 3)])
    target = gaussian_mixture(
        means, math.sqrt(0.05), jnp.array([2.0, 1.0]), name="two_unequal_modes"
    )
    return target._replace(reference={**target.reference, "heavy_share": 2 / 3})


def asymmetric_mixture(dim: int) -> Target:
    """Two modes off-centre with unequal widths (docs/design.md sections 2 and 5).

    On the first coordinate: component 0, light and narrow, N(-2, 0.5^2) with
    weight 0.3; component 1, heavy and wide, N(5, 1.5^2) with weight 0.7. The
    other coordinates are N(0, 1) in both components, so the modes differ only
    along the first axis.
    """
    means = jnp.zeros((2, dim)).at[:, 0].set(jnp.array([-2.0, 5.0]))
    scales = jnp.ones((2, dim)).at[:, 0].set(jnp.array([0.5, 1.5]))
    return gaussian_mixture(
        means, scales, jnp.array([0.3, 0.7]), name="asymmetric_mixture"
    )


def _well_log_density(x1: Array) -> Array:
    """Unnormalised log density of one well coordinate: -x^4 + 6 x^2 + 0.5 x."""
    return -(x1**4) + 6 * x1**2 + 0.5 * x1


MANY_WELL_BARRIER = 2 * math.cos(math.acos(1 / 16) / 3 - 2 * math.pi / 3)
"""Top of the energy barrier between the wells (the density's local minimum): the
middle root of -4x^3 + 12x + 0.5 = 0, i.e. of x^3 - 3x - 1/8 = 0, by the
trigonometric formula for three real roots."""

# x1 grid for the inverse-CDF sampler; exp(_well_log_density) is below e^-150
# of its peak outside [-4, 4].
_WELL_GRID = np.linspace(-4.0, 4.0, 16001)


@functools.cache
def _well_quadrature() -> tuple[float, float, np.ndarray]:
    """log of the integral of exp(-x^4 + 6x^2 + 0.5x), the mass right of the
    barrier, and the CDF on _WELL_GRID."""

    def density(x: float) -> float:
        return math.exp(_well_log_density(x))

    left = integrate.quad(density, -np.inf, MANY_WELL_BARRIER, epsrel=1e-12)[0]
    right = integrate.quad(density, MANY_WELL_BARRIER, np.inf, epsrel=1e-12)[0]
    cdf = integrate.cumulative_trapezoid(
        np.exp(_well_log_density(_WELL_GRID)), _WELL_GRID, initial=0.0
    )
    return math.log(left + right), right / (left + right), cdf / cdf[-1]


def many_well(dim: int = 32) -> Target:
    """Many-well target (Noé et al. 2019; FAB, Midgley et al. 2023).

    dim/2 independent pairs (x1, x2) on consecutive coordinates, each with
    log p = -x1^4 + 6 x1^2 + 0.5 x1 - 0.5 x2^2 (unnormalised). Each x1 has two
    wells; reference["right_well_mass"] (0.8443) is its mass beyond the barrier
    at MANY_WELL_BARRIER (-0.0417), by 1-D quadrature, and log_z =
    (dim/2) (log int exp(-x^4 + 6x^2 + 0.5x) dx + 0.5 log 2 pi) (164.6957 for
    dim = 32). Exact sampler: inverse CDF on a fine grid for x1, N(0, 1) for x2.
    """
    if dim % 2:
        raise ValueError(f"many_well needs an even dim, got {dim}")
    num_pairs = dim // 2
    log_z_well, right_mass, cdf = _well_quadrature()
    grid, cdf = jnp.asarray(_WELL_GRID), jnp.asarray(cdf)

    def logdensity_fn(x: Array) -> Array:
        pairs = x.reshape(num_pairs, 2)
        return jnp.sum(_well_log_density(pairs[:, 0]) - 0.5 * pairs[:, 1] ** 2)

    @functools.partial(jax.jit, static_argnums=1)
    def sample_fn(key: Array, n: int) -> Array:
        key_x1, key_x2 = jax.random.split(key)
        x1 = jnp.interp(jax.random.uniform(key_x1, (n, num_pairs)), cdf, grid)
        x2 = jax.random.normal(key_x2, (n, num_pairs))
        return jnp.stack([x1, x2], axis=-1).reshape(n, dim)

    return Target(
        name="many_well",
        dim=dim,
        logdensity_fn=logdensity_fn,
        sample_fn=sample_fn,
        means=None,
        weights=None,
        log_z=num_pairs * (log_z_well + 0.5 * math.log(2 * math.pi)),
        reference={"right_well_mass": right_mass, "barrier": MANY_WELL_BARRIER},
    )


def right_well_share(samples: Array) -> Array:
    """Per pair, the share of samples whose x1 lies beyond MANY_WELL_BARRIER.

    samples: (n, dim) draws on a many_well target; returns (dim/2,).
    """
    return jnp.mean(samples[:, 0::2] > MANY_WELL_BARRIER, axis=0)


def funnel(dim: int = 10) -> Target:
    """Neal's funnel (Neal 2003): x0 ~ N(0, 3^2), x_i | x0 ~ N(0, exp(x0)).

    Normalised (log Z = 0). reference: mean 0; sd 3 for x0 and
    sqrt(E exp(x0)) = exp(9/4) = 9.4877 for the other coordinates.
    """

    def logdensity_fn(x: Array) -> Array:
        return norm.logpdf(x[0], 0.0, 3.0) + jnp.sum(
            norm.logpdf(x[1:], 0.0, jnp.exp(x[0] / 2))
        )

    @functools.partial(jax.jit, static_argnums=1)
    def sample_fn(key: Array, n: int) -> Array:
        z = jax.random.normal(key, (n, dim))
        x0 = 3.0 * z[:, :1]
        return jnp.concatenate([x0, jnp.exp(x0 / 2) * z[:, 1:]], axis=1)

    sd = jnp.full(dim, math.exp(9 / 4)).at[0].set(3.0)
    return Target(
        name="funnel",
        dim=dim,
        logdensity_fn=logdensity_fn,
        sample_fn=sample_fn,
        means=None,
        weights=None,
        log_z=0.0,
        reference={"mean": jnp.zeros(dim), "sd": sd},
    )


def as_numpyro_model(target: Target) -> Callable[[], None]:
    """A NumPyro model with one real site "x" of shape (dim,) and density
    exp(target.logdensity_fn(x)), so any NumPyro sampler can run on a target."""

    def model() -> None:
        x = numpyro.sample(
            "x",
            dist.ImproperUniform(
                constraints.real_vector, (), event_shape=(target.dim,)
            ),
        )
        numpyro.factor("log_density", target.logdensity_fn(x))

    return model


EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
"""The eight schools' estimated treatment effects ``y_j``."""
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
"""Their standard errors ``sigma_j``."""

EIGHT_SCHOOLS_REFERENCE = {
    "avg_effect": {"mean": 5.7990, "sd": 5.4472},
    "log_stddev": {"mean": 2.4506, "sd": 0.5128},
}
"""Posterior mean and sd of eight_schools_model's global sites, by 2-D quadrature
over (avg_effect, log_stddev) with the school effects integrated out
(y_j ~ N(avg_effect, sigma_j^2 + exp(2 log_stddev))). inference-gym's Stan
estimates, 5.7598 (+-0.0179) / 5.4654 and 2.4533 (+-0.0019) / 0.5147, agree
within 2.2 and 1.4 of their Monte Carlo standard errors."""

EIGHT_SCHOOLS_EFFECTS_REFERENCE = {
    "mean": np.array(
        [0.6529, 0.0949, -0.2381, 0.0470, -0.3361, -0.1979, 0.5406, 0.1472]
    ),
    "sd": np.array([0.8006, 0.7022, 0.8079, 0.7239, 0.6826, 0.7249, 0.7046, 0.8319]),
}
"""Posterior mean and sd of eight_schools_model's ``school_effects_std`` (one per
school), by the same quadrature: given (avg_effect, log_stddev), with
tau = exp(log_stddev), school_effects_std_j is Gaussian with precision
p_j = 1 + tau^2 / sigma_j^2 and mean tau (y_j - avg_effect) / (sigma_j^2 p_j);
its moments are averaged over the 2-D posterior."""


def eight_schools_model(
    y: Array | None = EIGHT_SCHOOLS_Y, sigma: Array = EIGHT_SCHOOLS_SIGMA
) -> None:
    """Non-centred eight schools (inference-gym; Rubin 1981).

    avg_effect ~ N(0, 10^2), log_stddev ~ N(5, 1), school_effects_std_j ~ N(0, 1),
    y_j ~ N(avg_effect + exp(log_stddev) school_effects_std_j, sigma_j^2).
    Posterior summaries: EIGHT_SCHOOLS_REFERENCE, EIGHT_SCHOOLS_EFFECTS_REFERENCE.
    """
    avg_effect = numpyro.sample("avg_effect", dist.Normal(0.0, 10.0))
    log_stddev = numpyro.sample("log_stddev", dist.Normal(5.0, 1.0))
    with numpyro.plate("schools", len(sigma)):
        effects_std = numpyro.sample("school_effects_std", dist.Normal(0.0, 1.0))
        loc = avg_effect + jnp.exp(log_stddev) * effects_std
        numpyro.sample("y", dist.Normal(loc, sigma), obs=y)


def eight_schools_funnel_model(
    y: Array | None = EIGHT_SCHOOLS_Y,
    sigma: Array = EIGHT_SCHOOLS_SIGMA,
    centred: bool = True,
) -> None:
    """Eight schools as in NumPyro's and Stan's documentation (Rubin 1981;
    Gelman et al., BDA3 5.5), whose group scale reaches zero: mu ~ N(0, 5^2),
    tau ~ HalfCauchy(5), theta_j ~ N(mu, tau^2), y_j ~ N(theta_j, sigma_j^2).
    ``centred=True`` (default): ``theta`` is the latent site, a funnel between
    ``theta`` and ``tau`` that NUTS reports with divergences; ``False``: the
    latent site is ``theta_std``, ``theta = mu + tau theta_std``, the same
    posterior. (:func:`eight_schools_model` is inference-gym's version, whose
    log-normal prior keeps the scale away from zero.)
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", len(sigma)):
        if centred:
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
        else:
            theta_std = numpyro.sample("theta_std", dist.Normal(0.0, 1.0))
            theta = mu + tau * theta_std
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def lgcp_data(side: int = 10, seed: int = 0) -> tuple[Array, Array]:
    """Synthetic counts for :func:`lgcp_model` on a ``side x side`` grid of the
    unit square: the cell centres ``(side**2, 2)`` and Poisson counts drawn from
    the model's own prior with ``PRNGKey(seed)`` (a field, amplitude and length
    scale from their priors)."""
    centres = (np.arange(side) + 0.5) / side
    coords = jnp.asarray(np.stack(np.meshgrid(centres, centres), -1).reshape(-1, 2))
    prior = numpyro.infer.Predictive(lgcp_model, num_samples=1)
    counts = prior(jax.random.PRNGKey(seed), coords)["counts"][0]
    return coords, counts


def matern32(coords: Array, amplitude: Array, length_scale: Array) -> Array:
    """Matern-3/2 covariance ``a^2 (1 + sqrt(3) r / l) exp(-sqrt(3) r / l)``
    between the rows of ``coords``, with ``r`` their Euclidean distance."""
    diff = coords[:, None, :] - coords[None, :, :]
    r = jnp.sqrt(jnp.sum(diff**2, -1) + 1e-12)
    scaled = jnp.sqrt(3.0) * r / length_scale
    return amplitude**2 * (1.0 + scaled) * jnp.exp(-scaled)


def _lgcp_hyperparameters(coords: Array) -> Array:
    """The priors shared by both LGCP parameterisations; returns the field's
    covariance ``K + 1e-4 I`` (Matern-3/2, latent amplitude and length scale)."""
    amplitude = numpyro.sample("amplitude", dist.LogNormal(0.0, 0.5))
    length_scale = numpyro.sample("length_scale", dist.LogNormal(jnp.log(0.3), 0.5))
    return matern32(coords, amplitude, length_scale) + 1e-4 * jnp.eye(len(coords))


def lgcp_model(coords: Array, counts: Array | None = None) -> None:
    """Log-Gaussian Cox process on grid cells (Moller, Syversveen, Waagepetersen
    1998), centred: ``d = cells + 2`` latent scalars.

    amplitude ~ LogNormal(0, 0.5), length_scale ~ LogNormal(log 0.3, 0.5),
    f ~ MVN(0, K + 1e-4 I) with K the Matern-3/2 covariance of the cell
    centres (its Cholesky factor and triangular solves are in every gradient),
    counts_i ~ Poisson(exp(1 + f_i)).
    """
    cov = _lgcp_hyperparameters(coords)
    f = numpyro.sample(
        "f", dist.MultivariateNormal(jnp.zeros(len(coords)), covariance_matrix=cov)
    )
    numpyro.sample("counts", dist.Poisson(jnp.exp(1.0 + f)), obs=counts)


def lgcp_model_noncentred(coords: Array, counts: Array | None = None) -> None:
    """:func:`lgcp_model` with the field non-centred, the same posterior:
    z ~ N(0, I), f = L z deterministic with L L^T = K + 1e-4 I. The reference
    parameterisation for NUTS, which does not mix on the centred one."""
    cov = _lgcp_hyperparameters(coords)
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([len(coords)]).to_event(1))
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ z)
    numpyro.sample("counts", dist.Poisson(jnp.exp(1.0 + f)), obs=counts)


@functools.partial(jax.jit, static_argnames=("num_obs", "dim"))
def logistic_regression_data(
    num_obs: int = 20000, dim: int = 50, seed: int = 0
) -> tuple[Array, Array]:
    """Synthetic logistic regression data (docs/design.md section 6, D = 50).

    X_ij ~ N(0, 1); true weights and intercept drawn from the N(0, 1) priors of
    logistic_regression_model with PRNGKey(seed); y_i ~ Bernoulli(sigmoid(
    X_i w + b)). Returns X (num_obs, dim) float32 and y (num_obs,) int32.
    """
    key_x, key_w, key_b, key_y = jax.random.split(jax.random.PRNGKey(seed), 4)
    X = jax.random.normal(key_x, (num_obs, dim))
    logits = X @ jax.random.normal(key_w, (dim,)) + jax.random.normal(key_b)
    y = jax.random.bernoulli(key_y, jax.nn.sigmoid(logits)).astype(jnp.int32)
    return X, y


def logistic_regression_model(X: Array, y: Array | None = None) -> None:
    """Bayesian logistic regression: weights_j ~ N(0, 1), intercept ~ N(0, 1),
    y_i ~ Bernoulli(sigmoid(X_i weights + intercept))."""
    weights = numpyro.sample(
        "weights", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1)
    )
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ weights + intercept), obs=y)


def breast_cancer_data() -> tuple[Array, Array]:
    """scikit-learn's bundled breast-cancer data (no download): X (569, 30)
    with standardised columns, float32, and y (569,) int32 (1 = benign).
    With an intercept, logistic regression on it has d = 31
    (docs/design.md section 5)."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as err:
        raise ImportError(
            "breast_cancer_data needs scikit-learn, an optional dependency: "
            "pip install scikit-learn"
        ) from err
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return jnp.asarray(X, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.int32)


def stochastic_volatility_data(num_days: int = 100, seed: int = 0) -> np.ndarray:
    """Synthetic daily returns for :func:`stochastic_volatility_model`: a
    log-variance ``h`` that is AR(1) around ``mu = -1`` with persistence
    ``phi = 0.95`` and shock scale ``sigma = 0.25``, started at its stationary
    law, and ``y_t ~ N(0, exp(h_t))``, drawn with NumPy's ``default_rng(seed)``.
    Returns ``y`` (num_days,) float32."""
    rng = np.random.default_rng(seed)
    mu, phi, sigma = -1.0, 0.95, 0.25
    h = np.empty(num_days)
    h[0] = mu + sigma / np.sqrt(1 - phi**2) * rng.normal()
    for t in range(1, num_days):
        h[t] = mu + phi * (h[t - 1] - mu) + sigma * rng.normal()
    return (np.exp(h / 2) * rng.normal(size=num_days)).astype(np.float32)


def stochastic_volatility_model(returns: Array, centred: bool = False) -> None:
    """Stochastic volatility (Kim, Shephard, Chib 1998; the Stan manual's
    model): ``d = T + 3`` latent scalars for ``T`` days.

    mu ~ N(0, 2^2), persistence phi ~ U(-1, 1), shock_scale sigma ~ HalfNormal(1),
    h_1 ~ N(mu, sigma^2 / (1 - phi^2)), h_t | h_{t-1} ~ N(mu + phi (h_{t-1} - mu),
    sigma^2), returns_t ~ N(0, exp(h_t)). Non-centred (default): the latent
    site is ``h_std``, the standardised shocks, and ``h`` is computed from
    them; ``centred=True``: ``h`` itself is the latent site (a funnel between
    ``h`` and ``shock_scale``).
    """
    num_days = returns.shape[0]
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    phi = numpyro.sample("persistence", dist.Uniform(-1.0, 1.0))
    sigma = numpyro.sample("shock_scale", dist.HalfNormal(1.0))
    scales = jnp.ones(num_days).at[0].set(1.0 / jnp.sqrt(1.0 - phi**2)) * sigma
    if centred:
        h = numpyro.sample(
            "h", dist.ImproperUniform(constraints.real_vector, (), (num_days,))
        )
        previous = jnp.concatenate([jnp.atleast_1d(mu), h[:-1]])
        shocks = (h - mu - phi * (previous - mu)) / scales
        numpyro.factor("h_prior", jnp.sum(norm.logpdf(shocks) - jnp.log(scales)))
    else:
        shocks = numpyro.sample(
            "h_std", dist.Normal(0.0, 1.0).expand([num_days]).to_event(1)
        )

        def ar1(previous, scaled_shock):
            h = mu + phi * (previous - mu) + scaled_shock
            return h, h

        _, h = jax.lax.scan(ar1, mu, scales * shocks)
    numpyro.sample("returns", dist.Normal(0.0, jnp.exp(h / 2)), obs=returns)


def item_response_data(
    num_students: int = 400, num_items: int = 100, seed: int = 0
) -> np.ndarray:
    """Synthetic right/wrong answers for :func:`item_response_model`:
    abilities ~ N(0, 1), difficulties ~ N(0.5, 1), answers ~ Bernoulli(
    sigmoid(ability - difficulty)), with NumPy's ``default_rng(seed)``. Returns
    ``(num_students, num_items)`` int32."""
    rng = np.random.default_rng(seed)
    ability = rng.normal(size=(num_students, 1))
    difficulty = 0.5 + rng.normal(size=num_items)
    p = 1.0 / (1.0 + np.exp(difficulty - ability))
    return (rng.uniform(size=p.shape) < p).astype(np.int32)


def item_response_model(answers: Array) -> None:
    """Rasch item-response model (Rasch 1960), difficulties non-centred:
    ``d = students + items + 2`` latent scalars.

    ability_j ~ N(0, 1), mean_difficulty ~ N(0, 5^2), difficulty_scale ~
    HalfNormal(2), difficulty_std_k ~ N(0, 1), difficulty_k = mean_difficulty +
    difficulty_scale difficulty_std_k, answers_jk ~ Bernoulli(sigmoid(ability_j -
    difficulty_k)).
    """
    num_students, num_items = answers.shape
    mean = numpyro.sample("mean_difficulty", dist.Normal(0.0, 5.0))
    scale = numpyro.sample("difficulty_scale", dist.HalfNormal(2.0))
    with numpyro.plate("students", num_students):
        ability = numpyro.sample("ability", dist.Normal(0.0, 1.0))
    with numpyro.plate("items", num_items):
        difficulty_std = numpyro.sample("difficulty_std", dist.Normal(0.0, 1.0))
    logits = ability[:, None] - (mean + scale * difficulty_std)
    numpyro.sample("answers", dist.Bernoulli(logits=logits).to_event(2), obs=answers)


def hierarchical_logistic_data(
    num_groups: int = 5,
    obs_per_group: int = 100,
    num_predictors: int = 10,
    correlation: float = 0.9,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic data for :func:`hierarchical_logistic_model`: predictors with
    ``corr(X_i, X_j) = correlation^|i - j|``, group memberships one-hot,
    coefficients ``N(mu, 0.5^2)`` around ``mu ~ N(0, 1)``, intercepts ``N(0,
    1)``, with NumPy's ``default_rng(seed)``. Returns X ``(n, P)`` float32,
    groups ``(n, G)`` float32 (one-hot) and y ``(n,)`` int32."""
    rng = np.random.default_rng(seed)
    lags = np.abs(
        np.subtract.outer(np.arange(num_predictors), np.arange(num_predictors))
    )
    chol = np.linalg.cholesky(correlation**lags)
    n = num_groups * obs_per_group
    X = rng.normal(size=(n, num_predictors)) @ chol.T
    groups = np.repeat(np.eye(num_groups), obs_per_group, axis=0)
    coef = rng.normal(size=num_predictors) + 0.5 * rng.normal(
        size=(num_groups, num_predictors)
    )
    logits = np.sum(X * (groups @ coef), 1) + groups @ rng.normal(size=num_groups)
    y = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logits))
    return X.astype(np.float32), groups.astype(np.float32), y.astype(np.int32)


def hierarchical_logistic_model(
    X: Array, groups: Array, y: Array | None = None
) -> None:
    """Logistic regression with group-level coefficients, non-centred:
    ``d = P + 1 + G P + G`` latent scalars (P predictors, G groups).

    coef_mean_i ~ N(0, 1), coef_scale ~ HalfNormal(1), coef_std_gi ~ N(0, 1),
    coef_gi = coef_mean_i + coef_scale coef_std_gi, intercept_g ~ N(0, 2^2),
    y_n ~ Bernoulli(sigmoid(X_n coef_{g(n)} + intercept_{g(n)})), with
    ``groups`` the one-hot memberships ``(n, G)``.
    """
    num_groups, num_predictors = groups.shape[1], X.shape[1]
    mean = numpyro.sample(
        "coef_mean", dist.Normal(0.0, 1.0).expand([num_predictors]).to_event(1)
    )
    scale = numpyro.sample("coef_scale", dist.HalfNormal(1.0))
    coef_std = numpyro.sample(
        "coef_std",
        dist.Normal(0.0, 1.0).expand([num_groups, num_predictors]).to_event(2),
    )
    intercept = numpyro.sample(
        "intercept", dist.Normal(0.0, 2.0).expand([num_groups]).to_event(1)
    )
    coef = groups @ (mean + scale * coef_std)
    logits = jnp.sum(X * coef, -1) + groups @ intercept
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


MIN_MODE_SHARE = 5e-4
"""modes_found counts a mode when it holds more than 0.05% of the samples: below
the lightest weight of every mixture here (1/820 = 0.12% for the unequal
40-mode mixture) and above one stray sample in 2000 that crosses a Voronoi
boundary from a neighbouring mode."""


def nearest_mode(samples: Array, means: Array) -> Array:
    """Index of the nearest mode centre (Euclidean) per sample: (n, d), (K, d)
    -> (n,) ints."""
    sq_dist = jnp.sum((samples[:, None, :] - means[None, :, :]) ** 2, axis=-1)
    return jnp.argmin(sq_dist, axis=-1)


@jax.jit
def mode_shares(samples: Array, means: Array) -> Array:
    """Share of the samples nearest to each mode centre: (K,), sums to 1.

    Where modes overlap, exact samples too give shares that differ from the
    weights; compare with mode_shares of target.sample_fn draws. Compiled, so
    that the (n, K, d) distances are fused, not stored (a 1024-particle run's
    512,000 draws and 40 modes: 0.25 s instead of 0.75 s op by op).
    """
    counts = jnp.bincount(nearest_mode(samples, means), length=means.shape[0])
    return counts / samples.shape[0]


def mode_weight_tv(samples: Array, means: Array, weights: Array) -> Array:
    """Mode-weight total variation 0.5 sum_k |share_k - w_k| (scalar array)."""
    return 0.5 * jnp.sum(jnp.abs(mode_shares(samples, means) - weights))


def modes_found(
    samples: Array, means: Array, min_share: float = MIN_MODE_SHARE
) -> Array:
    """Number of modes whose share of the samples exceeds min_share (scalar)."""
    return jnp.sum(mode_shares(samples, means) > min_share)
