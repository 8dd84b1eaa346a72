"""Diagonal Gaussian mixtures fitted to labelled particles.

    q(x) = sum_k a_k N(x; mu_k, diag(s_k^2)).

Empty components carry ``log a_k = -inf``. The marginal of ``q`` on one
coordinate is the 1-D mixture of the components' marginals.

A mixture over ``K`` components costs ``O(K d)`` per particle. Functions that
act on a population are chunked over particles (``lax.map`` with
``batch_size``), so their memory is ``O(batch_size * K * d)`` whatever the
number of particles.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp

from numpyro_dilation.core import draws

__all__ = [
    "GaussianMixture",
    "component_logpdf",
    "logpdf",
    "transform",
    "sample",
    "fit",
    "map_particles",
    "pick_row",
    "label_sums",
    "label_max",
]

BATCH_ELEMENTS = 2**22
"""Memory bound of one chunk of a population function, in array elements."""


class GaussianMixture(NamedTuple):
    """``log_weights`` ``(K,)``; ``means`` and ``scales`` (std. devs) ``(K, d)``."""

    log_weights: Array
    means: Array
    scales: Array


def component_logpdf(mixture: GaussianMixture, x: Array) -> Array:
    """``log N(x; mu_k, diag(s_k^2))`` for each component ``k``.

    ``-1/2 sum_j ((x_j - mu_kj) / s_kj)^2 + c_k``, with the constant
    ``c_k = -sum_j log s_kj - d/2 log 2 pi`` computed once per component rather
    than once per particle and coordinate.
    """
    d = mixture.means.shape[-1]
    constant = -jnp.sum(jnp.log(mixture.scales), axis=-1) - 0.5 * d * jnp.log(
        2 * jnp.pi
    )
    z = (x - mixture.means) * (1.0 / mixture.scales)
    return constant - 0.5 * jnp.sum(z * z, axis=-1)


def logpdf(mixture: GaussianMixture, x: Array) -> Array:
    """``log q(x) = logsumexp_k (log a_k + log N(x; mu_k, s_k^2))``."""
    return logsumexp(mixture.log_weights + component_logpdf(mixture, x))


def transform(mixture: GaussianMixture, u: Array, z: Array) -> Array:
    """The draw ``mu_k + s_k * z`` with ``k`` the inverse CDF of ``a`` at ``u``.

    ``u ~ U(0, 1)`` and ``z ~ N(0, I_d)`` make it a draw from ``q``.
    """
    weights = jnp.exp(mixture.log_weights - jnp.max(mixture.log_weights))
    cdf = jnp.cumsum(weights)
    k = jnp.minimum(jnp.sum(cdf < u * cdf[-1]), weights.shape[0] - 1)
    return mixture.means[k] + mixture.scales[k] * z


def sample(key: Array, mixture: GaussianMixture, num: int) -> Array:
    """``num`` draws: ``k ~ a``, then ``x = mu_k + s_k * z`` with ``z ~ N(0, I)``.

    The uniforms and the noise of all draws come from one call
    (``core.draws.normal_and_uniform``), not from one key per draw.
    """
    shape = (num, mixture.means.shape[1])
    z, u = draws.normal_and_uniform(key, shape, mixture.means.dtype)
    return jax.vmap(lambda ui, zi: transform(mixture, ui, zi))(u, z)


def pick_row(x: Array, index: Array) -> Array:
    """``x[index]`` as a masked sum over the leading (particle) axis.

    A reduction: on a population split over devices or processes it costs an
    all-reduce of one row, where indexing gathers the whole array.
    """
    mask = jnp.arange(x.shape[0]) == index
    return jnp.sum(jnp.where(mask.reshape(-1, *(1,) * (x.ndim - 1)), x, 0), axis=0)


def label_sums(x: Array, labels: Array, num_labels: int) -> tuple[Array, Array]:
    """Per-label counts ``n_k`` and sums ``sum_{i: labels_i = k} x_i`` of the rows
    of ``x`` ``(n, d)`` (or the entries of ``x`` ``(n,)``), as products with the
    indicator matrix ``1[labels_i = k]`` (labels outside ``0..K-1`` count
    nowhere).

    The same sums as ``jax.ops.segment_sum`` up to rounding, but a matrix
    product, not a scatter: XLA's CPU backend compiles a scatter as a kernel of
    its own (with those around it), a product as a library call; over a
    population split along ``n`` either is an all-reduce of ``K d`` values.
    """
    indicator = (labels[:, None] == jnp.arange(num_labels)).astype(x.dtype)
    sums = jnp.matmul(indicator.T, x, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(indicator, axis=0), sums


def label_max(values: Array, labels: Array, num_labels: int) -> Array:
    """Per-label maxima ``max_{i: labels_i = k} values_i`` (``-inf``, or the
    dtype's lowest integer, for a label without values), as a masked maximum
    over the ``(n, K)`` indicators rather than a scatter (``label_sums``)."""
    indicator = labels[:, None] == jnp.arange(num_labels)
    if jnp.issubdtype(values.dtype, jnp.floating):
        lowest = -jnp.inf
    else:
        lowest = jnp.iinfo(values.dtype).min
    return jnp.max(jnp.where(indicator, values[:, None], lowest), axis=0)


def map_particles(fn: Callable, *xs, num_components: int = 1):
    """``vmap(fn)`` over the leading axis, in chunks so that memory stays bounded.

    A chunk holds at most ``BATCH_ELEMENTS / (num_components * d)`` particles,
    taken with a stride: chunk ``j`` holds particles ``j, j + c, j + 2c, ...``
    of the ``c`` chunks. The particle axis so stays the outer one of each
    chunk, and a population split over devices or processes along it is
    evaluated where it lies (contiguous chunks would gather it).
    """
    n, d = xs[0].shape[0], xs[0].shape[-1]
    batch = max(1, min(n, BATCH_ELEMENTS // max(num_components * d, 1)))
    if batch >= n:
        return jax.vmap(fn)(*xs)
    chunks = next(c for c in range(-(-n // batch), n + 1) if n % c == 0)

    def strided(x):
        return jnp.swapaxes(x.reshape(n // chunks, chunks, *x.shape[1:]), 0, 1)

    def unstrided(y):
        return jnp.swapaxes(y, 0, 1).reshape(n, *y.shape[2:])

    out = jax.lax.map(lambda args: jax.vmap(fn)(*args), jax.tree.map(strided, xs))
    return jax.tree.map(unstrided, out)


def fit(
    x: Array,
    labels: Array,
    num_components: int,
    inflation: float = 1.0,
    prior_count: float = 5.0,
) -> GaussianMixture:
    """Per-label moments, weights ``a_k = n_k / n``.

    The variance of a component is shrunk towards the pooled within-component
    variance ``V`` (floored at ``1e-6`` times each coordinate's variance over
    all particles), so that a component of one particle is still proper:

        s_k^2 = inflation * (sum_{i in k} (x_i - mu_k)^2 + n0 V) / (n_k + n0),

    with ``n0 = prior_count``; ``inflation > 1`` widens the components, which
    makes an importance or independence proposal safer against light tails.
    """
    n = x.shape[0]
    counts, sums = label_sums(x, labels, num_components)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    _, squares = label_sums((x - means[labels]) ** 2, labels, num_components)
    pooled = jnp.sum(squares, axis=0) / n
    floor = 1e-6 * jnp.var(x, axis=0) + jnp.finfo(x.dtype).tiny
    pooled = jnp.maximum(pooled, floor)
    var = (squares + prior_count * pooled) / (counts[:, None] + prior_count)
    return GaussianMixture(
        log_weights=jnp.log(counts / n),
        means=means,
        scales=jnp.sqrt(inflation * var),
    )
