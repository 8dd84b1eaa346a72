"""Preconditioner (inverse mass matrix) ``M = L L^T`` for Langevin steps.

``M`` is diagonal (stored as a vector of shape ``(d,)``) or dense (``(d, d)``);
``L`` is its elementwise square root or its lower Cholesky factor. The three
operations a preconditioned Langevin step needs are ``M g``, ``L z`` and
``L^{-1} v`` (to evaluate the Gaussian proposal density); ``L^{-1}`` is
formed once per preconditioner (a triangular solve against the identity), so
that a population's whitening is one matrix product, not a triangular solve
per particle.

A diagonal ``M = D`` can also whiten ``r`` directions: with ``U`` ``(d, r)``
orthonormal and ``lambda`` ``(r,)`` the variances along them in the
coordinates ``D`` whitens,

    M = D^1/2 (I + U (lambda - 1) U^T) D^1/2,
    L = D^1/2 (I + U (sqrt(lambda) - 1) U^T),
    L^-1 = (I + U (1 / sqrt(lambda) - 1) U^T) D^-1/2,

each a diagonal scaling and a rank-``r`` product: ``O(d r)`` per vector, where
a dense ``M`` costs ``O(d^2)``.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import solve_triangular

__all__ = [
    "LowRank",
    "no_low_rank",
    "Preconditioner",
    "make_preconditioner",
    "identity",
    "dense_by_default",
]

DENSE_PARTICLES_PER_DIM = 10
"""A dense preconditioner is the default when there are at least this many
particles per dimension (:func:`dense_by_default`)."""
DENSE_PARTICLES_PER_DIM_HMC = 5
"""The same, for HMC moves."""


class LowRank(NamedTuple):
    """The directions ``basis`` ``(d, r)`` (orthonormal) that a diagonal ``M``
    also whitens, and the variances ``eigen`` ``(r,)`` along them; ``r = 0``:
    none."""

    basis: Array
    eigen: Array


def no_low_rank(dim: int, dtype=jnp.float32) -> LowRank:
    """``r = 0``: a plain diagonal or dense ``M``."""
    return LowRank(jnp.zeros((dim, 0), dtype), jnp.zeros((0,), dtype))


class Preconditioner(NamedTuple):
    """``inv_mass`` is ``M`` (its diagonal part ``D`` with ``low_rank``);
    ``sqrt_inv_mass`` is ``L`` with ``M = L L^T`` (``D^1/2``); ``whitening`` is
    ``L^{-1}`` (``D^-1/2``)."""

    inv_mass: Array
    sqrt_inv_mass: Array
    whitening: Array
    low_rank: LowRank | None = None

    @property
    def is_dense(self) -> bool:
        return self.inv_mass.ndim == 2

    def _rank_update(self, v: Array, power: float) -> Array:
        """``(I + U (lambda^power - 1) U^T) v``."""
        if self.low_rank is None:
            return v
        basis, eigen = self.low_rank
        return v + basis @ ((eigen**power - 1.0) * (basis.T @ v))

    def apply(self, g: Array) -> Array:
        """``M g``."""
        if self.is_dense:
            return self.inv_mass @ g
        return self.sqrt_inv_mass * self._rank_update(self.sqrt_inv_mass * g, 1.0)

    def scale_noise(self, z: Array) -> Array:
        """``L z``: maps standard normal noise to ``N(0, M)``."""
        if self.is_dense:
            return self.sqrt_inv_mass @ z
        return self.sqrt_inv_mass * self._rank_update(z, 0.5)

    def whiten(self, v: Array) -> Array:
        """``L^{-1} v``, so that ``|L^{-1} v|^2 = v^T M^{-1} v``."""
        if self.is_dense:
            return self.whitening @ v
        return self._rank_update(self.whitening * v, -0.5)

    def log_det_sqrt(self) -> Array:
        """``log det L = 1/2 log det M``."""
        if self.is_dense:
            return jnp.sum(jnp.log(jnp.diagonal(self.sqrt_inv_mass)))
        log_det = jnp.sum(jnp.log(self.sqrt_inv_mass))
        if self.low_rank is None:
            return log_det
        return log_det + 0.5 * jnp.sum(jnp.log(self.low_rank.eigen))


def make_preconditioner(
    inv_mass: Array, low_rank: LowRank | None = None
) -> Preconditioner:
    """Build from ``M``: a vector (diagonal, with the directions ``low_rank``
    whitened too; none when it has no direction) or a symmetric
    positive-definite matrix."""
    inv_mass = jnp.asarray(inv_mass)
    if low_rank is not None and low_rank.eigen.shape[0] == 0:
        low_rank = None
    if inv_mass.ndim == 2:
        sqrt = jnp.linalg.cholesky(inv_mass)
        eye = jnp.eye(inv_mass.shape[0], dtype=inv_mass.dtype)
        return Preconditioner(inv_mass, sqrt, solve_triangular(sqrt, eye, lower=True))
    sqrt = jnp.sqrt(inv_mass)
    return Preconditioner(inv_mass, sqrt, 1 / sqrt, low_rank)


def identity(dim: int, dense: bool = False, dtype=jnp.float32) -> Preconditioner:
    """``M = I``."""
    eye = jnp.eye(dim, dtype=dtype) if dense else jnp.ones(dim, dtype=dtype)
    return Preconditioner(eye, eye, eye)


def dense_by_default(dim: int, num_particles: int, hmc: bool = False) -> bool:
    """Whether the population supports a dense ``M``: ``n >= 10 d``, or
    ``n >= 5 d`` for HMC moves.

    A covariance estimated from ``n`` draws in ``d`` dimensions has, for a
    Gaussian, eigenvalues spread over ``(1 +- sqrt(d / n))^2`` times the true
    ones (Marchenko-Pastur), so below ``n = 10 d`` the noise of its ``d(d-1)/2``
    off-diagonal terms costs more where the posterior is nearly uncorrelated
    than it gains where it is correlated. Measured with MALA at ``n = 1024``
    (benchmarks/preconditioner.py, docs/benchmarks.md): ESS per gradient of
    dense against diagonal 0.97x, 0.87x, 0.65x, 0.22x on an axis-aligned
    Gaussian at ``d / n`` = 0.01, 0.03, 0.1, 0.2, and 47x, 21x, 8x, 1.9x on the
    same Gaussian rotated. With HMC moves the noise costs less (the
    trajectories cross what the estimate leaves unwhitened): 1.24x at
    ``d / n = 0.1`` and 0.82x at 0.2 on the axis-aligned Gaussian, 24.9x at 0.1
    rotated, and on a stochastic-volatility model (``d = 103``) right with a
    dense ``M`` where MALA with a diagonal one was not.
    """
    per_dim = DENSE_PARTICLES_PER_DIM_HMC if hmc else DENSE_PARTICLES_PER_DIM
    return num_particles >= per_dim * dim
