"""An exact step size chosen per particle from the local geometry (AutoStep).

AutoStep (Liu, Biron-Lattes, Surjanovic, Bouchard-Cote, Campbell, ICML 2025,
arXiv 2410.18929), which generalises autoMALA (Biron-Lattes, Surjanovic, Syed,
Campbell, Bouchard-Cote, AISTATS 2024, arXiv 2310.16782) to involutive moves.
Let ``r(theta)`` be the log acceptance ratio of ``n`` leapfrog steps of size
``theta`` from ``(x, v)`` (``core.hmc``; ``n = 1`` is MALA with ``h = theta^2 /
2``) and ``c(theta) = -|r(theta)|`` its symmetric criterion (the reversed move
has ``r -> -r``). Each move draws an acceptance band ``a < b`` independent of
the state, and selects ``theta = theta_0 2^j``:

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
``c`` being symmetric, so that rounding cannot tell them apart, and when
``j = 0`` that try is not made at all.

Any band distribution independent of the state keeps ``p`` invariant. AutoStep
draws ``(a, b)`` as the sorted pair of two uniforms, so that a particle whose
step is right (``exp(c) = 1/2``) still searches with probability 1/2. Here

    a = w u_1,   b = 1 - w u_2,   u_1, u_2 ~ U(0, 1),   w = BAND_WIDTH = 0.1:

a particle searches only when its move would be rejected with probability
above ``1 - w u_1`` (halving) or is nearly exact, ``|r| < -log(1 - w u_2)``
(doubling). Where one step suffices few particles search, and in a funnel's
neck the halvings still run until the move is accepted with probability at
least ``a``. Measured (benchmarks/local_step.py, docs/benchmarks.md): with
the batched rounds below, against sorted uniforms searched in lockstep, the
same answers on the funnel and centred eight schools with HMC moves at 1.8x
and 2.7x fewer gradients; the band alone took local MALA from 1.97e6 to
1.08e6 gradients on eight schools.

A population's searches have different lengths. Run in lockstep (a ``vmap``
of one particle's ``while_loop``) every particle would pay for the longest.
Here a round advances unfinished searches by one try: all particles at once
while more than half of them are unfinished (a round then costs at most
twice its useful tries), else up to ``batch_size`` unfinished ones, gathered
into a batch of that static size (``jnp.nonzero``) and scattered back. Which
particles share a round does not change any particle's tries, so the draws
are those of the lockstep run; the population pays the sum of the rounds'
sizes instead of ``num_particles x`` the longest search.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_dilation.core import hmc
from numpyro_dilation.core.langevin import LangevinState, metropolis
from numpyro_dilation.core.preconditioner import Preconditioner

__all__ = [
    "AutoStepInfo",
    "Selection",
    "BAND_WIDTH",
    "log_band",
    "select",
    "step_from_noise",
]

BAND_WIDTH = 0.1

# ``logdensity_and_grad_fn(x, aux)`` with ``aux`` one particle's slice of a
# pytree of per-particle arguments (``None`` when there are none).
LogDensityAndGrad = Callable[[Array, Any], tuple[Array, Array]]


class Selection(NamedTuple):
    """Per particle: the selected exponent ``j``, its trajectory's endpoint,
    final velocity and log acceptance ratio, and the tries (trajectories) its
    search took; ``num_evaluations`` the tries the population paid for."""

    exponent: Array
    proposal: LangevinState
    velocity: Array
    log_ratio: Array
    num_tries: Array
    num_evaluations: Array


class AutoStepInfo(NamedTuple):
    """``acceptance_rate`` is ``min(1, exp(r)) 1{j' = j}``; ``proposal`` and
    ``velocity`` the endpoint before the accept test; ``exponent`` the selected
    ``j`` (step ``theta_0 2^j``); ``num_gradients`` this particle's gradients;
    ``population_gradients`` (a scalar) the gradients the population
    computed, per particle."""

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    proposal: Array
    velocity: Array
    exponent: Array
    num_gradients: Array
    population_gradients: Array


class _Search(NamedTuple):
    """One particle's search: the exponent kept so far, the direction (+1
    doubling, -1 halving) set by the try at ``j = 0``, the kept try's
    endpoint, and whether the try at 0 was made (or is known) and the search
    is over."""

    exponent: Array
    direction: Array
    best: tuple[LangevinState, Array, Array]
    num_tries: Array
    started: Array
    done: Array


class _Inputs(NamedTuple):
    """One particle's fixed inputs to its search (``kinetic``: the kinetic
    energy of ``velocity``)."""

    state: LangevinState
    velocity: Array
    kinetic: Array
    log_band: Array
    aux: Any
    known_exponent: Array
    known_criterion: Array


def log_band(uniforms: Array) -> Array:
    """``(log a, log b) = (log(w u_1), log(1 - w u_2))`` from ``uniforms = (u_1,
    u_2)`` on (0, 1) (last axis), ``w = BAND_WIDTH``."""
    u_1, u_2 = uniforms[..., 0], uniforms[..., 1]
    return jnp.stack([jnp.log(BAND_WIDTH * u_1), jnp.log1p(-BAND_WIDTH * u_2)], -1)


def _criterion(log_ratio: Array) -> Array:
    """``-|r|``, with a non-finite ``r`` (a diverging trajectory) at ``-inf``."""
    return jnp.where(jnp.isfinite(log_ratio), -jnp.abs(log_ratio), -jnp.inf)


def _direction(criterion: Array, log_band: Array) -> Array:
    log_a, log_b = log_band
    return jnp.where(criterion >= log_b, 1, jnp.where(criterion < log_a, -1, 0))


def _start(inputs: _Inputs) -> _Search:
    """Before any try; the try at 0 is already known when the known exponent
    is 0 (a reversed search whose forward search kept ``j = 0``)."""
    known = inputs.known_exponent == 0
    direction = jnp.where(
        known, _direction(inputs.known_criterion, inputs.log_band), 0
    ).astype(jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    placeholder = (
        inputs.state,
        inputs.velocity,
        jnp.zeros_like(inputs.known_criterion),
    )
    return _Search(zero, direction, placeholder, zero, known, known & (direction == 0))


def _advance(search: _Search, inputs: _Inputs, trial, max_doublings: int) -> _Search:
    """One try: at ``j = 0`` first, then one further step in the direction."""
    log_a, log_b = inputs.log_band
    candidate = jnp.where(search.started, search.exponent + search.direction, 0)
    result, criterion = trial(candidate, inputs)
    grow = search.direction > 0
    keep = ~search.started | jnp.where(grow, criterion >= log_b, True)
    stop = jnp.where(grow, ~keep, criterion >= log_a) | (
        jnp.abs(candidate) >= max_doublings
    )
    first = _direction(criterion, inputs.log_band).astype(jnp.int32)
    return _Search(
        jnp.where(keep, candidate, search.exponent),
        jnp.where(search.started, search.direction, first),
        jax.tree.map(lambda new, old: jnp.where(keep, new, old), result, search.best),
        search.num_tries + 1,
        jnp.ones((), bool),
        jnp.where(search.started, stop, first == 0),
    )


def _rounds(searches: _Search, inputs: _Inputs, advance, batch_size: int):
    """Advance every search to its end, a round at a time (module docstring):
    the finished searches and the tries the population paid for."""
    n = searches.done.shape[0]

    def every(searches):
        new = jax.vmap(advance)(searches, inputs)
        pending = ~searches.done
        return jax.tree.map(
            lambda a, b: jnp.where(pending.reshape((n,) + (1,) * (a.ndim - 1)), a, b),
            new,
            searches,
        )

    def some(searches):
        index = jnp.nonzero(~searches.done, size=batch_size, fill_value=n)[0]
        rows = jnp.minimum(index, n - 1)
        gather = lambda tree: jax.tree.map(lambda a: a[rows], tree)  # noqa: E731
        new = jax.vmap(advance)(gather(searches), gather(inputs))
        return jax.tree.map(lambda a, b: a.at[index].set(b, mode="drop"), searches, new)

    def round_(carry):
        searches, paid = carry
        many = 2 * jnp.sum(~searches.done) > n
        searches = jax.lax.cond(many, every, some, searches)
        return searches, paid + jnp.where(many, n, batch_size)

    return jax.lax.while_loop(
        lambda carry: jnp.any(~carry[0].done),
        round_,
        (searches, jnp.zeros((), jnp.int32)),
    )


def select(
    states: LangevinState,
    velocities: Array,
    log_bands: Array,
    logdensity_and_grad_fn: LogDensityAndGrad,
    aux: Any,
    base_step_size: Array,
    num_steps: Array,
    precond: Preconditioner,
    max_doublings: int,
    known: tuple[Array, Array] | None = None,
    batch_size: int | None = None,
) -> Selection:
    """Each particle's exponent ``j`` of the step ``theta_0 2^j`` chosen from
    ``(x, v)`` for its band ``log_bands[i] = (log a, log b)`` (module
    docstring). Arrays have the particle axis first; ``aux`` is a pytree of
    per-particle arguments of ``logdensity_and_grad_fn``.

    ``known = (i, c)``: each particle's criterion at exponent ``i`` is known
    to be ``c`` in exact arithmetic (the reversed selection's try at the
    forward ``j``). ``batch_size`` (static): the largest round run on a batch
    of the unfinished searches, by default a sixteenth of the population.
    """
    n = velocities.shape[0]
    batch_size = max(1, n // 16) if batch_size is None else batch_size
    if known is None:
        far = jnp.full((n,), max_doublings + 1, jnp.int32)
        known = (far, jnp.zeros((n,), velocities.dtype))

    def trial(exponent, inputs):
        state, velocity = inputs.state, inputs.velocity
        fn = lambda x: logdensity_and_grad_fn(x, inputs.aux)  # noqa: E731
        step_size = base_step_size * 2.0 ** exponent.astype(velocity.dtype)
        proposal, v = hmc.integrate(state, velocity, fn, step_size, num_steps, precond)
        log_ratio = hmc.log_acceptance_ratio(
            state,
            proposal,
            inputs.kinetic,
            hmc.kinetic_energy(v, precond),
        )
        criterion = jnp.where(
            exponent == inputs.known_exponent,
            inputs.known_criterion,
            _criterion(log_ratio),
        )
        return (proposal, v, log_ratio), criterion

    kinetic = jax.vmap(lambda v: hmc.kinetic_energy(v, precond))(velocities)
    inputs = _Inputs(states, velocities, kinetic, log_bands, aux, *known)
    searches, paid = _rounds(
        jax.vmap(_start)(inputs),
        inputs,
        lambda search, one: _advance(search, one, trial, max_doublings),
        batch_size,
    )
    return Selection(searches.exponent, *searches.best, searches.num_tries, paid)


def step_from_noise(
    z: Array,
    log_uniform: Array,
    band_uniforms: Array,
    states: LangevinState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    aux: Any,
    base_step_size: Array,
    num_steps: Array,
    precond: Preconditioner,
    max_doublings: int = 8,
    batch_size: int | None = None,
) -> tuple[LangevinState, AutoStepInfo]:
    """One AutoStep move of every particle from ``v = L z``: ``band_uniforms``
    (2 uniforms on (0, 1) per particle) give the bands, ``log_uniform`` the
    accept tests. ``num_steps = 1`` is autoMALA with ``h = theta^2 / 2``."""
    velocities = jax.vmap(precond.scale_noise)(z)
    log_bands = log_band(band_uniforms)
    args = (
        logdensity_and_grad_fn,
        aux,
        base_step_size,
        num_steps,
        precond,
        max_doublings,
    )
    forward = select(states, velocities, log_bands, *args, batch_size=batch_size)
    backward = select(
        forward.proposal,
        -forward.velocity,
        log_bands,
        *args,
        known=(forward.exponent, _criterion(forward.log_ratio)),
        batch_size=batch_size,
    )
    log_ratio = jnp.where(
        backward.exponent == forward.exponent, forward.log_ratio, -jnp.inf
    )
    new, info = jax.vmap(metropolis)(log_uniform, states, forward.proposal, log_ratio)
    n = z.shape[0]
    paid = (forward.num_evaluations + backward.num_evaluations) / n
    return new, AutoStepInfo(
        *info,
        forward.proposal.position,
        forward.velocity,
        forward.exponent,
        num_steps * (forward.num_tries + backward.num_tries),
        num_steps * paid,
    )
