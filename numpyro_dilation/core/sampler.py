"""The annealed population sampler on flat arrays: phases, one step per iteration.

Iteration ``t`` of a run with ``W`` warmup iterations, ``A <= W`` of them
annealing over the levels ``l_0 < ... < l_{K-1} = 1`` (docs/design.md section 3);
every iteration at which something happens is read from the run's
``calendar.Calendar``, which states them all:

* ``t < A``   anneal: level ``l_t = levels[floor(t K / A)]``; each particle runs
  Langevin steps on the dilated density ``p_l`` around its own centre, step
  ``h = eps * l`` (scale-aware: this is a step ``eps`` on ``p`` in target
  coordinates). The first iteration of a new level only re-evaluates the
  particles under it (one gradient, no move), so every iteration costs exactly
  one gradient per particle.
* ``A <= t < W``  tune at ``l = 1``: the preconditioner is re-estimated from the
  population every iteration; ``eps`` keeps adapting; every
  ``calendar.STRAGGLER_PERIOD`` iterations, particles stuck far out in the
  tails are replaced by copies of others (``stragglers``).
* ``t >= W``  sample: everything frozen; one exact MALA step (or ULA) at ``l = 1``.

With ``options.hmc`` every Langevin move at ``l = 1`` (tuning and sampling) is
an exact HMC trajectory instead (``core.hmc``): ``n = ceil(u_t T / eps)``
leapfrog steps shared by the population, ``u_t`` the quasi-random jitter of
iteration ``t``, ``T`` tuned by ChEES while tuning, floored at ``pi
sqrt(lambda_max)`` of the whitened population, and frozen (its final-window
mean) with ``eps``, which follows the harmonic mean acceptance there
(``core.adaptation``). ``T`` starts at 1: in the coordinates the preconditioner
whitens, the Hamiltonian flow of a Gaussian has period ``2 pi`` whatever its
scales, so 1 is near ChEES's optimum from the start (starting at one step, as
ChEES does, spends most of a short tuning phase growing ``T``).
With ``options.local_step_size`` every move at ``l = 1`` (MALA, or HMC with
``options.hmc``) chooses each particle's step from the shared one by halvings
and doublings, exactly (``core.autostep``); while tuning, the shared step
follows the population's mean selected step there (``LOCAL_STEP_GAIN``), not
the acceptance, which the selection sets, and is frozen with the rest.
``num_steps`` is the last iteration's gradients per particle (with local
steps those the population computed, over the particle count) and
``num_gradients`` their running total over the iterations (mode fits and the
initial evaluation excluded; the iteration count without HMC).

Multimodal targets (docs/multimodal.md), on by default:

* at the calendar's mode-fit iterations (from ``t = A``, every ``p``
  iterations while tuning), the population's
  modes are found (``modes.find_modes``: no gradient); from ``t = A`` on, with
  probability ``jump_prob`` per iteration (one coin for the population,
  independent of the state), every particle makes an exact
  Metropolis-Hastings jump from the mixture fitted to the modes (``jumps.step``)
  instead of a Langevin step, as long as more than one mode was found; when
  the fit at ``t = A`` finds one mode, the calendar drops the later fits and
  the rebalancing (``calendar.single_mode``, applied by ``fit_modes``);
* at ``t = W - 1`` (the last warmup iteration) the modes are found again and
  the population is rebalanced: each mode's mass is estimated by importance
  sampling and particles are resampled between modes
  (``rebalancing.rebalance``; its draws are the iteration's one evaluation per
  particle). The modes, with their corrected masses, are then frozen: the jump
  proposal of the sampling phase.

Each kernel of the sampling phase (MALA, jump) leaves ``p`` invariant and the
choice between them does not depend on the state, so sampling stays exact.

Particles start at their Dirac centres (``y = c``), which is the law ``p_0``.
The state holds its own calendar, so a step needs nothing but the state; the
per-particle arrays are one sub-state (``Particles``), so resampling, straggler
replacement and sharding act on it whole.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from numpyro_dilation.core import (
    adaptation,
    autostep,
    calendar,
    dilation_path,
    draws,
    hmc,
    langevin,
    stragglers,
)
from numpyro_dilation.core.multimodal import jumps, modes, rebalancing
from numpyro_dilation.core.options import DEFAULT_OPTIONS, SamplerOptions
from numpyro_dilation.core.preconditioner import LowRank, make_preconditioner

__all__ = [
    "SamplerOptions",
    "Particles",
    "SamplerState",
    "SamplerInfo",
    "init",
    "step",
    "step_from_keys",
    "ANNEAL",
    "TUNE",
    "sample_step",
    "fit_modes",
    "fit_marginals",
    "fit_iterations",
    "IterationKeys",
    "iteration_keys",
    "unimodal",
    "target_position",
    "target_potential",
    "num_evaluations",
]

LogDensityAndGrad = Callable[[Array], tuple[Array, Array]]

ANNEAL, TUNE = "anneal", "tune"
PHASES = (None, ANNEAL, TUNE)
"""``step_from_keys``'s static ``phase``: an annealing iteration (``t < A``),
a tuning one (``A <= t < W``), or either (``None``)."""

LOCAL_STEP_GAIN = 0.5
"""With local step sizes, ``log h`` moves this share of the way to the
population's mean selected ``log h_i`` at each warmup move at ``l = 1``
(autoMALA sets its base step to the mean selected one after each round)."""


class Particles(NamedTuple):
    """Every per-particle array, particle axis first; ``logdensity`` and its
    gradient are those of ``p_lam`` at ``position`` (path coordinates);
    ``log_step_ratio`` is ``log(h_i / h)`` of the last move with a local step
    (0 with the shared one)."""

    position: Array
    center: Array
    logdensity: Array
    logdensity_grad: Array
    accept_prob: Array
    diverging: Array
    jump_accept_prob: Array
    log_step_ratio: Array


class SamplerState(NamedTuple):
    """Population state: the particles and what they share; ``position_mean``
    is the target-space mean of the population at the last preconditioner
    estimate (the centres' before the first), the shift of the next
    (``adaptation.population_moments``); ``low_rank`` the directions a
    diagonal ``inv_mass`` also whitens (none without ``options.low_rank``)."""

    iteration: Array
    particles: Particles
    lam: Array
    step_size: adaptation.StepSizeState
    inv_mass: Array
    position_mean: Array
    low_rank: LowRank
    calendar: calendar.Calendar
    modes: modes.Modes
    jump_block: jumps.BlockChoice
    trajectory: adaptation.TrajectoryState
    num_steps: Array
    num_gradients: Array


class IterationKeys(NamedTuple):
    """One iteration's independent keys.

    - **noise**: the move's proposal noise and accept uniforms (or the jump's,
      or the rebalancing's draws: one of the three happens).
    - **band**: local step sizes: each particle's acceptance band.
    - **coin**: jump or move.
    - **modes**: the mode fit.
    - **stragglers**: the stragglers' donors.
    """

    noise: Array
    band: Array
    coin: Array
    modes: Array
    stragglers: Array


class SamplerInfo(NamedTuple):
    """What an iteration did: re-evaluated at a new level, jumped, rebalanced
    (none of them: a Langevin move)."""

    is_rescale: Array
    is_jump: Array
    is_rebalance: Array


def _evaluate(logdensity_and_grad_fn: LogDensityAndGrad, y, center, lam):
    return jax.vmap(
        lambda yi, ci: dilation_path.logdensity_and_score(
            logdensity_and_grad_fn, yi, ci, lam
        )
    )(y, center)


def target_potential(state: SamplerState) -> Array:
    """``-log p(x)`` at each particle, from ``log p_l(y) = -d/2 log l + log p(x)``."""
    particles = state.particles
    d = particles.position.shape[-1]
    return -(particles.logdensity + 0.5 * d * jnp.log(state.lam))


def target_position(state: SamplerState) -> Array:
    """``x = c + (y - c) / sqrt(l)`` for each particle."""
    particles = state.particles
    return dilation_path.to_target(particles.position, particles.center, state.lam)


def num_evaluations(
    run_calendar: calendar.Calendar,
    num_particles: int,
    num_iterations: int,
    options: SamplerOptions = DEFAULT_OPTIONS,
    num_gradients: int | None = None,
) -> int:
    """Log-density evaluations (with gradients but for a rebalancing's) of the
    first ``num_iterations`` iterations: ``num_gradients`` per particle (the
    state's count after them; default one per iteration, exact without HMC
    moves), plus those of each mode fit (``modes.fit_evaluations``)."""
    fits = calendar.mode_fit_iterations(run_calendar)
    num_fits = int(jnp.sum(fits < num_iterations))
    per_particle = (
        num_iterations if num_gradients is None else round(float(num_gradients))
    )
    return num_particles * per_particle + num_fits * modes.fit_evaluations(
        num_particles, options.max_modes
    )


def init(
    center: Array,
    logdensity_and_grad_fn: LogDensityAndGrad,
    run_calendar: calendar.Calendar,
    options: SamplerOptions = DEFAULT_OPTIONS,
    step_size: float = 0.1,
    inv_mass: Array | None = None,
) -> SamplerState:
    """All particles at their centres (``y = c``), at the first level, no modes yet.

    :param center: ``(n, d)`` the Dirac centres, one per particle.
    :param run_calendar: ``calendar.build_calendar(num_warmup, options)``.
    :param step_size: the initial ``eps`` (target-space units).
    :param inv_mass: the initial preconditioner (default: the identity, dense
        when ``options.dense_mass``).
    """
    n, d = center.shape
    if inv_mass is None:
        inv_mass = (
            jnp.eye(d, dtype=center.dtype)
            if options.dense_mass
            else jnp.ones(d, center.dtype)
        )
    lam = calendar.level_at(run_calendar, jnp.zeros((), int))
    logdensity, grad = _evaluate(logdensity_and_grad_fn, center, center, lam)
    return SamplerState(
        iteration=jnp.zeros((), int),
        particles=Particles(
            position=center,
            center=center,
            logdensity=logdensity,
            logdensity_grad=grad,
            accept_prob=jnp.ones(n, center.dtype),
            diverging=jnp.zeros(n, bool),
            jump_accept_prob=jnp.zeros(n, center.dtype),
            log_step_ratio=jnp.zeros(n, center.dtype),
        ),
        lam=lam,
        step_size=adaptation.step_size_init(step_size),
        inv_mass=inv_mass,
        position_mean=jnp.mean(center, axis=0),
        low_rank=adaptation.low_rank_init(
            d, 0 if options.dense_mass else options.low_rank, center.dtype
        ),
        calendar=run_calendar,
        modes=modes.empty(n, d, options.max_modes, center.dtype),
        jump_block=jumps.block_choice_init(center.dtype),
        trajectory=adaptation.trajectory_init(1.0, d, center.dtype),
        num_steps=jnp.ones((), jnp.float32),
        num_gradients=jnp.zeros((), jnp.float32),
    )


def _rescaled(before: SamplerState, after: Particles, lam) -> Particles:
    """The particles re-evaluated under the new level ``lam`` (``y`` fixed):
    ``after``, where each finite one took its new values, except that a particle
    whose density is not finite there (flagged divergent) keeps its target-space
    position instead (``y`` re-mapped so that ``x`` is unchanged), with its
    cached values carried over; every particle keeps its acceptance probability."""
    particles = before.particles
    bad = after.diverging
    d = particles.position.shape[-1]
    # log p(x) and grad log p(x) at the unchanged x, from the cached values.
    kept_logdensity = -target_potential(before) - 0.5 * d * jnp.log(lam)
    kept_grad = particles.logdensity_grad * jnp.sqrt(before.lam / lam)
    kept = dilation_path.to_path(target_position(before), particles.center, lam)
    return after._replace(
        position=jnp.where(bad[:, None], kept, after.position),
        logdensity=jnp.where(bad, kept_logdensity, after.logdensity),
        logdensity_grad=jnp.where(bad[:, None], kept_grad, after.logdensity_grad),
        accept_prob=particles.accept_prob,
    )


def _after_metropolis(particles: Particles, new, info, accept_field: str) -> Particles:
    """The particles after a Metropolis-Hastings step (Langevin or jump): the
    new positions and cache, the acceptance probability in ``accept_field``."""
    return particles._replace(
        position=new.position,
        logdensity=new.logdensity,
        logdensity_grad=new.logdensity_grad,
        diverging=info.is_divergent,
        **{accept_field: info.acceptance_rate},
    )


def _move(
    keys: IterationKeys,
    state: SamplerState,
    lam,
    logdensity_and_grad_fn,
    options,
    at_target,
    rescale=None,
):
    """One Langevin step per particle on ``p_lam``, step ``h = eps * lam``; with
    ``at_target`` (static: ``l = 1``) and ``options.hmc`` one HMC trajectory of
    ``n`` leapfrog steps of size ``h`` instead, and with ``at_target`` and
    ``options.local_step_size`` either move with its step chosen per particle
    (``core.autostep``, from ``sqrt(2 h)`` for MALA, ``h`` for HMC). Returns
    the state and the per-particle step information (for HMC what ChEES needs:
    ``_tune_trajectory``, during warmup only).

    Where ``rescale`` (traced; the annealing's Langevin move only) holds, the
    level has just changed to ``lam``: every particle is re-evaluated there
    instead, as a ULA step of size 0 (the proposal is the particle itself,
    kept where its density is finite; ``_rescaled``). The move and the
    re-evaluation then share one evaluation of the log density in the
    compiled program.

    The proposal noise and the accept uniforms of the whole population are drawn
    in one call (``draws.normal_and_uniform``; one key per particle costs more
    than a cheap target).
    """
    particles = state.particles
    h = jnp.exp(state.step_size.log_step_size) * lam
    precond = make_preconditioner(state.inv_mass, state.low_rank)
    y = particles.position
    z, uniform = draws.normal_and_uniform(keys.noise, y.shape, y.dtype)
    log_uniform = jnp.log(uniform)
    use_hmc = at_target and options.hmc
    local = at_target and options.local_step_size
    n = jnp.ones((), jnp.int32)
    if use_hmc:
        u = hmc.jitter(state.iteration)
        length = adaptation.trajectory_length(state.trajectory)
        n = hmc.num_integration_steps(length, h, u, options.max_leapfrog_steps)

    def fn(yi, c):
        return dilation_path.logdensity_and_score(logdensity_and_grad_fn, yi, c, lam)

    start = langevin.LangevinState(y, particles.logdensity, particles.logdensity_grad)
    if local:
        # Two uniforms per particle for its acceptance band, from a key of
        # their own (the other draws are those of the shared step).
        band = draws.uniform(keys.band, (y.shape[0], 2), y.dtype)
        new, info = autostep.step_from_noise(
            z,
            log_uniform,
            band,
            start,
            fn,
            particles.center,
            h if use_hmc else jnp.sqrt(2 * h),
            n,
            precond,
            options.max_step_doublings,
        )
    else:
        adjusted = options.adjusted
        if rescale is not None:
            h = jnp.where(rescale, 0.0, h)
            adjusted = adjusted & ~rescale

        def one(z, log_uniform, start, c):
            at_c = lambda yi: fn(yi, c)  # noqa: E731
            if use_hmc:
                return hmc.step_from_noise(z, log_uniform, start, at_c, h, n, precond)
            return langevin.step_from_noise(
                z, log_uniform, start, at_c, h, precond, adjusted
            )

        new, info = jax.vmap(one)(z, log_uniform, start, particles.center)
    particles = _after_metropolis(particles, new, info, "accept_prob")
    if rescale is not None:
        rescaled = _rescaled(state, particles, lam)
        particles = jax.tree.map(
            lambda a, b: jnp.where(rescale, a, b), rescaled, particles
        )
        state = state._replace(lam=lam)
    n = n.astype(jnp.float32)
    if local:
        # Gradients the population computed, per particle.
        n = info.population_gradients.astype(jnp.float32)
        # h_i / h = 2^j for HMC, (theta_i / theta_0)^2 = 4^j for MALA (h =
        # theta^2 / 2).
        per_doubling = jnp.log(2.0) * (1.0 if use_hmc else 2.0)
        particles = particles._replace(
            log_step_ratio=info.exponent.astype(y.dtype) * per_doubling
        )
    state = state._replace(particles=particles)
    return (state._replace(num_steps=n) if at_target else state), info


def _tune_trajectory(before: SamplerState, after: SamplerState, info, options):
    """Warmup only: one ChEES update of ``T`` from the HMC move ``before ->
    after`` (``info``: its endpoints and velocities), in whitened coordinates."""
    precond = make_preconditioner(before.inv_mass, before.low_rank)
    whiten = jax.vmap(precond.whiten)
    start = whiten(before.particles.position)
    end, velocity = whiten(info.proposal), whiten(info.velocity)
    # The floor's sums and ChEES's weighted endpoint sums in one reduction.
    floored, end_sums = adaptation.length_floor(
        before.trajectory,
        start,
        adaptation.chees_terms(end, velocity, info.acceptance_rate),
    )
    u = hmc.jitter(before.iteration)
    gradient = adaptation.chees_gradient(
        start,
        end,
        velocity,
        info.acceptance_rate,
        u * adaptation.trajectory_length(before.trajectory),
        floored.centre,
        end_sums,
    )
    t, run_calendar = before.iteration, before.calendar
    step_size = jnp.exp(before.step_size.log_step_size)
    updated = adaptation.trajectory_update(
        floored,
        gradient,
        options.trajectory_learning_rate,
        calendar.in_step_size_window(run_calendar, t),
        options.max_leapfrog_steps * step_size,
    )
    trajectory = _tree_where(t < run_calendar.num_warmup, updated, before.trajectory)
    return after._replace(trajectory=trajectory)


def _tree_where(condition: Array, new, old):
    """``new`` if the scalar ``condition`` holds, else ``old``."""
    return jax.lax.cond(condition, lambda: new, lambda: old)


def _jump(
    key, state: SamplerState, logdensity_and_grad_fn, tune: bool = True
) -> SamplerState:
    """One jump per particle from the mixture of the current modes.

    Jumps happen at ``l = 1``, where path and target coordinates agree. During
    warmup (``tune``) the squared jump distances tune the choice of block; the
    sampling program leaves that out.
    """
    particles = state.particles
    x = particles.position
    new, info = jumps.step(
        key,
        langevin.LangevinState(x, particles.logdensity, particles.logdensity_grad),
        logdensity_and_grad_fn,
        modes.proposal(state.modes),
        state.modes.marginals,
        jumps.coordinate_prob(state.jump_block),
    )
    if tune:
        scale = jnp.std(x, axis=0)
        squared = jnp.sum(
            ((new.position - x) / jnp.where(scale > 0, scale, 1.0)) ** 2, -1
        )
        tuned = jumps.update_block_choice(state.jump_block, squared, info.is_coordinate)
        warming = state.iteration < state.calendar.num_warmup
        state = state._replace(jump_block=_tree_where(warming, tuned, state.jump_block))
    return state._replace(
        particles=_after_metropolis(particles, new, info, "jump_accept_prob")
    )


def fit_modes(
    key: Array,
    state: SamplerState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    options: SamplerOptions,
    marginals: bool = True,
) -> SamplerState:
    """The mode fit of iteration ``t`` (``key``: that iteration's
    ``IterationKeys.modes``): the modes of the population in target space (at
    ``l = 1``); the fit at the end of annealing (``t = A``) also applies the
    calendar's one-mode rule (``calendar.single_mode``). ``marginals`` (static):
    ``False`` leaves the one-coordinate jumps' mixtures to ``fit_marginals``
    (``modes.find_modes``)."""
    found, _ = modes.find_modes(
        key,
        target_position(state),
        -target_potential(state),
        logdensity_and_grad_fn,
        options.max_modes,
        marginals=marginals,
    )
    narrowed = calendar.single_mode(state.calendar, state.iteration, found.num_modes)
    return state._replace(modes=found, calendar=narrowed)


def fit_marginals(state: SamplerState) -> SamplerState:
    """The population's 1-D mixture per coordinate in target space
    (``modes.fit_marginals``, the one-coordinate jumps' proposal), after a
    ``fit_modes`` with ``marginals=False``: the same state as ``fit_modes``'s
    with them."""
    fitted = modes.fit_marginals(target_position(state))
    return state._replace(modes=state.modes._replace(marginals=fitted))


def iteration_keys(population_key: Array) -> tuple[Array, IterationKeys]:
    """The next iteration's population key and this iteration's keys, from one
    ``jax.random.split``: one threefry hash in the compiled program, where a
    chain of splits (one per consumer) costs XLA's CPU backend several
    kernels each (docs/benchmarks.md, "Where compile time goes")."""
    next_key, *keys = jax.random.split(population_key, 1 + len(IterationKeys._fields))
    return next_key, IterationKeys(*keys)


def fit_iterations(
    run_calendar: calendar.Calendar, dim: int, options: SamplerOptions
) -> np.ndarray:
    """Static (host-side, ``run_calendar`` concrete): the iterations at which
    ``step`` fits the modes of a ``dim``-dimensional population (none without
    jumps and rebalancing, or without dimensions)."""
    jumping, rebalancing = _multimodal(dim, options)
    if jumping or rebalancing:
        return calendar.mode_fit_iterations(run_calendar)
    return np.zeros(0, int)


def unimodal(options: SamplerOptions) -> SamplerOptions:
    """The options of a run without jumps, mode fits or rebalancing: what a
    population that is one mode needs compiled (``calendar.single_mode``)."""
    return options._replace(jump_prob=0.0, rebalance=False)


def _rebalance(key, state: SamplerState, logdensity_and_grad_fn, options):
    """Correct the masses of the modes just found; resample particles between them."""
    index, found = rebalancing.rebalance(
        key,
        target_position(state),
        state.modes,
        lambda x: logdensity_and_grad_fn(x)[0],
        options.min_mode_ess,
    )
    return state._replace(
        particles=jax.tree.map(lambda a: a[index], state.particles), modes=found
    )


def _replace_stragglers(key, state: SamplerState) -> SamplerState:
    """Warmup only: see ``stragglers``; the particles are copied whole."""
    copied, _ = stragglers.replace_stragglers(
        key, state.particles, target_potential(state)
    )
    return state._replace(particles=copied)


def _adapt(
    state: SamplerState,
    options: SamplerOptions,
    moved: Array,
    at_target: Array,
    phase: str | None,
) -> SamplerState:
    """The warmup's adaptation after iteration ``t``'s move: the step size
    (every warmup iteration), the preconditioner (while tuning) and the
    freezing of both (and of HMC's trajectory length) at the last warmup
    iteration. The population sums both need come from one reduction (one
    all-reduce for a population split over processes)."""
    t = state.iteration
    run_calendar = state.calendar
    in_warmup = t < run_calendar.num_warmup
    particles = state.particles
    # The harmonic mean and the local steps' ratio serve the moves at l = 1
    # only: an annealing step leaves them out (its one reduction a scalar).
    harmonic = options.hmc and phase != ANNEAL
    local = options.local_step_size and phase != ANNEAL
    terms = adaptation.acceptance_terms(
        particles.accept_prob,
        particles.diverging,
        particles.log_step_ratio if local else None,
        harmonic=harmonic,
    )
    if not options.adapt_step_size:
        terms = terms[:, :0]  # a fixed step needs no acceptance sums
    state, sums = _estimate_preconditioner(state, options, terms, phase)
    step_size = state.step_size
    if options.adapt_step_size:
        window = calendar.in_step_size_window(run_calendar, t)
        acceptance, harmonic_mean, log_step_ratio = adaptation.acceptance_statistics(
            sums, particles.accept_prob.shape[0], harmonic=harmonic, local=local
        )
        if harmonic:
            acceptance = jnp.where(at_target, harmonic_mean, acceptance)
        updated = adaptation.step_size_update(
            step_size,
            acceptance,
            options.target_accept_prob,
            options.adaptation_gain,
            window,
        )
        if local:
            # With local steps the acceptance is the selection's business: the
            # shared step follows the population's typical selected step.
            selected = adaptation.step_size_update(
                step_size, log_step_ratio, 0.0, LOCAL_STEP_GAIN, window
            )
            updated = _tree_where(at_target, selected, updated)
        updated = _tree_where(in_warmup & moved, updated, step_size)
        frozen = updated._replace(
            log_step_size=jnp.log(adaptation.final_step_size(updated))
        )
        step_size = _tree_where(t == run_calendar.num_warmup - 1, frozen, updated)
    if options.hmc:
        trajectory = state.trajectory
        frozen = trajectory._replace(
            log_length=jnp.log(adaptation.final_trajectory_length(trajectory))
        )
        state = state._replace(
            trajectory=_tree_where(t == run_calendar.num_warmup - 1, frozen, trajectory)
        )
    return state._replace(step_size=step_size)


def _estimate_preconditioner(
    state: SamplerState, options: SamplerOptions, terms: Array, phase: str | None
) -> tuple[SamplerState, Array]:
    """In the first half of tuning (``calendar.estimates_preconditioner``), the
    preconditioner from the population's moments, and the population sums of
    ``terms`` (``adaptation.acceptance_terms``), from the same reduction;
    otherwise the state as it is and the sums alone.

    Kept fixed in the second half: re-estimated every iteration to the end,
    the metric follows the population it moves, and where a few particles
    dominate the moments (the mouth of a funnel: ``var(x_i) = E e^{x_0}``)
    that feedback biased the population (the 50-d funnel's ``P(x_0 < -3)``
    0.27 for 0.159 after 2000 warmup iterations, and no warning)."""
    t = state.iteration
    run_calendar = state.calendar
    n = state.particles.position.shape[0]

    def sums_only(s):
        return s, jnp.sum(terms, axis=0)

    if not options.adapt_inv_mass or n < 2:
        return sums_only(state)

    def estimate(s):
        x = target_position(s)
        # The first estimate shifts by its own mean (the stored one is the
        # centres'), the later ones by the previous estimate's: one sum
        # over the particles (one all-reduce when they are split).
        shift = jax.lax.cond(
            t == run_calendar.num_anneal,
            lambda: jnp.mean(x, axis=0),
            lambda: s.position_mean,
        )
        mean, moments, sums = adaptation.population_moments(
            x, shift, options.dense_mass, terms
        )
        inv_mass = adaptation.shrunk_inv_mass(moments, n, s.inv_mass)
        low_rank = s.low_rank
        if low_rank.eigen.shape[0] > 0:
            inv_mass, low_rank = adaptation.low_rank_update(
                x, mean, moments, inv_mass, low_rank
            )
        state = s._replace(
            inv_mass=inv_mass.astype(s.inv_mass.dtype),
            position_mean=mean,
            low_rank=low_rank,
        )
        return state, sums.astype(terms.dtype)

    if phase == ANNEAL:
        return sums_only(state)
    return jax.lax.cond(
        calendar.estimates_preconditioner(run_calendar, t), estimate, sums_only, state
    )


def _multimodal(dim: int, options: SamplerOptions) -> tuple[bool, bool]:
    """Static: jumps on, rebalancing on; neither for a target without
    dimensions (a model whose latent sites are empty), which has no modes."""
    has_dims = dim > 0
    return options.jump_prob > 0 and has_dims, options.rebalance and has_dims


def step(
    key: Array,
    state: SamplerState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    options: SamplerOptions,
    fit: bool = True,
) -> tuple[SamplerState, SamplerInfo]:
    """One iteration of the population (one gradient per particle, or
    ``num_steps`` for an HMC move), with this iteration's ``key``:
    ``step_from_keys`` with ``iteration_keys(key)``'s keys."""
    _, keys = iteration_keys(key)
    return step_from_keys(keys, state, logdensity_and_grad_fn, options, fit)


def step_from_keys(
    keys: IterationKeys,
    state: SamplerState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    options: SamplerOptions,
    fit: bool = True,
    phase: str | None = None,
) -> tuple[SamplerState, SamplerInfo]:
    """``step`` with the iteration's keys given: a caller that carries its own
    key chain derives the next key and these in one split (``iteration_keys``).

    :param fit: static; ``False`` leaves the calendar's mode fits to the
        caller, who makes them with ``fit_modes`` (key ``keys.modes``) just
        before the step of a fit iteration (the kernel, to compile them once).
    :param phase: static; ``ANNEAL`` promises an annealing iteration (``t <
        A``), ``TUNE`` a tuning one (``A <= t < W``): the compiled step then
        holds that phase's work only (the same draws, up to the rounding of a
        program XLA fuses otherwise). ``None``: either.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
    annealing, tuning = phase != TUNE, phase != ANNEAL
    t = state.iteration
    jumping, rebalancing = _multimodal(state.particles.position.shape[-1], options)
    jumping, rebalancing = jumping and tuning, rebalancing and tuning
    if (jumping or rebalancing) and fit:
        state = jax.lax.cond(
            calendar.is_mode_fit(state.calendar, t),
            lambda s: fit_modes(keys.modes, s, logdensity_and_grad_fn, options),
            lambda s: s,
            state,
        )
    run_calendar = state.calendar
    if annealing:
        lam = calendar.level_at(run_calendar, t)
    else:
        lam = jnp.ones((), run_calendar.levels.dtype)  # l = 1 while tuning
    # Branches: 0 Langevin move, or at a new level the re-evaluation there
    # (one evaluation of the log density for both), 1 jump, 2 rebalance, 3 move
    # at l = 1 with HMC or local steps (from the end of annealing). A branch
    # the phase cannot take is compiled as the identity, or not at all.
    rescale = lam != state.lam if annealing else None
    targeted = tuning and (options.hmc or options.local_step_size)
    if tuning and options.hmc and not jumping:
        state = _leapfrog_step_at_tuning_start(state)

    def skip(s):
        return s

    def langevin_move(s):
        return _move(keys, s, lam, logdensity_and_grad_fn, options, False, rescale)[0]

    def target_move(s):
        moved, info = _move(keys, s, lam, logdensity_and_grad_fn, options, True)
        return _tune_trajectory(s, moved, info, options) if options.hmc else moved

    branches = [
        langevin_move if annealing or not targeted else skip,
        (lambda s: _jump(keys.noise, s, logdensity_and_grad_fn)) if jumping else skip,
        (
            (lambda s: _rebalance(keys.noise, s, logdensity_and_grad_fn, options))
            if rebalancing
            else skip
        ),
    ] + ([target_move] if targeted else [])
    branch = jnp.asarray(0)
    if targeted:
        branch = jnp.where(t >= run_calendar.num_anneal, 3, 0) if annealing else 3
    if jumping:
        is_jump = (
            (t >= run_calendar.num_anneal)
            & (state.modes.num_modes > 1)
            & (jax.random.uniform(keys.coin) < options.jump_prob)
        )
        branch = jnp.where(is_jump, 1, branch)
    if rebalancing:
        branch = jnp.where(calendar.is_rebalance(run_calendar, t), 2, branch)
    if rescale is not None:
        branch = jnp.where(rescale, 0, branch)
    live = [b for b in branches if b is not skip]
    if len(live) == 1:
        state = live[0](_one_step(state))
    else:
        state = jax.lax.switch(branch, branches, _one_step(state))
    moved = (branch == 0) | (branch == 3)
    if rescale is not None:
        moved = moved & ~rescale
    state = _adapt(state, options, moved, branch == 3, phase)
    if state.particles.position.shape[0] > 1 and tuning:
        state = jax.lax.cond(
            calendar.is_straggler_check(run_calendar, t),
            lambda s: _replace_stragglers(keys.stragglers, s),
            lambda s: s,
            state,
        )
    rescaled = jnp.zeros((), bool) if rescale is None else rescale
    info = SamplerInfo(rescaled, branch == 1, branch == 2)
    return _advance(state), info


def _leapfrog_step_at_tuning_start(state: SamplerState) -> SamplerState:
    """At ``t = A``, where HMC moves take over from the annealing's Langevin
    steps, the adapted step in the leapfrog's units. One leapfrog step of size
    ``e`` from the velocity ``v = L z`` (``M = L L^T``, ``z ~ N(0, I)``)
    proposes ``y + e^2 / 2 M grad + e L z``, the MALA proposal of step ``h =
    e^2 / 2`` (and accepts with its ratio), so ``e = sqrt(2 h)`` continues
    the annealing's step. Its ``h`` is far below ``e`` where the posterior is
    narrow (4e-4 against 0.03 on the stochastic-volatility model), and
    carried over as it was the step took about 15 iterations of trajectories
    at the leapfrog cap to grow into place. Not where the population jumps
    between modes (``step="hmc"`` on several modes; ``"auto"`` moves them
    with MALA): there the step is carried over as it is, whose short first
    trajectories kept local HMC on the 40-mode mixture at 16x NUTS's ESS per
    gradient where ``sqrt(2 h)`` gave 4.5x (docs/benchmarks.md)."""
    step_size = state.step_size
    log_h = step_size.log_step_size
    log_e = 0.5 * (jnp.log(2.0) + log_h)
    start = state.iteration == state.calendar.num_anneal
    return state._replace(
        step_size=step_size._replace(
            log_step_size=jnp.where(start, log_e, log_h).astype(log_h.dtype)
        )
    )


def _one_step(state: SamplerState) -> SamplerState:
    """Every kind of iteration but an HMC move costs one gradient per particle."""
    return state._replace(num_steps=jnp.ones((), jnp.float32))


def _advance(state: SamplerState) -> SamplerState:
    """The next iteration, with this one's gradients counted."""
    return state._replace(
        iteration=state.iteration + 1,
        num_gradients=state.num_gradients + state.num_steps,
    )


def sample_step(
    keys: IterationKeys,
    state: SamplerState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    options: SamplerOptions,
) -> tuple[SamplerState, SamplerInfo]:
    """One sampling iteration (``t >= W``, everything frozen, ``l = 1``): a
    Langevin move or, with probability ``jump_prob`` once several modes were
    found, a jump. The same draws as ``step`` there, with none of warmup's work
    (mode fits, rebalancing, adaptation, stragglers) in the compiled program."""
    jumping, _ = _multimodal(state.particles.position.shape[-1], options)

    def move(s):
        moved, _ = _move(keys, s, s.lam, logdensity_and_grad_fn, options, True)
        return moved

    if jumping:
        is_jump = (state.modes.num_modes > 1) & (
            jax.random.uniform(keys.coin) < options.jump_prob
        )
        state = jax.lax.cond(
            is_jump,
            lambda s: _jump(keys.noise, s, logdensity_and_grad_fn, tune=False),
            move,
            _one_step(state),
        )
    else:
        is_jump = jnp.zeros((), bool)
        state = move(_one_step(state))
    info = SamplerInfo(jnp.zeros((), bool), is_jump, jnp.zeros((), bool))
    return _advance(state), info
