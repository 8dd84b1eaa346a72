"""One Langevin step on a log density: unadjusted (ULA) or Metropolis-adjusted (MALA).

With preconditioner ``M = L L^T`` and step size ``h`` the proposal is

    x' = x + h M grad log p(x) + sqrt(2h) L z,        z ~ N(0, I),

i.e. ``q(x' | x) = N(x'; x + h M grad log p(x), 2h M)``. ULA always moves to
``x'`` (Roberts & Tweedie 1996; the step Chehab & Korba run along the dilation
path). MALA accepts with probability ``min(1, exp(r))``,

    r = log p(x') + log q(x | x') - log p(x) - log q(x' | x),

which leaves ``p`` exactly invariant. A proposal whose log density or gradient
is not finite is rejected and flagged divergent, for both steps.

Functions act on one particle; ``vmap`` them over a population.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_dilation.preconditioner import Preconditioner

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "init",
    "propose",
    "log_proposal_density",
    "log_acceptance_ratio",
    "step",
    "metropolis",
]

LogDensityAndGrad = Callable[[Array], tuple[Array, Array]]


class LangevinState(NamedTuple):
    """Position with its log density and the gradient of the log density there."""

    position: Array
    logdensity: Array
    logdensity_grad: Array


class LangevinInfo(NamedTuple):
    """``acceptance_rate`` is ``min(1, exp(r))`` (0 for a non-finite proposal)."""

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array


def init(position: Array, logdensity_and_grad_fn: LogDensityAndGrad) -> LangevinState:
    value, grad = logdensity_and_grad_fn(position)
    return LangevinState(position, value, grad)


def propose(
    key: Array, state: LangevinState, step_size: Array, precond: Preconditioner
) -> Array:
    """``x' = x + h M g + sqrt(2h) L z``."""
    z = jax.random.normal(key, state.position.shape, state.position.dtype)
    drift = step_size * precond.apply(state.logdensity_grad)
    return state.position + drift + jnp.sqrt(2 * step_size) * precond.scale_noise(z)


def log_proposal_density(
    x_to: Array,
    x_from: Array,
    grad_from: Array,
    step_size: Array,
    precond: Preconditioner,
) -> Array:
    """``log N(x_to; x_from + h M grad_from, 2h M)``, including its constant."""
    d = x_to.shape[-1]
    v = precond.whiten(x_to - x_from - step_size * precond.apply(grad_from))
    return (
        -0.25 * jnp.sum(v**2) / step_size
        - 0.5 * d * jnp.log(4 * jnp.pi * step_size)
        - precond.log_det_sqrt()
    )


def log_acceptance_ratio(
    state: LangevinState,
    proposal: LangevinState,
    step_size: Array,
    precond: Preconditioner,
) -> Array:
    """``r = log p(x') + log q(x | x') - log p(x) - log q(x' | x)``."""
    forward = log_proposal_density(
        proposal.position, state.position, state.logdensity_grad, step_size, precond
    )
    backward = log_proposal_density(
        state.position, proposal.position, proposal.logdensity_grad, step_size, precond
    )
    return proposal.logdensity + backward - state.logdensity - forward


def step(
    key: Array,
    state: LangevinState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    step_size: Array,
    precond: Preconditioner,
    adjusted: bool = True,
) -> tuple[LangevinState, LangevinInfo]:
    """One MALA step (``adjusted=True``) or ULA step (``adjusted=False``).

    Costs one gradient. ULA still reports the MALA acceptance probability of
    its move, a free measure of its discretisation error used to adapt ``h``.
    """
    key_prop, key_acc = jax.random.split(key)
    position = propose(key_prop, state, step_size, precond)
    proposal = init(position, logdensity_and_grad_fn)
    log_ratio = log_acceptance_ratio(state, proposal, step_size, precond)
    return metropolis(key_acc, state, proposal, log_ratio, adjusted)


def metropolis(
    key: Array,
    state: LangevinState,
    proposal: LangevinState,
    log_ratio: Array,
    adjusted: bool = True,
) -> tuple[LangevinState, LangevinInfo]:
    """Accept ``proposal`` with probability ``min(1, exp(log_ratio))``.

    A proposal with a non-finite log density or gradient is rejected and flagged
    divergent. ``adjusted=False`` accepts every finite proposal (ULA).
    """
    finite = jnp.isfinite(proposal.logdensity) & jnp.all(
        jnp.isfinite(proposal.logdensity_grad)
    )
    log_ratio = jnp.where(finite & ~jnp.isnan(log_ratio), log_ratio, -jnp.inf)
    acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    if adjusted:
        is_accepted = jnp.log(jax.random.uniform(key)) < log_ratio
    else:
        is_accepted = finite
    new_state = jax.tree.map(
        lambda new, old: jnp.where(is_accepted, new, old), proposal, state
    )
    return new_state, LangevinInfo(acceptance_rate, is_accepted, ~finite)
