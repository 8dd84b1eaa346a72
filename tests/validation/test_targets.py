"""Tests of the reference targets: normalisation, exact samplers, known values.

Statistical checks use fixed seeds and a z-score bound: an estimate from n
i.i.d. draws has standard error sd / sqrt(n) (for a share p, sqrt(p (1 - p) / n),
the binomial sd); |z| < 4.5 fails with probability 7e-6 per statistic when the
sampler is right, while the biases these tests guard against are many SEs.
"""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from numpyro.infer.util import log_density
from scipy import integrate, stats

from numpyro_dilation.validation.targets import (
    EIGHT_SCHOOLS_EFFECTS_REFERENCE,
    EIGHT_SCHOOLS_REFERENCE,
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    MANY_WELL_BARRIER,
    as_numpyro_model,
    asymmetric_mixture,
    breast_cancer_data,
    eight_schools_funnel_model,
    eight_schools_model,
    forty_mode_mixture,
    funnel,
    gaussian_mixture,
    hierarchical_logistic_data,
    hierarchical_logistic_model,
    item_response_data,
    item_response_model,
    lgcp_data,
    lgcp_model,
    lgcp_model_noncentred,
    logistic_regression_data,
    logistic_regression_model,
    many_well,
    matern32,
    mode_shares,
    mode_weight_tv,
    modes_found,
    nearest_mode,
    right_well_share,
    stochastic_volatility_data,
    stochastic_volatility_model,
    two_unequal_modes,
)

Z_MAX = 4.5
FAB_STD = math.log1p(math.e)  # softplus(1)

ALL_TARGETS = {
    "forty_mode": forty_mode_mixture,
    "forty_mode_unequal": lambda: forty_mode_mixture(unequal_weights=True),
    "two_unequal_modes": lambda: two_unequal_modes(8),
    "asymmetric_mixture": lambda: asymmetric_mixture(8),
    "many_well": lambda: many_well(8),
    "funnel": funnel,
}


def draws(target, n, seed=0):
    return np.asarray(target.sample_fn(jax.random.PRNGKey(seed), n), np.float64)


def model_log_density(model, *args):
    """Jitted params -> log joint of a NumPyro model (one compile, not one per op)."""
    return jax.jit(lambda params: log_density(model, args, {}, params)[0])


def grid_log_integral(logdensity_fn, bounds, num):
    """log of the Riemann sum of exp(logdensity_fn) on a uniform grid.

    For a smooth density that is negligible at the box's edges the Riemann sum
    converges faster than any power of the spacing (Euler-Maclaurin); with the
    grids below its error is far under the float32 rounding of the sum (1e-5).
    """
    axes = [jnp.linspace(lo, hi, num) for lo, hi in bounds]
    points = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    log_cell = sum(math.log((hi - lo) / (num - 1)) for lo, hi in bounds)
    log_values = jax.jit(jax.vmap(logdensity_fn))(points)
    return float(logsumexp(log_values)) + log_cell


@pytest.mark.parametrize(
    "factory, bounds, num",
    [
        (forty_mode_mixture, [(-50, 50)] * 2, 201),
        (lambda: forty_mode_mixture(unequal_weights=True), [(-50, 50)] * 2, 201),
        (lambda: two_unequal_modes(1), [(-2.5, 3.5)], 2001),
        (lambda: two_unequal_modes(2), [(-2.5, 3.5)] * 2, 401),
        (lambda: asymmetric_mixture(1), [(-6, 15)], 2001),
        (lambda: asymmetric_mixture(2), [(-6, 15), (-10, 10)], 401),
        (lambda: many_well(2), [(-4, 4), (-10, 10)], 801),
    ],
    ids=[
        "forty_mode",
        "forty_mode_unequal",
        "two_modes_1d",
        "two_modes_2d",
        "asymmetric_1d",
        "asymmetric_2d",
        "many_well_2d",
    ],
)
def test_log_z_by_quadrature(factory, bounds, num):
    target = factory()
    assert grid_log_integral(target.logdensity_fn, bounds, num) == pytest.approx(
        target.log_z, abs=1e-5
    )


def test_funnel_normalised_by_quadrature():
    # Substitute x1 = u exp(x0 / 2) so the grid resolves the funnel's neck:
    # int p(x0, x1) dx0 dx1 = int p(x0, u e^(x0/2)) e^(x0/2) dx0 du.
    target = funnel(2)

    def log_integrand(point):
        x0, u = point
        return target.logdensity_fn(jnp.array([x0, u * jnp.exp(x0 / 2)])) + x0 / 2

    log_z = grid_log_integral(log_integrand, [(-30, 30), (-10, 10)], 801)
    assert log_z == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    "factory, log_q",
    [
        # q: the heavy component, N(4/3, 0.05 I)
        (
            lambda: two_unequal_modes(8),
            lambda x: stats.norm.logpdf(x, 4 / 3, math.sqrt(0.05)).sum(-1),
        ),
        # q: the light component, N(-2, 0.5^2) x N(0, I)
        (
            lambda: asymmetric_mixture(8),
            lambda x: (
                stats.norm.logpdf(x[:, 0], -2, 0.5)
                + stats.norm.logpdf(x[:, 1:]).sum(-1)
            ),
        ),
        # q: a narrower funnel, x0 ~ N(0, 2^2), x_i | x0 ~ N(0, exp(x0))
        (
            lambda: funnel(10),
            lambda x: (
                stats.norm.logpdf(x[:, 0], 0, 2)
                + stats.norm.logpdf(x[:, 1:], 0, np.exp(x[:, :1] / 2)).sum(-1)
            ),
        ),
    ],
    ids=["two_unequal_modes", "asymmetric_mixture", "funnel"],
)
def test_log_z_by_monte_carlo(factory, log_q):
    # For a normalised q, E_p[q(x) / p~(x)] = 1 / Z when x ~ p: a check of
    # log_z and of the sampler together in dimensions quadrature cannot reach.
    # Each q is lighter-tailed than p (q / p~ <= 1 / w_k, resp. 3/2), so the
    # ratio has finite variance and the z-score of its mean is valid.
    target = factory()
    x = draws(target, 20000)
    log_p = jax.jit(jax.vmap(target.logdensity_fn))(jnp.asarray(x))
    log_p = np.asarray(log_p, np.float64)
    ratio = np.exp(log_q(x) - log_p)
    se = ratio.std() / math.sqrt(len(ratio))
    assert abs(ratio.mean() - math.exp(-target.log_z)) < Z_MAX * se


@pytest.mark.parametrize("name", list(ALL_TARGETS))
def test_target_contract(name):
    target = ALL_TARGETS[name]()
    x = target.sample_fn(jax.random.PRNGKey(0), 16)
    assert x.shape == (16, target.dim)
    batched, grads = jax.jit(jax.vmap(jax.value_and_grad(target.logdensity_fn)))(x)
    single = jnp.stack([jax.jit(target.logdensity_fn)(xi) for xi in x])
    assert batched.shape == (16,)
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert np.all(np.isfinite(grads))
    if target.means is not None:
        assert target.means.shape == (target.weights.shape[0], target.dim)
        assert float(target.weights.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(ALL_TARGETS))
def test_as_numpyro_model_log_density(name):
    target = ALL_TARGETS[name]()
    model_fn = model_log_density(as_numpyro_model(target))
    for x in 3.0 * jax.random.normal(jax.random.PRNGKey(1), (3, target.dim)):
        got = model_fn({"x": x})
        assert float(got) == pytest.approx(float(target.logdensity_fn(x)), rel=1e-6)


def test_gaussian_mixture_log_density_matches_scipy():
    means = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 3.0]])
    scales = np.array([[0.5], [2.0]])
    target = gaussian_mixture(means, scales, np.array([1.0, 3.0]))
    x = np.array([0.3, -0.7, 1.9])
    expected = np.log(
        0.25 * stats.multivariate_normal.pdf(x, means[0], 0.25 * np.eye(3))
        + 0.75 * stats.multivariate_normal.pdf(x, means[1], 4.0 * np.eye(3))
    )
    assert float(target.logdensity_fn(jnp.asarray(x))) == pytest.approx(
        expected, rel=1e-5
    )


MIXTURES = [
    "forty_mode",
    "forty_mode_unequal",
    "two_unequal_modes",
    "asymmetric_mixture",
]


@pytest.mark.parametrize("name", MIXTURES)
def test_mixture_sampler_moments(name):
    # Mean: SE = sqrt(var / n). Variance, from draws centred at the known mean:
    # SE = sd((x - mean)^2) / sqrt(n), estimated from the draws.
    target = ALL_TARGETS[name]()
    n = 40000
    x = draws(target, n)
    mean, var = (np.asarray(target.reference[k]) for k in ("mean", "var"))
    z_mean = (x.mean(0) - mean) / np.sqrt(var / n)
    squares = (x - mean) ** 2
    z_var = (squares.mean(0) - var) / (squares.std(0) / math.sqrt(n))
    assert np.all(np.abs(z_mean) < Z_MAX)
    assert np.all(np.abs(z_var) < Z_MAX)


def test_forty_mode_mixture_parameters():
    equal, unequal = forty_mode_mixture(), forty_mode_mixture(unequal_weights=True)
    assert equal.means.shape == (40, 2)
    assert np.all(np.abs(np.asarray(equal.means)) <= 40)
    np.testing.assert_array_equal(equal.means, unequal.means)
    np.testing.assert_array_equal(equal.means, forty_mode_mixture().means)
    assert not np.allclose(equal.means, forty_mode_mixture(seed=1).means)
    np.testing.assert_allclose(equal.weights, np.full(40, 1 / 40), rtol=1e-6)
    np.testing.assert_allclose(
        np.sort(unequal.weights), np.arange(1, 41) / 820, rtol=1e-5
    )
    assert np.any(np.diff(np.asarray(unequal.weights)) < 0)  # shuffled
    x = np.array([3.0, -7.0])
    expected = np.log(
        np.mean(
            [
                stats.multivariate_normal.pdf(x, m, FAB_STD**2 * np.eye(2))
                for m in np.asarray(equal.means, np.float64)
            ]
        )
    )
    assert float(equal.logdensity_fn(jnp.asarray(x))) == pytest.approx(
        expected, rel=1e-5
    )


def test_two_unequal_modes_heavy_share():
    # Modes 2 sqrt(16) = 8 apart with sd 0.22: the nearest mode is the component.
    target = two_unequal_modes(16)
    n = 20000
    shares = mode_shares(draws(target, n), target.means)
    heavy = target.reference["heavy_share"]
    assert heavy == pytest.approx(2 / 3)
    assert abs(float(shares[0]) - heavy) < Z_MAX * math.sqrt(heavy * (1 - heavy) / n)
    assert np.linalg.norm(target.means[0]) > np.linalg.norm(target.means[1])
    np.testing.assert_allclose(target.means[0], np.full(16, 4 / 3), rtol=1e-6)
    np.testing.assert_allclose(target.means[1], np.full(16, -2 / 3), rtol=1e-6)


def test_asymmetric_mixture_parameters_and_shares():
    target = asymmetric_mixture(8)
    # Mixture of N(-2, 0.5^2) (0.3) and N(5, 1.5^2) (0.7) on the first axis.
    mean0 = 0.3 * -2 + 0.7 * 5
    var0 = 0.3 * (0.25 + 4) + 0.7 * (2.25 + 25) - mean0**2
    assert float(target.reference["mean"][0]) == pytest.approx(mean0, rel=1e-6)
    assert float(target.reference["var"][0]) == pytest.approx(var0, rel=1e-6)
    # The Voronoi boundary is x0 = 1.5, so the light mode's cell holds
    # 0.3 P(N(-2, 0.5^2) < 1.5) + 0.7 P(N(5, 1.5^2) < 1.5) of the mass.
    light = 0.3 * stats.norm.cdf(3.5 / 0.5) + 0.7 * stats.norm.cdf(-3.5 / 1.5)
    n = 20000
    share = float(mode_shares(draws(target, n), target.means)[0])
    assert abs(share - light) < Z_MAX * math.sqrt(light * (1 - light) / n)


def test_many_well_reference_values():
    target = many_well(32)
    assert round(target.log_z, 4) == 164.6957
    assert round(target.reference["right_well_mass"], 4) == 0.8443
    assert 16 * many_well(2).log_z == pytest.approx(target.log_z, rel=1e-12)
    # The barrier is the density's local minimum in x1 between the wells.
    assert round(MANY_WELL_BARRIER, 4) == -0.0417
    pair = many_well(2).logdensity_fn
    barrier = jnp.array([MANY_WELL_BARRIER, 0.0])
    np.testing.assert_allclose(jax.grad(pair)(barrier), 0.0, atol=1e-5)
    for step in (-0.05, 0.05):
        assert pair(barrier + jnp.array([step, 0.0])) > pair(barrier)


def test_many_well_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        many_well(3)


def test_many_well_sampler():
    target = many_well(8)
    n = 20000
    x = draws(target, n)
    p = target.reference["right_well_mass"]
    share = np.asarray(right_well_share(x))
    assert share.shape == (4,)
    assert np.all(np.abs(share - p) < Z_MAX * math.sqrt(p * (1 - p) / n))

    # x1 mean against quadrature of exp(-x^4 + 6x^2 + 0.5x); x2 ~ N(0, 1).
    def well(t):
        return math.exp(-(t**4) + 6 * t**2 + 0.5 * t)

    norm_const = integrate.quad(well, -np.inf, np.inf)[0]
    x1_mean = integrate.quad(lambda t: t * well(t), -np.inf, np.inf)[0] / norm_const
    x1, x2 = x[:, 0::2], x[:, 1::2]
    assert np.all(np.abs(x1.mean(0) - x1_mean) < Z_MAX * x1.std(0) / math.sqrt(n))
    assert np.all(np.abs(x2.mean(0)) < Z_MAX / math.sqrt(n))
    assert np.all(np.abs(x2.var(0) - 1) < Z_MAX * math.sqrt(2 / n))


def test_funnel_sampler_and_reference():
    target = funnel(10)
    n = 20000
    x = draws(target, n)
    x0 = x[:, 0]
    assert abs(x0.mean()) < Z_MAX * 3 / math.sqrt(n)
    # sd of a normal sample: SE = sd / sqrt(2 n)
    assert abs(x0.std() - 3) < Z_MAX * 3 / math.sqrt(2 * n)
    # Given x0, x_i exp(-x0 / 2) must be N(0, 1), independent of x0.
    z = x[:, 1:] * np.exp(-x0[:, None] / 2)
    assert np.all(np.abs(z.mean(0)) < Z_MAX / math.sqrt(n))
    assert np.all(np.abs(z.var(0) - 1) < Z_MAX * math.sqrt(2 / n))
    # Var x_i = E exp(x0) for x0 ~ N(0, 9), by quadrature.
    e_exp = integrate.quad(lambda t: math.exp(t) * stats.norm.pdf(t, 0, 3), -60, 60)
    sd = np.asarray(target.reference["sd"])
    assert sd[0] == pytest.approx(3.0)
    np.testing.assert_allclose(sd[1:], math.sqrt(e_exp[0]), rtol=1e-6)
    np.testing.assert_array_equal(target.reference["mean"], np.zeros(10))


def test_eight_schools_reference_by_quadrature():
    # Integrating out the school effects, y_j ~ N(avg, sigma_j^2 + exp(2 log_sd)):
    # a 2-D posterior over (avg, log_sd), summed on a grid (Riemann, float64).
    # Given (avg, log_sd), school_effects_std_j is Gaussian (conjugate): its
    # precision p_j = 1 + tau^2 / sigma_j^2 and mean tau (y_j - avg) /
    # (sigma_j^2 p_j), tau = exp(log_sd); its moments averaged over the grid.
    avg = np.linspace(-40, 50, 901)[:, None, None]
    log_sd = np.linspace(-3, 9, 601)[None, :, None]
    log_post = (
        stats.norm.logpdf(avg[..., 0], 0, 10)
        + stats.norm.logpdf(log_sd[..., 0], 5, 1)
        + stats.norm.logpdf(
            EIGHT_SCHOOLS_Y,
            avg,
            np.sqrt(EIGHT_SCHOOLS_SIGMA**2 + np.exp(2 * log_sd)),
        ).sum(-1)
    )
    weight = np.exp(log_post - log_post.max())
    weight /= weight.sum()
    for name, values in (("avg_effect", avg[..., 0]), ("log_stddev", log_sd[..., 0])):
        mean = np.sum(weight * values)
        sd = math.sqrt(np.sum(weight * (values - mean) ** 2))
        assert EIGHT_SCHOOLS_REFERENCE[name]["mean"] == pytest.approx(mean, abs=1e-4)
        assert EIGHT_SCHOOLS_REFERENCE[name]["sd"] == pytest.approx(sd, abs=1e-4)
    tau = np.exp(log_sd)
    precision = 1 + tau**2 / EIGHT_SCHOOLS_SIGMA**2
    conditional_mean = (
        tau * (EIGHT_SCHOOLS_Y - avg) / EIGHT_SCHOOLS_SIGMA**2 / precision
    )
    weight = weight[..., None]
    mean = np.sum(weight * conditional_mean, (0, 1))
    second = np.sum(weight * (1 / precision + conditional_mean**2), (0, 1))
    ref = EIGHT_SCHOOLS_EFFECTS_REFERENCE
    np.testing.assert_allclose(ref["mean"], mean, atol=1e-4)
    np.testing.assert_allclose(ref["sd"], np.sqrt(second - mean**2), atol=1e-4)


def test_eight_schools_model_log_density():
    params = {
        "avg_effect": jnp.array(4.0),
        "log_stddev": jnp.array(1.5),
        "school_effects_std": jnp.linspace(-1.0, 1.0, 8),
    }
    got = model_log_density(eight_schools_model)(params)
    effects = np.asarray(params["school_effects_std"], np.float64)
    expected = (
        stats.norm.logpdf(4.0, 0, 10)
        + stats.norm.logpdf(1.5, 5, 1)
        + stats.norm.logpdf(effects).sum()
        + stats.norm.logpdf(
            EIGHT_SCHOOLS_Y, 4.0 + math.exp(1.5) * effects, EIGHT_SCHOOLS_SIGMA
        ).sum()
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_logistic_regression_data():
    X, y = logistic_regression_data(num_obs=50, dim=3, seed=0)
    assert X.shape == (50, 3) and y.shape == (50,)
    assert X.dtype == jnp.float32 and y.dtype == jnp.int32
    assert set(np.unique(y)) == {0, 1}
    X_again, y_again = logistic_regression_data(num_obs=50, dim=3, seed=0)
    np.testing.assert_array_equal(X, X_again)
    np.testing.assert_array_equal(y, y_again)
    X_other, _ = logistic_regression_data(num_obs=50, dim=3, seed=1)
    assert not np.array_equal(X, X_other)


def test_logistic_regression_model_log_density():
    X, y = logistic_regression_data(num_obs=50, dim=3, seed=0)
    params = {"weights": jnp.array([0.5, -1.0, 2.0]), "intercept": jnp.array(0.3)}
    got = model_log_density(logistic_regression_model, X, y)(params)
    logits = np.asarray(X, np.float64) @ np.array([0.5, -1.0, 2.0]) + 0.3
    y64 = np.asarray(y, np.float64)
    expected = stats.norm.logpdf([0.5, -1.0, 2.0, 0.3]).sum() + np.sum(
        y64 * -np.logaddexp(0, -logits) + (1 - y64) * -np.logaddexp(0, logits)
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_breast_cancer_data():
    X, y = breast_cancer_data()
    assert X.shape == (569, 30) and y.shape == (569,)
    np.testing.assert_allclose(X.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(X.std(0), 1.0, atol=1e-4)
    assert int(y.sum()) == 357  # benign


def test_breast_cancer_data_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn"):
        breast_cancer_data()


def test_mode_metrics_on_hand_made_samples():
    means = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = jnp.array([[1.0, 1.0], [9.0, -1.0], [0.5, 8.0], [2.0, 0.0], [-3.0, 4.0]])
    np.testing.assert_array_equal(nearest_mode(samples, means), [0, 1, 2, 0, 0])
    np.testing.assert_allclose(mode_shares(samples, means), [0.6, 0.2, 0.2])
    weights = jnp.full(3, 1 / 3)
    # 0.5 (|0.6 - 1/3| + 2 |0.2 - 1/3|) = 4/15
    assert float(mode_weight_tv(samples, means, weights)) == pytest.approx(4 / 15)
    assert float(mode_weight_tv(samples, means, jnp.array([0.6, 0.2, 0.2]))) == 0.0
    assert int(modes_found(samples, means, min_share=0.2)) == 1  # strictly above
    assert int(modes_found(samples, means, min_share=0.1)) == 3


def test_modes_found_default_threshold():
    # 4000 samples: 2 near mode 1 (share 5e-4, not above the default 5e-4),
    # 8 near mode 2 (share 2e-3), none near mode 3.
    means = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = jnp.concatenate([jnp.zeros(3990, int), jnp.ones(2, int), jnp.full(8, 2)])
    samples = means[labels] + 0.1
    assert int(modes_found(samples, means)) == 2


def test_lgcp_data_and_model():
    coords, counts = lgcp_data(side=4, seed=0)
    assert coords.shape == (16, 2) and counts.shape == (16,)
    assert np.all(np.asarray(counts) >= 0)
    cov = matern32(coords, 1.5, 0.3)
    np.testing.assert_allclose(np.diag(cov), 1.5**2, rtol=1e-5)
    assert np.all(np.linalg.eigvalsh(np.asarray(cov)) > -1e-5)
    params = {"amplitude": 1.0, "length_scale": 0.3, "f": jnp.zeros(16)}
    value, _ = log_density(lgcp_model, (coords, counts), {}, params)
    assert np.isfinite(value)


def test_lgcp_noncentred_is_the_same_posterior():
    # Change of variables f = L z: log p_centred(f) = log p_noncentred(z) -
    # log|det L|, exactly, at any point (here not the prior mean).
    coords, counts = lgcp_data(side=4, seed=0)
    amplitude, length_scale = 1.3, 0.4
    z = jax.random.normal(jax.random.PRNGKey(1), (16,))
    cov = matern32(coords, amplitude, length_scale) + 1e-4 * jnp.eye(16)
    chol = jnp.linalg.cholesky(cov)
    hyper = {"amplitude": amplitude, "length_scale": length_scale}
    centred, _ = log_density(lgcp_model, (coords, counts), {}, {**hyper, "f": chol @ z})
    noncentred, _ = log_density(
        lgcp_model_noncentred, (coords, counts), {}, {**hyper, "z": z}
    )
    log_det = jnp.sum(jnp.log(jnp.diag(chol)))
    np.testing.assert_allclose(centred, noncentred - log_det, rtol=1e-5)


def test_stochastic_volatility_centred_is_the_same_posterior():
    # h = mu + AR(1) of the scaled shocks: h_std -> h is triangular with
    # diagonal (sigma / sqrt(1 - phi^2), sigma, ..., sigma), so log p_centred(h) =
    # log p_noncentred(h_std) - sum log(scales), exactly, at any point.
    returns = stochastic_volatility_data(num_days=30, seed=1)
    assert returns.shape == (30,) and np.all(np.isfinite(returns))
    mu, phi, sigma = -0.7, 0.8, 0.3
    h_std = jax.random.normal(jax.random.PRNGKey(2), (30,))
    h, previous = [], mu
    for t in range(30):
        scale = sigma / math.sqrt(1 - phi**2) if t == 0 else sigma
        previous = mu + phi * (previous - mu) + scale * float(h_std[t])
        h.append(previous)
    hyper = {"mu": mu, "persistence": phi, "shock_scale": sigma}
    noncentred, trace = log_density(
        stochastic_volatility_model, (returns,), {}, {**hyper, "h_std": h_std}
    )
    centred, _ = log_density(
        stochastic_volatility_model,
        (returns, True),
        {},
        {**hyper, "h": jnp.asarray(h)},
    )
    log_det = math.log(sigma / math.sqrt(1 - phi**2)) + 29 * math.log(sigma)
    np.testing.assert_allclose(centred, noncentred - log_det, rtol=1e-5)
    # The returns' likelihood is at the computed h: N(0, exp(h)).
    np.testing.assert_allclose(
        trace["returns"]["fn"].scale, np.exp(np.asarray(h) / 2), rtol=1e-5
    )


def test_item_response_log_density_by_hand():
    answers = item_response_data(num_students=40, num_items=10, seed=3)
    assert answers.shape == (40, 10) and set(np.unique(answers)) <= {0, 1}
    rng = np.random.default_rng(4)
    params = {
        "mean_difficulty": 0.3,
        "difficulty_scale": 1.7,
        "ability": rng.normal(size=40),
        "difficulty_std": rng.normal(size=10),
    }
    value, _ = log_density(item_response_model, (answers,), {}, params)
    logits = params["ability"][:, None] - (0.3 + 1.7 * params["difficulty_std"])
    expected = (
        np.sum(answers * logits - np.logaddexp(0, logits))
        + stats.norm.logpdf(0.3, 0, 5)
        + stats.halfnorm.logpdf(1.7, scale=2)
        + np.sum(stats.norm.logpdf(params["ability"]))
        + np.sum(stats.norm.logpdf(params["difficulty_std"]))
    )
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_hierarchical_logistic_data_and_log_density_by_hand():
    X, groups, y = hierarchical_logistic_data(seed=0)
    assert X.shape == (500, 10) and groups.shape == (500, 5) and y.shape == (500,)
    np.testing.assert_array_equal(groups.sum(1), 1.0)
    # Neighbouring predictors correlate 0.9: the estimate from n = 500 rows
    # has standard error about (1 - 0.9^2) / sqrt(500) = 0.0085; 5 se.
    corr = np.corrcoef(X.T)
    assert np.all(np.abs(np.diag(corr, 1) - 0.9) < 5 * 0.0085)
    rng = np.random.default_rng(5)
    params = {
        "coef_mean": rng.normal(size=10),
        "coef_scale": 0.4,
        "coef_std": rng.normal(size=(5, 10)),
        "intercept": rng.normal(size=5),
    }
    value, _ = log_density(hierarchical_logistic_model, (X, groups, y), {}, params)
    coef = params["coef_mean"] + 0.4 * params["coef_std"]
    g = groups.argmax(1)
    logits = np.sum(X * coef[g], 1) + params["intercept"][g]
    expected = (
        np.sum(y * logits - np.logaddexp(0, logits))
        + np.sum(stats.norm.logpdf(params["coef_mean"]))
        + stats.halfnorm.logpdf(0.4)
        + np.sum(stats.norm.logpdf(params["coef_std"]))
        + np.sum(stats.norm.logpdf(params["intercept"], 0, 2))
    )
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_eight_schools_funnel_centred_is_the_same_posterior():
    # theta = mu + tau theta_std, Jacobian tau per school: log p_centred(theta) =
    # log p_noncentred(theta_std) - 8 log tau, exactly, at any point; and the
    # centred density by hand.
    mu, tau = 1.5, 0.3
    theta_std = jax.random.normal(jax.random.PRNGKey(3), (8,))
    theta = mu + tau * theta_std
    hyper = {"mu": mu, "tau": tau}
    centred, _ = log_density(
        eight_schools_funnel_model, (), {}, {**hyper, "theta": theta}
    )
    noncentred, _ = log_density(
        eight_schools_funnel_model,
        (),
        {"centred": False},
        {**hyper, "theta_std": theta_std},
    )
    np.testing.assert_allclose(centred, noncentred - 8 * math.log(tau), rtol=1e-5)
    y, sigma = np.asarray(EIGHT_SCHOOLS_Y), np.asarray(EIGHT_SCHOOLS_SIGMA)
    by_hand = (
        stats.norm.logpdf(mu, 0, 5)
        + stats.halfcauchy.logpdf(tau, scale=5)
        + stats.norm.logpdf(np.asarray(theta), mu, tau).sum()
        + stats.norm.logpdf(y, np.asarray(theta), sigma).sum()
    )
    np.testing.assert_allclose(centred, by_hand, rtol=1e-5)
