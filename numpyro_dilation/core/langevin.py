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

from numpyro_dilation.core.preconditioner import Preconditioner

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "init",
    "propose",
    "log_proposal_density",
    "log_acceptance_ratio",
    "step",
    "step_from_noise",
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
    """The state at ``position``: ``log p`` and ``grad log p`` there (one gradient)."""
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
    """``r = log p(x') + log q(x | x') - log p(x) - log q(x' | x)``.

    The Gaussian constants of ``q`` cancel; with ``f = x' - x - h M grad log p(x)``
    and ``b = x - x' - h M grad log p(x')``,
    ``r = log p(x') - log p(x) + (|L^-1 f|^2 - |L^-1 b|^2) / (4h)``.
    """
    forward = (
        proposal.position
        - state.position
        - step_size * precond.apply(state.logdensity_grad)
    )
    return _log_ratio(state, proposal, forward, step_size, precond)


def _log_ratio(state, proposal, forward, step_size, precond) -> Array:
    """``r`` of :func:`log_acceptance_ratio` given the forward offset ``f``."""
    backward = (
        state.position
        - proposal.position
        - step_size * precond.apply(proposal.logdensity_grad)
    )
    squared = jnp.sum(precond.whiten(forward) ** 2) - jnp.sum(
        precond.whiten(backward) ** 2
    )
    return proposal.logdensity - state.logdensity + squared / (4 * step_size)


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
    z = jax.random.normal(key_prop, state.position.shape, state.position.dtype)
    log_uniform = jnp.log(jax.random.uniform(key_acc))
    return step_from_noise(
        z, log_uniform, state, logdensity_and_grad_fn, step_size, precond, adjusted
    )


def step_from_noise(
    z: Array,
    log_uniform: Array,
    state: LangevinState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    step_size: Array,
    precond: Preconditioner,
    adjusted: bool | Array = True,
) -> tuple[LangevinState, LangevinInfo]:
    """:func:`step` with its randomness given: ``z ~ N(0, I)`` drives the proposal
    and ``log_uniform = log U``, ``U ~ U(0, 1)``, the accept test.

    A population draws both for all its particles in one call each, which is
    cheaper than one key per particle when the target is cheap. The forward
    offset ``f`` of the acceptance ratio is the scaled noise ``sqrt(2h) L z``
    itself (computing it once keeps the step as fast as a hand-written one).
    """
    step_size = jnp.asarray(step_size, state.position.dtype)
    noise = jnp.sqrt(2 * step_size) * precond.scale_noise(z)
    drift = step_size * precond.apply(state.logdensity_grad)
    proposal = init(state.position + drift + noise, logdensity_and_grad_fn)
    log_ratio = _log_ratio(state, proposal, noise, step_size, precond)
    return metropolis(log_uniform, state, proposal, log_ratio, adjusted)


def metropolis(
    log_uniform: Array,
    state: LangevinState,
    proposal: LangevinState,
    log_ratio: Array,
    adjusted: bool | Array = True,
) -> tuple[LangevinState, LangevinInfo]:
    """Accept ``proposal`` if ``log_uniform < log_ratio`` (probability
    ``min(1, exp(log_ratio))`` for ``log_uniform = log U``, ``U ~ U(0, 1)``).

    A proposal with a non-finite log density or gradient is rejected and flagged
    divergent. ``adjusted=False`` accepts every finite proposal (ULA);
    ``adjusted`` may be traced.
    """
    finite = jnp.isfinite(proposal.logdensity) & jnp.all(
        jnp.isfinite(proposal.logdensity_grad)
    )
    log_ratio = jnp.where(finite & ~jnp.isnan(log_ratio), log_ratio, -jnp.inf)
    acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    is_accepted = jnp.where(adjusted, log_uniform < log_ratio, finite)
    new_state = jax.tree.map(
        lambda new, old: jnp.where(is_accepted, new, old), proposal, state
    )
    return new_state, LangevinInfo(acceptance_rate, is_accepted, ~finite)
