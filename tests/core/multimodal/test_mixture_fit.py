"""Diagonal Gaussian mixtures: densities, draws, fits, chunked population maps."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from numpyro_dilation.core.multimodal import mixture_fit as gm

MIXTURE = gm.GaussianMixture(
    log_weights=jnp.log(jnp.array([0.5, 0.3, 0.2])),
    means=jnp.array([[-3.0, 0.0], [2.0, 1.0], [0.0, 5.0]]),
    scales=jnp.array([[1.0, 0.5], [0.7, 2.0], [1.5, 1.0]]),
)


def scipy_logpdf(x, coords):
    w, m, s = (np.asarray(a, float) for a in MIXTURE)
    comp = [
        np.prod([stats.norm.pdf(x[j], m[k, j], s[k, j]) for j in coords])
        for k in range(3)
    ]
    return np.log(np.dot(np.exp(w), comp))


def test_logpdf_and_marginal_match_scipy():
    # Deterministic: float32 rounding only.
    for x in ([0.3, -1.2], [-3.5, 4.0], [2.0, 1.0]):
        x = np.array(x)
        assert np.isclose(gm.logpdf(MIXTURE, jnp.array(x)), scipy_logpdf(x, [0, 1]))
        marginal = gm.GaussianMixture(
            MIXTURE.log_weights, MIXTURE.means[:, 1:], MIXTURE.scales[:, 1:]
        )
        assert np.isclose(gm.logpdf(marginal, jnp.array(x[1:])), scipy_logpdf(x, [1]))


def test_draws_have_the_mixture_moments():
    # 40000 i.i.d. draws: each mean within 5 standard errors sqrt(var / n).
    n = 40000
    draws = gm.sample(jax.random.PRNGKey(0), MIXTURE, n)
    assert draws.shape == (n, MIXTURE.means.shape[1])
    w, m, s = (np.asarray(a, float) for a in MIXTURE)
    w = np.exp(w)
    mean = w @ m
    var = w @ (s**2 + m**2) - mean**2
    z = (np.asarray(draws).mean(0) - mean) / np.sqrt(var / n)
    assert np.all(np.abs(z) < 5), z
    # P(x_0 < -0.5) = sum_k w_k Phi((-0.5 - m_k0) / s_k0), within 5 binomial sd.
    p = w @ stats.norm.cdf((-0.5 - m[:, 0]) / s[:, 0])
    share = np.mean(np.asarray(draws)[:, 0] < -0.5)
    assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / n), (share, p)


def test_fit_recovers_each_label_moments():
    # Without shrinkage the fit is the per-label sample mean and variance.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 3)) * np.array([1.0, 2.0, 0.5])
    labels = np.repeat([0, 1, 2], 300)
    x[labels == 1] += 10.0
    fit = gm.fit(jnp.asarray(x), jnp.asarray(labels), 4, prior_count=0.0)
    for k in range(3):
        sel = x[labels == k]
        assert np.allclose(fit.means[k], sel.mean(0), atol=1e-4)
        assert np.allclose(fit.scales[k] ** 2, sel.var(0), rtol=1e-4)
    assert np.allclose(np.exp(fit.log_weights), [1 / 3, 1 / 3, 1 / 3, 0.0])
    # With shrinkage a one-particle component is still proper (finite, > 0).
    labels[0] = 3
    fit = gm.fit(jnp.asarray(x), jnp.asarray(labels), 4)
    assert np.all(np.isfinite(fit.scales)) and np.all(fit.scales > 0)


def test_map_particles_chunks_give_the_vmap_result(monkeypatch):
    # 1000 particles in chunks of at most 64 (20 strided chunks of 50), and a
    # count with only large divisors (67 chunks of 37); a pytree result keeps
    # its particle order.
    monkeypatch.setattr(gm, "BATCH_ELEMENTS", 3 * 2 * 64)
    for n in (1000, 37 * 67):
        x = jax.random.normal(jax.random.PRNGKey(0), (n, 2))

        def fn(xi):
            return gm.logpdf(MIXTURE, xi), xi.sum()

        expected = jax.vmap(fn)(x)
        chunked = gm.map_particles(fn, x, num_components=3)
        for a, b in zip(chunked, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_pick_row_is_indexing():
    x = jax.random.normal(jax.random.PRNGKey(0), (7, 3, 2))
    for i in range(7):
        np.testing.assert_array_equal(gm.pick_row(x, i), x[i])
    np.testing.assert_array_equal(gm.pick_row(x[:, 0, 0], 4), x[4, 0, 0])


def test_label_sums_and_maxima_are_segment_sums_and_maxima():
    # Labels outside 0..K-1 (-1: an empty component's) count nowhere; label 3
    # has no values (sum 0, maximum -inf or the lowest integer).
    key_x, key_l = jax.random.split(jax.random.PRNGKey(4))
    x = jax.random.normal(key_x, (500, 3))
    labels = jax.random.randint(key_l, (500,), -1, 5)
    labels = jnp.where(labels == 3, 4, labels)
    counts, sums = gm.label_sums(x, labels, 5)
    inside = jnp.where(labels >= 0, labels, 5)
    np.testing.assert_allclose(
        counts, jax.ops.segment_sum(jnp.ones(500), inside, 6)[:5], rtol=0
    )
    np.testing.assert_allclose(
        sums, jax.ops.segment_sum(x, inside, 6)[:5], rtol=1e-5, atol=1e-5
    )
    assert counts[3] == 0 and np.all(sums[3] == 0)
    _, column = gm.label_sums(x[:, 0], labels, 5)  # entries of a vector
    np.testing.assert_allclose(column, sums[:, 0], rtol=1e-6, atol=1e-6)
    for values in (x[:, 0], jnp.arange(500)):
        maxima = gm.label_max(values, labels, 5)
        expected = jax.ops.segment_max(values, inside, 6)[:5]
        np.testing.assert_array_equal(maxima, expected)
