"""An exact step size chosen per particle from the local geometry (AutoStep).

AutoStep (Liu, Biron-Lattes, Surjanovic, Bouchard-Cote, Campbell, ICML 2025,
arXiv 2410.18929), which generalises autoMALA (Biron-Lattes, Surjanovic, Syed,
Campbell, Bouchard-Cote, AISTATS 2024, arXiv 2310.16782) to involutive moves.
Let ``r(theta)`` be the log acceptance ratio of ``n`` leapfrog steps of size
``theta`` from ``(x, v)`` (``core.hmc``; ``n = 1`` is MALA with ``h = theta^2 /
2``) and ``c(theta) = -|r(theta)|`` its symmetric criterion (the reversed move
has ``r -> -r``). Each move draws an acceptance band ``a < b``, the sorted pair
of two uniforms on (0, 1), independent of the state, and selects ``theta =
theta_0 2^j``:

* ``log a <= c(theta_0) < log b``: ``j = 0``;
* ``c(theta_0) >= log b`` (a step more accurate than needed): doubling, ``j``
  the last exponent with ``c >= log b`` before the first without;
* ``c(theta_0) < log a``: halving, ``j`` the first exponent with ``c >= log a``;

with ``|j| <= max_doublings``. The move proposes the trajectory of size
``theta_0 2^j`` and accepts it with probability ``min(1, exp(r)) 1{j' = j}``,
``j'`` the same selection from the endpoint with the velocity reversed. The
selection is a deterministic function of ``(x, v, a, b)`` and the trajectory an
involution for each ``j``, so ``p`` stays exactly invariant (AutoStep, Sec. 3).
Each try costs ``n`` gradients. The reversed selection's try at ``j`` is the
exact reverse of the proposal: its criterion is taken to be the forward one,
``c`` being symmetric, so that rounding cannot tell them apart.

Functions act on one particle; ``vmap`` them over a population (the searches
are ``while_loop``s: a population runs as many tries as its longest search).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_dilation.core import hmc
from numpyro_dilation.core.langevin import LangevinState, metropolis
from numpyro_dilation.core.preconditioner import Preconditioner

__all__ = ["AutoStepInfo", "Selection", "select", "step_from_noise"]

LogDensityAndGrad = Callable[[Array], tuple[Array, Array]]


class Selection(NamedTuple):
    """The selected exponent ``j``, its trajectory's endpoint, final velocity
    and log acceptance ratio, and the tries (trajectories) it took."""

    exponent: Array
    proposal: LangevinState
    velocity: Array
    log_ratio: Array
    num_tries: Array


class AutoStepInfo(NamedTuple):
    """``acceptance_rate`` is ``min(1, exp(r)) 1{j' = j}``; ``proposal`` and
    ``velocity`` the endpoint before the accept test; ``exponent`` the selected
    ``j`` (step ``theta_0 2^j``); ``num_gradients`` this particle's gradients."""

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    proposal: Array
    velocity: Array
    exponent: Array
    num_gradients: Array


def _criterion(log_ratio: Array) -> Array:
    """``-|r|``, with a non-finite ``r`` (a diverging trajectory) at ``-inf``."""
    return jnp.where(jnp.isfinite(log_ratio), -jnp.abs(log_ratio), -jnp.inf)


def select(
    state: LangevinState,
    velocity: Array,
    log_band: Array,
    logdensity_and_grad_fn: LogDensityAndGrad,
    base_step_size: Array,
    num_steps: Array,
    precond: Preconditioner,
    max_doublings: int,
    known: tuple[Array, Array] | None = None,
) -> Selection:
    """The exponent ``j`` of the step ``theta_0 2^j`` chosen from ``(x, v)`` for
    the band ``log_band = (log a, log b)`` (module docstring).

    ``known = (i, c)``: the criterion at exponent ``i`` is known to be ``c``
    in exact arithmetic (the reversed selection's try at the forward ``j``).
    """
    log_a, log_b = log_band
    no_known = (jnp.asarray(max_doublings + 1), jnp.asarray(0.0, velocity.dtype))
    known_exponent, known_criterion = no_known if known is None else known

    kinetic = hmc.kinetic_energy(velocity, precond)

    def trial(exponent):
        step_size = base_step_size * 2.0 ** exponent.astype(velocity.dtype)
        proposal, v = hmc.integrate(
            state, velocity, logdensity_and_grad_fn, step_size, num_steps, precond
        )
        log_ratio = hmc.log_acceptance_ratio(
            state, proposal, kinetic, hmc.kinetic_energy(v, precond)
        )
        criterion = jnp.where(
            exponent == known_exponent, known_criterion, _criterion(log_ratio)
        )
        return (proposal, v, log_ratio), criterion

    first, criterion = trial(jnp.zeros((), jnp.int32))
    direction = jnp.where(
        criterion >= log_b, 1, jnp.where(criterion < log_a, -1, 0)
    ).astype(jnp.int32)

    def search(carry):
        exponent, best, tries, _ = carry
        candidate = exponent + direction
        result, criterion = trial(candidate)
        grow = direction > 0
        keep = jnp.where(grow, criterion >= log_b, True)
        best = jax.tree.map(lambda new, old: jnp.where(keep, new, old), result, best)
        exponent = jnp.where(keep, candidate, exponent)
        done = jnp.where(grow, ~keep, criterion >= log_a)
        done = done | (jnp.abs(candidate) >= max_doublings)
        return exponent, best, tries + 1, done

    exponent, (proposal, v, log_ratio), tries, _ = jax.lax.while_loop(
        lambda carry: ~carry[3],
        search,
        (jnp.zeros((), jnp.int32), first, jnp.ones((), jnp.int32), direction == 0),
    )
    return Selection(exponent, proposal, v, log_ratio, tries)


def step_from_noise(
    z: Array,
    log_uniform: Array,
    band_uniforms: Array,
    state: LangevinState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    base_step_size: Array,
    num_steps: Array,
    precond: Preconditioner,
    max_doublings: int = 8,
) -> tuple[LangevinState, AutoStepInfo]:
    """One AutoStep move from ``v = L z``: ``band_uniforms`` (2 uniforms on (0,
    1)) give the band, ``log_uniform`` the accept test. ``num_steps = 1`` is
    autoMALA with ``h = theta^2 / 2``."""
    velocity = precond.scale_noise(z)
    log_band = jnp.log(jnp.sort(band_uniforms))
    args = (logdensity_and_grad_fn, base_step_size, num_steps, precond, max_doublings)
    forward = select(state, velocity, log_band, *args)
    backward = select(
        forward.proposal,
        -forward.velocity,
        log_band,
        *args,
        known=(forward.exponent, _criterion(forward.log_ratio)),
    )
    log_ratio = jnp.where(
        backward.exponent == forward.exponent, forward.log_ratio, -jnp.inf
    )
    new, info = metropolis(log_uniform, state, forward.proposal, log_ratio)
    gradients = num_steps * (forward.num_tries + backward.num_tries)
    return new, AutoStepInfo(
        *info, forward.proposal.position, forward.velocity, forward.exponent, gradients
    )
