"""The dilation path of Chehab & Korba, "A Practical Diffusion Path for Sampling"
(arXiv 2406.14040).

For a target density p on R^d and a centre c, the path is the law of
``X_l = c + sqrt(l) (X - c)`` with ``X ~ p`` and ``l`` in (0, 1]:

    log p_l(y)      = -d/2 log l + log p(c + (y - c) / sqrt(l))
    grad log p_l(y) = l^(-1/2) (grad log p)(c + (y - c) / sqrt(l))

``l -> 0`` is the Dirac at ``c``, ``l = 1`` is the target. Both functions are in
closed form: no Monte Carlo estimate of the score is needed.

All functions act on one flat position of shape ``(d,)``; ``vmap`` them for a
population (one centre per particle or a shared one).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["to_path", "to_target", "logdensity", "score", "logdensity_and_score"]


def to_target(y: Array, center: Array, lam: Array) -> Array:
    """Map a path position to target space: ``x = c + (y - c) / sqrt(l)``."""
    return center + (y - center) / jnp.sqrt(lam)


def to_path(x: Array, center: Array, lam: Array) -> Array:
    """Map a target-space position onto the path: ``y = c + sqrt(l) (x - c)``."""
    return center + jnp.sqrt(lam) * (x - center)


def logdensity(
    logdensity_fn: Callable[[Array], Array], y: Array, center: Array, lam: Array
) -> Array:
    """``log p_l(y) = -d/2 log l + log p(c + (y - c) / sqrt(l))``."""
    d = jnp.shape(y)[-1]
    return -0.5 * d * jnp.log(lam) + logdensity_fn(to_target(y, center, lam))


def score(
    logdensity_fn: Callable[[Array], Array], y: Array, center: Array, lam: Array
) -> Array:
    """``grad log p_l(y) = l^(-1/2) (grad log p)(c + (y - c) / sqrt(l))``."""
    return jax.grad(logdensity_fn)(to_target(y, center, lam)) / jnp.sqrt(lam)


def logdensity_and_score(
    logdensity_and_grad_fn: Callable[[Array], tuple[Array, Array]],
    y: Array,
    center: Array,
    lam: Array,
) -> tuple[Array, Array]:
    """Both of the above from one call of ``x -> (log p(x), grad log p(x))``.

    Only one gradient of the target is evaluated, at ``x = c + (y - c)/sqrt(l)``.
    """
    d = jnp.shape(y)[-1]
    value, grad = logdensity_and_grad_fn(to_target(y, center, lam))
    return value - 0.5 * d * jnp.log(lam), grad / jnp.sqrt(lam)
