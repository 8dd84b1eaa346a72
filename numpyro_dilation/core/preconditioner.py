"""Preconditioner (inverse mass matrix) ``M = L L^T`` for Langevin steps.

``M`` is diagonal (stored as a vector of shape ``(d,)``) or dense (``(d, d)``);
``L`` is its elementwise square root or its lower Cholesky factor. The three
operations a preconditioned Langevin step needs are ``M g``, ``L z`` and
``L^{-1} v`` (to evaluate the Gaussian proposal density); ``L^{-1}`` is
formed once per preconditioner (a triangular solve against the identity), so
that a population's whitening is one matrix product, not a triangular solve
per particle.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import solve_triangular

__all__ = ["Preconditioner", "make_preconditioner", "identity", "dense_by_default"]

DENSE_PARTICLES_PER_DIM = 10
"""A dense preconditioner is the default when there are at least this many
particles per dimension (:func:`dense_by_default`)."""


class Preconditioner(NamedTuple):
    """``inv_mass`` is ``M``; ``sqrt_inv_mass`` is ``L`` with ``M = L L^T``;
    ``whitening`` is ``L^{-1}``."""

    inv_mass: Array
    sqrt_inv_mass: Array
    whitening: Array

    @property
    def is_dense(self) -> bool:
        return self.inv_mass.ndim == 2

    def apply(self, g: Array) -> Array:
        """``M g``."""
        return self.inv_mass @ g if self.is_dense else self.inv_mass * g

    def scale_noise(self, z: Array) -> Array:
        """``L z``: maps standard normal noise to ``N(0, M)``."""
        return self.sqrt_inv_mass @ z if self.is_dense else self.sqrt_inv_mass * z

    def whiten(self, v: Array) -> Array:
        """``L^{-1} v``, so that ``|L^{-1} v|^2 = v^T M^{-1} v``."""
        return self.whitening @ v if self.is_dense else self.whitening * v

    def log_det_sqrt(self) -> Array:
        """``log det L = 1/2 log det M``."""
        diag = jnp.diagonal(self.sqrt_inv_mass) if self.is_dense else self.sqrt_inv_mass
        return jnp.sum(jnp.log(diag))


def make_preconditioner(inv_mass: Array) -> Preconditioner:
    """Build from ``M``: a vector (diagonal) or a symmetric positive-definite matrix."""
    inv_mass = jnp.asarray(inv_mass)
    if inv_mass.ndim == 2:
        sqrt = jnp.linalg.cholesky(inv_mass)
        eye = jnp.eye(inv_mass.shape[0], dtype=inv_mass.dtype)
        return Preconditioner(inv_mass, sqrt, solve_triangular(sqrt, eye, lower=True))
    sqrt = jnp.sqrt(inv_mass)
    return Preconditioner(inv_mass, sqrt, 1 / sqrt)


def identity(dim: int, dense: bool = False, dtype=jnp.float32) -> Preconditioner:
    """``M = I``."""
    eye = jnp.eye(dim, dtype=dtype) if dense else jnp.ones(dim, dtype=dtype)
    return Preconditioner(eye, eye, eye)


def dense_by_default(dim: int, num_particles: int) -> bool:
    """Whether the population supports a dense ``M``: ``n >= 10 d``.

    A covariance estimated from ``n`` draws in ``d`` dimensions has, for a
    Gaussian, eigenvalues spread over ``(1 +- sqrt(d / n))^2`` times the true
    ones (Marchenko-Pastur), so below ``n = 10 d`` the noise of its ``d(d-1)/2``
    off-diagonal terms costs more where the posterior is nearly uncorrelated
    than it gains where it is correlated. Measured with MALA at ``n = 1024``
    (benchmarks/preconditioner.py, docs/benchmarks.md): ESS per gradient of
    dense against diagonal 0.97x, 0.87x, 0.65x, 0.22x on an axis-aligned
    Gaussian at ``d / n`` = 0.01, 0.03, 0.1, 0.2, and 47x, 21x, 8x, 1.9x on the
    same Gaussian rotated.
    """
    return num_particles >= DENSE_PARTICLES_PER_DIM * dim
