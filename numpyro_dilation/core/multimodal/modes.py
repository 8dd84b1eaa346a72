"""Modes of a particle population: clusters, merged where no density barrier parts them.

1. **Clusters.** k-means (k-means++ seeding, Arthur & Vassilvitskii 2007, then
   Lloyd iterations) with a fixed maximum ``K`` of clusters, run twice: on
   coordinates scaled by the population's standard deviation, then by the
   pooled within-cluster standard deviation of the first pass (the population
   scale shrinks exactly the directions that separate modes); each cluster is
   fitted by a diagonal Gaussian (``mixture_fit.fit``). ``K`` is static,
   so all of it is jittable: more than ``K`` modes are seen as fewer, larger
   clusters.
2. **Modes.** k-means cuts one mode into several clusters. Each cluster gets
   a peak: from its particle of highest density, ``CLIMB_STEPS`` steps of
   safeguarded gradient ascent (``climb``), so that a cluster of stragglers
   on a slope is represented by the top of its hill, not by a low point that
   every mode can be seen from. Two clusters belong to the same mode when the
   target density along the segment between their peaks never drops below
   the lower peak by more than ``tolerance`` nats (checked at 3 interior
   points); modes are the connected components of that relation, tested
   between each cluster and its ``NEIGHBOURS`` nearest ones and the highest
   peak. For a log-concave target the density on a segment is never below its
   lower end, so every cluster merges with the highest peak's: a unimodal
   log-concave posterior is always one mode. This costs ``K (CLIMB_STEPS +
   1)`` gradients and ``3 K (NEIGHBOURS + 1)`` log densities, whatever the
   number of particles.
3. **Marginals.** Each coordinate's values are also cut into
   ``MARGINAL_COMPONENTS`` histogram bins, each fitted by a Gaussian: a 1-D
   mixture per coordinate, the proposal of one-coordinate jumps, which
   resolves the wells of each coordinate even where the joint modes are too
   many to cluster (a product of ``m`` double wells has ``2^m`` modes).

Everything is on flat particles of shape ``(n, d)``; no NumPyro import.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_dilation.core.multimodal import mixture_fit
from numpyro_dilation.core.multimodal.mixture_fit import (
    GaussianMixture,
    map_particles,
    pick_row,
)

__all__ = [
    "Modes",
    "empty",
    "kmeans",
    "fit_marginals",
    "climb",
    "merge_by_barrier",
    "find_modes",
    "fit_evaluations",
    "proposal",
    "segment_logsumexp",
    "assign",
]

LogDensityFn = Callable[[Array], Array]
LogDensityAndGrad = Callable[[Array], tuple[Array, Array]]

SEGMENT_POINTS = (0.25, 0.5, 0.75)
NEIGHBOURS = 8
CLIMB_STEPS = 30
MARGINAL_COMPONENTS = 8


class Modes(NamedTuple):
    """A fitted mode structure (frozen as the jump proposal after warmup).

    - **mixture**: one diagonal Gaussian per cluster (``K`` components).
    - **mode_of**: ``(K,)`` the mode of each component (the smallest component
      index in its mode; ``-1`` for an empty component).
    - **log_mass**: ``(K,)`` log mass of each mode, indexed by its representative
      component (``-inf`` elsewhere): particle shares, or the importance
      estimates once rebalanced.
    - **ess**: ``(K,)`` effective sample size of the importance draws in each
      mode (0 before rebalancing).
    - **marginals**: one 1-D mixture per coordinate, stacked: weights ``(d, J)``,
      means and scales ``(d, J, 1)``.
    - **peaks**: ``(K, d)`` the peak reached by climbing from each component,
      and **peak_logdensity** ``(K,)`` the log density there.
    """

    mixture: GaussianMixture
    mode_of: Array
    log_mass: Array
    ess: Array
    marginals: GaussianMixture
    peaks: Array
    peak_logdensity: Array

    @property
    def num_modes(self) -> Array:
        return jnp.sum(jnp.isfinite(self.log_mass))


def empty(num_particles: int, dim: int, max_modes: int, dtype=jnp.float32) -> Modes:
    """No mode found yet (the shapes of ``find_modes``'s output)."""
    k = min(max_modes, num_particles)
    j = min(MARGINAL_COMPONENTS, num_particles)
    return Modes(
        GaussianMixture(
            jnp.full(k, -jnp.inf, dtype),
            jnp.zeros((k, dim), dtype),
            jnp.ones((k, dim), dtype),
        ),
        jnp.full(k, -1, int),
        jnp.full(k, -jnp.inf, dtype),
        jnp.zeros(k, dtype),
        GaussianMixture(
            jnp.full((dim, j), -jnp.inf, dtype),
            jnp.zeros((dim, j, 1), dtype),
            jnp.ones((dim, j, 1), dtype),
        ),
        jnp.zeros((k, dim), dtype),
        jnp.full(k, -jnp.inf, dtype),
    )


def _sq_distances(x: Array, centres: Array) -> Array:
    return jnp.sum((x - centres) ** 2, axis=-1)


def kmeans(
    key: Array, x: Array, num_clusters: int, num_iters: int = 20
) -> tuple[Array, Array]:
    """k-means++ seeding then ``num_iters`` Lloyd iterations; returns labels, centres.

    Each seed is drawn with probability ``D(x_i)^2 / sum_j D(x_j)^2``
    (``D`` the distance to the nearest seed so far) by the Gumbel-max trick,
    ``argmax_i (log D(x_i)^2 + G_i)`` with ``G_i`` standard Gumbel, and read by
    ``pick_row``: reductions over the particles, so a population split over
    devices or processes is never gathered. Cost ``O(n K d)`` per iteration,
    memory ``O(n + K d)`` plus one chunk.
    """
    n = x.shape[0]
    k = min(num_clusters, n)

    def nearest(centres):
        return map_particles(
            lambda xi: jnp.argmin(_sq_distances(xi, centres)), x, num_components=k
        )

    def seed(i, carry):
        centres, d2 = carry
        gumbel = jax.random.gumbel(jax.random.fold_in(key, i), (n,), x.dtype)
        centre = pick_row(x, jnp.argmax(jnp.log(d2) + gumbel))
        d2 = jnp.minimum(d2, jnp.sum((x - centre) ** 2, axis=-1))
        return centres.at[i].set(centre), d2

    d2 = jnp.ones(n, x.dtype)  # the first seed: uniform over the particles
    centres = jnp.zeros((k, x.shape[1]), x.dtype)
    centres, _ = jax.lax.fori_loop(0, k, seed, (centres, d2))

    def lloyd(_, centres):
        counts, sums = mixture_fit.label_sums(x, nearest(centres), k)
        return jnp.where(
            counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centres
        )

    centres = jax.lax.fori_loop(0, num_iters, lloyd, centres)
    return nearest(centres), centres


def climb(
    logdensity_and_grad_fn: LogDensityAndGrad,
    x: Array,
    scale: Array,
    num_steps: int = CLIMB_STEPS,
) -> tuple[Array, Array]:
    """Safeguarded gradient ascent from each row of ``x`` (metric ``diag(scale^2)``).

    ``x' = x + eta scale^2 grad log p(x)`` is kept if ``log p`` rises (then
    ``eta`` doubles), else ``eta`` halves; ``eta`` starts at 1. Returns the
    points reached and their log densities.

    The loop's first pass evaluates the starting point itself (a step of
    length 0 that is always kept): one evaluation of ``log p`` in the compiled
    program, not two.
    """

    def one(x0, s):
        def body(i, carry):
            x, value, grad, eta = carry
            start = i == 0
            new = jnp.where(start, x, x + eta * s**2 * grad)
            new_value, new_grad = logdensity_and_grad_fn(new)
            up = start | ((new_value > value) & jnp.all(jnp.isfinite(new_grad)))
            return (
                jnp.where(up, new, x),
                jnp.where(up, new_value, value),
                jnp.where(up, new_grad, grad),
                jnp.where(start, eta, jnp.where(up, 2 * eta, eta / 2)),
            )

        value_shape, grad_shape = jax.eval_shape(logdensity_and_grad_fn, x0)
        carry = (
            x0,
            jnp.zeros(value_shape.shape, value_shape.dtype),
            jnp.zeros(grad_shape.shape, grad_shape.dtype),
            jnp.ones((), x0.dtype),
        )
        x, value, _, _ = jax.lax.fori_loop(0, num_steps + 1, body, carry)
        return x, value

    return map_particles(one, x, scale)


def merge_by_barrier(
    anchors: Array,
    anchor_logdensity: Array,
    valid: Array,
    logdensity_fn: LogDensityFn,
    tolerance: float = 0.1,
    neighbours: int = NEIGHBOURS,
    scale: Array | None = None,
) -> Array:
    """Connected components of "no barrier deeper than ``tolerance`` between anchors".

    Each anchor is tested against its ``neighbours`` nearest anchors (distances
    in coordinates divided by ``scale``) and against the highest one: nearest
    neighbours alone can leave a unimodal target in pieces (a tight bunch of
    more than ``neighbours`` peaks that only test each other), while every
    segment to the highest peak of a log-concave target passes. Returns
    ``(K,)``: the smallest component index of each one's mode, ``-1`` for
    invalid (empty) components.
    """
    k = anchors.shape[0]
    m = min(neighbours, k - 1)
    if m < 1:
        return jnp.where(valid, jnp.arange(k), -1)
    scaled = anchors if scale is None else anchors / scale
    dist = jnp.sum((scaled[:, None, :] - scaled[None, :, :]) ** 2, axis=-1)
    dist = jnp.where(valid[:, None] & valid[None, :], dist, jnp.inf)
    dist = jnp.where(jnp.eye(k, dtype=bool), jnp.inf, dist)
    highest = jnp.argmax(jnp.where(valid, anchor_logdensity, -jnp.inf))
    nearest = jax.lax.top_k(-dist, m)[1]
    cols = jnp.concatenate([nearest, jnp.full((k, 1), highest, nearest.dtype)], 1)
    m = cols.shape[1]  # the nearest peaks and the highest
    rows = jnp.repeat(jnp.arange(k), m)
    cols = cols.reshape(-1)
    s = jnp.asarray(SEGMENT_POINTS, anchors.dtype)
    a, b = anchors[rows], anchors[cols]
    points = a[:, None, :] + s[:, None] * (b - a)[:, None, :]
    flat = points.reshape(-1, anchors.shape[1])
    values = map_particles(logdensity_fn, flat).reshape(k * m, len(SEGMENT_POINTS))
    values = jnp.where(jnp.isnan(values), -jnp.inf, values)
    floor = jnp.minimum(anchor_logdensity[rows], anchor_logdensity[cols]) - tolerance
    joined = (jnp.min(values, axis=1) >= floor) & valid[rows] & valid[cols]
    # adjacent[r, c]: some tested pair (r, c) joined (row r's m pairs).
    tested = cols.reshape(k, m, 1) == jnp.arange(k)
    adjacent = jnp.any(tested & joined.reshape(k, m, 1), axis=1)
    adjacent = adjacent | adjacent.T | jnp.diag(valid)

    def spread(_, labels):
        return jnp.min(jnp.where(adjacent, labels[None, :], k), axis=1)

    labels = jax.lax.fori_loop(0, k, spread, jnp.where(valid, jnp.arange(k), k))
    return jnp.where(valid, labels, -1)


def fit_marginals(
    x: Array, num_components: int = MARGINAL_COMPONENTS
) -> GaussianMixture:
    """A 1-D mixture per coordinate of ``x``: one Gaussian per histogram bin.

    Coordinate ``j``'s values are cut into ``J`` bins of equal width over
    ``mean +- 3 sd`` (values beyond go to the end bins), each fitted by
    ``mixture_fit.fit``: a histogram with Gaussian bins.
    """
    k = min(num_components, x.shape[0])

    def one(column):
        low, width = jnp.mean(column) - 3 * jnp.std(column), 6 * jnp.std(column) / k
        bins = jnp.floor((column - low) / jnp.where(width > 0, width, 1.0))
        labels = jnp.clip(bins, 0, k - 1).astype(int)
        return mixture_fit.fit(column[:, None], labels, k)

    return jax.vmap(one)(x.T)


def _mode_log_mass(log_component_mass: Array, mode_of: Array) -> Array:
    """Log of the summed mass of each mode, at its representative index."""
    k = mode_of.shape[0]
    _, mass = mixture_fit.label_sums(jnp.exp(log_component_mass)[:, None], mode_of, k)
    return jnp.log(mass[:, 0])


def find_modes(
    key: Array,
    x: Array,
    logdensity: Array,
    logdensity_and_grad_fn: LogDensityAndGrad,
    max_modes: int,
    inflation: float = 1.1,
    tolerance: float = 0.1,
    marginals: bool = True,
) -> tuple[Modes, Array]:
    """Cluster ``x`` (log densities ``logdensity``), fit, climb, merge; modes and
    the cluster label of each particle.

    ``marginals`` (static): ``False`` leaves ``Modes.marginals`` as ``empty``'s,
    for a caller that fits them (``fit_marginals(x)``, the same values) only
    where several modes were found: one mode makes no jump, which is all they
    serve.
    """
    k = min(max_modes, x.shape[0])

    def cluster(scale, key):
        labels, _ = kmeans(key, x / scale, max_modes)
        fitted = mixture_fit.fit(x, labels, k)
        within = jnp.sqrt(jnp.exp(fitted.log_weights) @ fitted.scales**2)
        return jnp.where(within > 0, within, scale), labels

    scale = jnp.std(x, axis=0)
    scale = jnp.where(scale > 0, scale, 1.0)
    scale, labels = jax.lax.scan(cluster, scale, jax.random.split(key))
    labels = labels[-1]
    mixture = mixture_fit.fit(x, labels, k, inflation)
    best = mixture_fit.label_max(logdensity, labels, k)
    is_best = logdensity == best[labels]
    anchor_index = mixture_fit.label_max(
        jnp.where(is_best, jnp.arange(x.shape[0]), -1), labels, k
    )
    valid = jnp.isfinite(mixture.log_weights)
    anchor_index = jnp.where(valid, anchor_index, 0)
    peaks, peak_logdensity = climb(
        logdensity_and_grad_fn, x[anchor_index], mixture.scales
    )
    mode_of = merge_by_barrier(
        peaks,
        peak_logdensity,
        valid,
        lambda xi: logdensity_and_grad_fn(xi)[0],
        tolerance,
        scale=scale,
    )
    log_mass = _mode_log_mass(mixture.log_weights, mode_of)
    if marginals:
        fitted = fit_marginals(x)
    else:
        fitted = empty(*x.shape, max_modes, x.dtype).marginals
    ess = jnp.zeros(k, x.dtype)
    peak_logdensity = jnp.where(valid, peak_logdensity, -jnp.inf)
    found = Modes(mixture, mode_of, log_mass, ess, fitted, peaks, peak_logdensity)
    return found, labels


def fit_evaluations(num_particles: int, max_modes: int) -> int:
    """Log-density evaluations of one ``find_modes``: ``K (1 + CLIMB_STEPS)``
    with their gradients (the climbs) and ``K m`` times ``len(SEGMENT_POINTS)``
    on the barrier segments, ``K = min(max_modes, n)``, ``m = min(NEIGHBOURS,
    K - 1) + 1`` (the nearest peaks and the highest; none for ``K = 1``)."""
    k = min(max_modes, num_particles)
    m = min(NEIGHBOURS, k - 1) + 1 if k > 1 else 0
    return k * (1 + CLIMB_STEPS) + k * m * len(SEGMENT_POINTS)


def proposal(modes: Modes, defensive: float = 0.5) -> GaussianMixture:
    """Importance and jump proposal: ``2K`` diagonal Gaussians.

    The ``K`` components, re-weighted to the mode masses and mixed with equal
    mode masses,

        a_k = ((1 - delta) m_M(k) + delta / #modes) * n_k / n_M(k),

    where ``M(k)`` is the mode of component ``k``, ``m`` the normalised
    ``exp(log_mass)`` and ``n_k / n_M(k)`` the component's share within its
    mode (the ``delta`` part, a defensive mixture after Hesterberg 1995, keeps
    every mode proposed often however wrong its current mass); half of each
    mode's weight goes to its components, half to one Gaussian with the mode's
    mean and variance (moment-matched to its components). The single Gaussian
    fits a smooth mode far better in high dimension than the pieces k-means
    cut it into; the pieces fit an irregular mode better; the mixture of both
    keeps the weights ``p/q`` within twice those of the better one.
    """
    k = modes.mode_of.shape[0]
    segment = jnp.where(modes.mode_of >= 0, modes.mode_of, k)
    mix = modes.mixture
    weights = jnp.exp(mix.log_weights)
    _, total = mixture_fit.label_sums(weights, segment, k + 1)
    within = weights / jnp.maximum(total[segment], jnp.finfo(weights.dtype).tiny)
    mass = jnp.exp(modes.log_mass - jax.scipy.special.logsumexp(modes.log_mass))
    mode_mass = (1 - defensive) * mass + defensive / modes.num_modes
    a = jnp.where(segment < k, jnp.append(mode_mass, 0.0)[segment] * within, 0.0)
    _, mean = mixture_fit.label_sums(within[:, None] * mix.means, segment, k + 1)
    spread = mix.scales**2 + (mix.means - mean[segment]) ** 2
    _, var = mixture_fit.label_sums(within[:, None] * spread, segment, k + 1)
    var = var[:k]
    scale = jnp.sqrt(jnp.maximum(var, jnp.finfo(var.dtype).tiny))
    mean = mean[:k]
    is_mode = jnp.isfinite(modes.log_mass)
    return GaussianMixture(
        log_weights=jnp.log(
            0.5 * jnp.concatenate([a, jnp.where(is_mode, mode_mass, 0.0)])
        ),
        means=jnp.concatenate([mix.means, mean]),
        scales=jnp.concatenate([mix.scales, jnp.where(is_mode[:, None], scale, 1.0)]),
    )


def segment_logsumexp(values: Array, segment: Array, num: int) -> Array:
    """``log sum_{i: segment_i = s} exp(values_i)`` for each ``s < num``."""
    top = mixture_fit.label_max(values, segment, num)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    _, total = mixture_fit.label_sums(jnp.exp(values - top[segment]), segment, num)
    return jnp.log(total) + top


def assign(modes: Modes, x: Array) -> Array:
    """The mode of each particle: the most probable under the fitted mixture,

        argmax_m sum_{k in m} a_k N(x; mu_k, s_k^2)

    (the Bayes classifier of the mixture, with each mode's pieces summed).
    """
    mixture = modes.mixture
    k = modes.mode_of.shape[0]
    segment = jnp.where(modes.mode_of >= 0, modes.mode_of, k)

    def one(xi):
        log_joint = mixture.log_weights + mixture_fit.component_logpdf(mixture, xi)
        return jnp.argmax(segment_logsumexp(log_joint, segment, k + 1)[:k])

    return map_particles(one, x, num_components=k)
