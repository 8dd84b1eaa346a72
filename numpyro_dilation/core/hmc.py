"""One Hamiltonian Monte Carlo trajectory with a preconditioner, Metropolis-adjusted.

With ``M = L L^T`` (the inverse mass matrix) the velocity ``v = M p`` starts
at ``v_0 = L z``, ``z ~ N(0, I)``, and ``n`` leapfrog steps of size ``h`` follow
(Neal 2011, "MCMC using Hamiltonian dynamics", eq. 5.18-5.20, velocity form):

    v <- v + h/2 M grad log p(x);   x <- x + h v;   v <- v + h/2 M grad log p(x)

The endpoint is accepted with probability ``min(1, exp(r))``,

    r = log p(x_n) - log p(x_0) - (|L^{-1} v_n|^2 - |z|^2) / 2,

which leaves ``p`` exactly invariant for any ``h`` and ``n`` chosen
independently of the state (Duane et al. 1987). A population shares ``n``, so
every particle runs the same number of gradients: no per-particle control flow.
The trajectory length ``n h`` is jittered by a quasi-random factor
(``jitter``, a van der Corput sequence) and tuned by ChEES (Hoffman, Radul,
Sountsov, AISTATS 2021; ``adaptation.trajectory_update``).

Functions act on one particle; ``vmap`` them over a population.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_dilation.core.langevin import LangevinState, metropolis
from numpyro_dilation.core.preconditioner import Preconditioner

__all__ = [
    "HMCInfo",
    "step_from_noise",
    "integrate",
    "kinetic_energy",
    "log_acceptance_ratio",
    "num_integration_steps",
    "jitter",
]

LogDensityAndGrad = Callable[[Array], tuple[Array, Array]]


class HMCInfo(NamedTuple):
    """``acceptance_rate`` is ``min(1, exp(r))`` (0 for a non-finite endpoint);
    ``proposal`` and ``velocity`` are the trajectory's endpoint before the
    accept test (what ChEES needs)."""

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    proposal: Array
    velocity: Array


def step_from_noise(
    z: Array,
    log_uniform: Array,
    state: LangevinState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    step_size: Array,
    num_steps: Array,
    precond: Preconditioner,
) -> tuple[LangevinState, HMCInfo]:
    """``num_steps`` leapfrog steps from ``v_0 = L z``, then the accept test
    ``log_uniform < r``. Costs ``num_steps`` gradients; ``num_steps`` may be
    traced (a shared scalar under ``vmap``)."""
    velocity = precond.scale_noise(z)
    proposal, v = integrate(
        state, velocity, logdensity_and_grad_fn, step_size, num_steps, precond
    )
    # K_0 = |z|^2 / 2 exactly: v_0 = L z needs no solve back.
    kinetic = 0.5 * jnp.sum(z**2)
    log_ratio = log_acceptance_ratio(
        state, proposal, kinetic, kinetic_energy(v, precond)
    )
    new, info = metropolis(log_uniform, state, proposal, log_ratio)
    return new, HMCInfo(*info, proposal.position, v)


def integrate(
    state: LangevinState,
    velocity: Array,
    logdensity_and_grad_fn: LogDensityAndGrad,
    step_size: Array,
    num_steps: Array,
    precond: Preconditioner,
) -> tuple[LangevinState, Array]:
    """The endpoint and final velocity of ``num_steps`` leapfrog steps of size
    ``step_size`` from ``(state.position, velocity)`` (``num_steps`` gradients).
    Started from the endpoint with the velocity reversed, it returns to the
    start with the velocity reversed (up to rounding)."""
    step_size = jnp.asarray(step_size, state.position.dtype)
    half = 0.5 * step_size

    def leapfrog(_, carry):
        x, v, _, grad = carry
        v = v + half * precond.apply(grad)
        x = x + step_size * v
        value, grad = logdensity_and_grad_fn(x)
        return x, v + half * precond.apply(grad), value, grad

    start = (state.position, velocity, state.logdensity, state.logdensity_grad)
    x, v, value, grad = jax.lax.fori_loop(0, num_steps, leapfrog, start)
    return LangevinState(x, value, grad), v


def kinetic_energy(velocity: Array, precond: Preconditioner) -> Array:
    """``|L^{-1} v|^2 / 2``, the kinetic energy of velocity ``v = M p``."""
    return 0.5 * jnp.sum(precond.whiten(velocity) ** 2)


def log_acceptance_ratio(
    state: LangevinState,
    proposal: LangevinState,
    kinetic: Array,
    proposal_kinetic: Array,
) -> Array:
    """``r = log p(x_n) - log p(x_0) - (K_n - K_0)``, ``K`` the kinetic energies
    (:func:`kinetic_energy`) at the start and the end of the trajectory."""
    return proposal.logdensity - state.logdensity - (proposal_kinetic - kinetic)


def jitter(iteration: Array) -> Array:
    """The base-2 van der Corput number of ``iteration + 1`` in (0, 1): the
    bits of the index mirrored about the binary point (Halton's first
    coordinate), evenly spread at every prefix, as ChEES's jitter."""
    index = jnp.asarray(iteration, jnp.uint32) + 1
    bits = jnp.arange(32, dtype=jnp.uint32)
    digits = (index >> bits) & 1
    return jnp.sum(digits * 0.5 ** (bits + 1.0))


def num_integration_steps(
    trajectory_length: Array, step_size: Array, jitter: Array, max_steps: int
) -> Array:
    """``n = ceil(u T / h)``, clipped to ``[1, max_steps]``."""
    n = jnp.ceil(jitter * trajectory_length / step_size)
    return jnp.clip(jnp.nan_to_num(n, nan=1.0), 1, max_steps).astype(jnp.int32)
