"""Clustering particles into modes: k-means, peaks, barrier merging, proposals."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_dilation.core.multimodal import modes
from numpyro_dilation.validation import targets

# One xdist worker runs all of this file's tests (pyproject.toml: --dist
# loadgroup), so its module-scoped fixture (three_found) is built once.
pytestmark = pytest.mark.xdist_group("test_modes")

KEY = jax.random.PRNGKey(0)


def three_modes(dim=5, n=2000):
    means = jnp.zeros((3, dim)).at[1, 0].set(10.0).at[2, 1].set(10.0)
    return targets.gaussian_mixture(means, 1.0, jnp.array([0.5, 0.3, 0.2])), n


def exact_population(target, n, seed=1):
    x = target.sample_fn(jax.random.PRNGKey(seed), n)
    labels = targets.nearest_mode(x, target.means)
    return x, jax.vmap(target.logdensity_fn)(x), labels


def find(target, x, logdensity, max_modes):
    fn = jax.value_and_grad(target.logdensity_fn)
    return jax.jit(lambda x, v: modes.find_modes(KEY, x, v, fn, max_modes))(
        x, logdensity
    )


@pytest.fixture(scope="module")
def three_found():
    target, n = three_modes()
    x, logdensity, truth = exact_population(target, n)
    found, _ = find(target, x, logdensity, 16)
    return x, truth, found


def test_separated_modes_are_found_and_particles_assigned(three_found):
    x, truth, found = three_found
    n = x.shape[0]
    assert int(found.num_modes) == 3
    # Modes 10 sd apart: a particle is nearer another mode's centre with
    # probability Phi(-5) * n ~ 6e-4 for the whole population.
    assigned = np.asarray(modes.assign(found, x))
    for m in range(3):
        assert len(np.unique(assigned[np.asarray(truth) == m])) == 1
    shares = np.exp(np.asarray(found.log_mass))
    counts = np.bincount(assigned, minlength=16) / n
    assert np.allclose(shares[np.isfinite(found.log_mass)], counts[counts > 0])


def test_marginals_fitted_apart_are_those_of_the_whole_fit(three_found):
    # marginals=False (the kernel's fits, which fit the 1-D mixtures only
    # where several modes were found) changes nothing else, and fit_marginals
    # gives back what the whole fit holds.
    x, _, found = three_found
    target, _ = three_modes()
    fn = jax.value_and_grad(target.logdensity_fn)
    apart, _ = jax.jit(
        lambda x, v: modes.find_modes(KEY, x, v, fn, 16, marginals=False)
    )(x, jax.vmap(target.logdensity_fn)(x))
    blank = modes.empty(*x.shape, 16).marginals
    jax.tree.map(np.testing.assert_array_equal, apart.marginals, blank)
    rest = apart._replace(marginals=found.marginals)
    jax.tree.map(np.testing.assert_allclose, rest, found)
    fitted = jax.jit(modes.fit_marginals)(x)
    close = partial(np.testing.assert_allclose, rtol=1e-5)
    jax.tree.map(close, fitted, found.marginals)
    assert np.all(np.isfinite(np.asarray(fitted.log_weights).max(axis=1)))


def test_a_log_concave_target_is_one_mode():
    dim = 10
    a = np.random.default_rng(0).normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.1 * np.eye(dim)
    chol = np.linalg.cholesky(cov)
    precision = jnp.asarray(np.linalg.inv(cov))
    x = jax.random.normal(KEY, (2000, dim)) @ chol.T
    logp = lambda y: -0.5 * y @ precision @ y  # noqa: E731
    target = targets.Target("gaussian", dim, logp, None, None, None, None, {})
    found, labels = find(target, x, jax.vmap(logp)(x), 32)
    assert len(np.unique(np.asarray(labels))) == 32
    assert int(found.num_modes) == 1


def test_bunched_peaks_of_a_log_concave_target_are_one_mode():
    # Peaks of a 1-D Gaussian as 30 climbs leave them (a DilationKernel run
    # found such a set): a tight bunch of 25 near the top whose 8 nearest
    # peaks are each other, and 15 spread below whose 8 nearest are below.
    # Nearest neighbours alone split them into pieces; every segment to the
    # highest peak passes.
    peaks = np.concatenate(
        [np.linspace(1.09, 1.15, 15), [1.2203], 1.2463 + 2e-5 * np.arange(25)]
    ).astype(np.float32)[:, None]
    logp = lambda y: -0.5 * jnp.sum((y - 1.2465) ** 2) / 0.25  # noqa: E731
    values = jax.vmap(logp)(jnp.asarray(peaks))
    valid = jnp.ones(len(peaks), bool)
    mode_of = modes.merge_by_barrier(jnp.asarray(peaks), values, valid, logp)
    assert np.all(np.asarray(mode_of) == 0)


def test_stragglers_on_a_slope_do_not_join_two_modes():
    # Particles on the outer slope of the narrow mode sit lower than the barrier
    # between the modes: from them, the segment to either peak never dips. Their
    # cluster must climb to its peak before the barrier test.
    target = targets.asymmetric_mixture(2)
    x, logdensity, _ = exact_population(target, 2000)
    stragglers = jnp.stack([jnp.full(40, -4.0), jnp.linspace(-0.5, 0.5, 40)], 1)
    x = jnp.concatenate([x, stragglers])
    logdensity = jax.vmap(target.logdensity_fn)(x)
    line = jnp.stack([jnp.linspace(-1.5, 3.5, 501), jnp.zeros(501)], 1)
    barrier = float(jnp.min(jax.vmap(target.logdensity_fn)(line)))
    assert np.max(np.asarray(logdensity[-40:])) < barrier
    found, labels = find(target, x, logdensity, 32)
    assert int(found.num_modes) == 2
    assert np.all(
        np.asarray(modes.assign(found, x[-40:]))
        == modes.assign(found, jnp.array([[-2.0, 0.0]]))[0]
    )


def test_climb_reaches_the_peak_whatever_the_metric():
    mean = jnp.array([1.0, -2.0, 3.0])
    sd = jnp.array([0.1, 1.0, 10.0])
    fn = jax.value_and_grad(lambda y: -0.5 * jnp.sum(((y - mean) / sd) ** 2))
    start = mean + 3 * sd * jnp.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.5]])
    peak, value = modes.climb(fn, start, jnp.broadcast_to(0.3 * sd, start.shape))
    assert np.allclose(peak, mean, atol=1e-3 * float(sd.min()))
    assert np.allclose(value, 0.0, atol=1e-5)


def test_proposal_weights_and_mode_gaussians(three_found):
    found = three_found[2]
    found = found._replace(log_mass=jnp.where(found.log_mass > -jnp.inf, 0.0, -jnp.inf))
    q = modes.proposal(found, defensive=0.5)
    k = found.mode_of.shape[0]
    weights = np.exp(np.asarray(q.log_weights))
    assert np.isclose(weights.sum(), 1.0)
    # Equal masses: each mode gets 1/3, half to its pieces, half to its Gaussian.
    mode_of = np.asarray(found.mode_of)
    for m in np.unique(mode_of[mode_of >= 0]):
        assert np.isclose(weights[:k][mode_of == m].sum(), 1 / 6)
        assert np.isclose(weights[k + m], 1 / 6)
        pieces = weights[:k][mode_of == m]
        mean = pieces @ np.asarray(q.means[:k][mode_of == m]) / pieces.sum()
        assert np.allclose(q.means[k + m], mean, atol=1e-4)


def test_segment_logsumexp_is_the_log_of_each_segments_sum():
    # Segment 2 holds only -inf (log 0), segment 3 nothing: both -inf; the
    # others the log of their sum, however large the values (shifted by the
    # segment's maximum).
    values = jnp.array([1000.0, 999.0, -jnp.inf, 2.0, -3.0, 0.5, -jnp.inf])
    segment = jnp.array([0, 0, 2, 1, 1, 4, 2])
    got = modes.segment_logsumexp(values, segment, 5)
    expected = [
        1000.0 + np.log1p(np.exp(-1.0)),
        np.log(np.exp(2.0) + np.exp(-3.0)),
        -np.inf,
        -np.inf,
        0.5,
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
