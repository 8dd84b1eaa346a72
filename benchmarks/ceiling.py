"""The ceiling: a plain population MALA loop in raw JAX, nothing else.

Every particle makes one preconditioned MALA step per iteration (Roberts &
Tweedie 1996) with a fixed step size ``h`` and inverse mass ``M = L L^T``
(diagonal, a vector, or dense):

    x' = x + h M grad log p(x) + sqrt(2 h) L z,       z ~ N(0, I)
    log q(a | b) = -|L^-1 (a - b - h M grad log p(b))|^2 / (4 h) + const
    accept if log U < log p(x') + log q(x | x') - log p(x) - log q(x' | x)

No NumPyro, no dilation path, no adaptation, no statistics but the draws: what
the hardware does with one gradient per particle per iteration. The benchmark
starts it from DilationKernel's tuned state (positions, ``h``, ``m``), so its
draws have the same law and any difference in time is the product's overhead.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

__all__ = ["mala"]


def _metric(inv_mass: Array):
    """``g -> M g``, ``z -> L z`` and ``v -> |L^-1 v|^2`` on rows of a batch."""
    if inv_mass.ndim == 1:
        return (
            lambda g: inv_mass * g,
            lambda z: jnp.sqrt(inv_mass) * z,
            lambda v: jnp.sum(v**2 / inv_mass, -1),
        )
    chol = jnp.linalg.cholesky(inv_mass)
    chol_inv_t = jnp.linalg.inv(chol).T
    return (
        lambda g: g @ inv_mass,
        lambda z: z @ chol.T,
        lambda v: jnp.sum((v @ chol_inv_t) ** 2, -1),
    )


def _mala_step(value_and_grad: Callable, step_size: Array, inv_mass: Array):
    apply, scale, norm2 = _metric(inv_mass)

    def step(carry, key):
        x, logp, grad = carry
        key_noise, key_accept = jax.random.split(key)
        noise = jnp.sqrt(2 * step_size) * scale(
            jax.random.normal(key_noise, x.shape, x.dtype)
        )
        proposal = x + step_size * apply(grad) + noise
        logp_new, grad_new = value_and_grad(proposal)
        back = x - proposal - step_size * apply(grad_new)
        log_ratio = logp_new - logp + (norm2(noise) - norm2(back)) / (4 * step_size)
        log_u = jnp.log(jax.random.uniform(key_accept, logp.shape, x.dtype))
        accept = log_u < log_ratio
        carry = (
            jnp.where(accept[:, None], proposal, x),
            jnp.where(accept, logp_new, logp),
            jnp.where(accept[:, None], grad_new, grad),
        )
        return carry, carry[0]

    return step


def mala(
    logdensity_fn: Callable[[Array], Array],
    key: Array,
    x: Array,
    step_size: Array,
    inv_mass: Array,
    num_steps: int,
    collect: bool,
) -> Array:
    """``num_steps`` MALA iterations of the population ``x`` (n, d). Returns the
    draws, shape (n, num_steps, d) (chains first, as NumPyro groups them), with
    ``collect``; else the final population, collecting nothing."""
    value_and_grad = jax.vmap(jax.value_and_grad(logdensity_fn))
    step = _mala_step(value_and_grad, step_size, inv_mass)
    carry = (x, *value_and_grad(x))
    if collect:
        _, draws = jax.lax.scan(step, carry, jax.random.split(key, num_steps))
        return jnp.swapaxes(draws, 0, 1)

    def body(i, carry):
        return step(carry, jax.random.fold_in(key, i))[0]

    return jax.lax.fori_loop(0, num_steps, body, carry)[0]
