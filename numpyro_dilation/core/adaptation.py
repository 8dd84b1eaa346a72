"""Population-based adaptation of the step size and the preconditioner.

Step size (Robbins-Monro on the log step size, driven by the population's mean
MALA acceptance probability ``a_t`` towards a target ``a*``, 0.574 for MALA;
Roberts & Rosenthal 1998):

    log eps_{t+1} = log eps_t + gain * (a_t - a*)

The value frozen after warmup is the average of ``log eps_t`` over the final
window, which removes most of the noise of a small population.

Preconditioner: the population's variance (diagonal) or covariance (dense),
shrunk as Stan does for its windowed estimate, but relative to each
coordinate's own variance so that it works from 1e-6 to 1e6 in one target:

    M = n/(n+5) S + 5/(n+5) * 1e-3 * diag(S)
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

__all__ = [
    "StepSizeState",
    "step_size_init",
    "step_size_update",
    "final_step_size",
    "population_inv_mass",
]


class StepSizeState(NamedTuple):
    """``log_step_size`` is adapted; ``log_step_size_sum / count`` its window mean."""

    log_step_size: Array
    log_step_size_sum: Array
    count: Array


def step_size_init(step_size: float) -> StepSizeState:
    """``log eps_0 = log step_size``, with an empty final window."""
    return StepSizeState(jnp.log(jnp.asarray(step_size, float)), jnp.zeros(()), 0)


def step_size_update(
    state: StepSizeState,
    mean_acceptance: Array,
    target: float,
    gain: float,
    in_final_window: Array,
) -> StepSizeState:
    """One Robbins-Monro update; accumulates the mean inside the final window."""
    log_eps = state.log_step_size + gain * (mean_acceptance - target)
    return StepSizeState(
        log_eps,
        state.log_step_size_sum + jnp.where(in_final_window, log_eps, 0.0),
        state.count + jnp.where(in_final_window, 1, 0),
    )


def final_step_size(state: StepSizeState) -> Array:
    """The window mean of ``log eps`` (the last value if the window was empty)."""
    mean = state.log_step_size_sum / jnp.maximum(state.count, 1)
    return jnp.exp(jnp.where(state.count > 0, mean, state.log_step_size))


def population_inv_mass(
    positions: Array, dense: bool = False, previous: Array | None = None
) -> Array:
    """Shrunk population (co)variance of ``positions`` of shape ``(n, d)``.

    Each coordinate is shrunk relative to its own variance, so coordinates of
    scale 1e-6 and 1e6 in one target each get their own. A coordinate with no
    spread at all keeps its ``previous`` value (default 1).
    """
    n, d = positions.shape
    centred = positions - jnp.mean(positions, axis=0)
    var = jnp.sum(centred**2, axis=0) / max(n - 1, 1)
    fallback = jnp.ones(d, positions.dtype) if previous is None else previous
    fallback = jnp.diagonal(fallback) if fallback.ndim == 2 else fallback
    spread = var > 0
    if dense:
        cov = centred.T @ centred / max(n - 1, 1)
        shrunk = (n * cov + 5.0 * 1e-3 * jnp.diag(var)) / (n + 5.0)
        return jnp.where(jnp.outer(spread, spread), shrunk, jnp.diag(fallback))
    return jnp.where(spread, (n + 5.0 * 1e-3) * var / (n + 5.0), fallback)
