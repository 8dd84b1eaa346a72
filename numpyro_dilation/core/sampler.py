"""The annealed population sampler on flat arrays: phases, one step per iteration.

Iteration ``t`` of a run with ``W`` warmup iterations, ``A <= W`` of them
annealing over the levels ``l_0 < ... < l_{K-1} = 1`` (docs/design.md section 3):

* ``t < A``   anneal: level ``l_t = levels[floor(t K / A)]``; each particle runs
  Langevin steps on the dilated density ``p_l`` around its own centre, step
  ``h = eps * l`` (scale-aware: this is a step ``eps`` on ``p`` in target
  coordinates). The first iteration of a new level only re-evaluates the
  particles under it (one gradient, no move), so every iteration costs exactly
  one gradient per particle.
* ``A <= t < W``  tune at ``l = 1``: the preconditioner is re-estimated from the
  population every iteration; ``eps`` keeps adapting; particles stuck far out
  in the tails are replaced by copies of others (``stragglers``).
* ``t >= W``  sample: everything frozen; one exact MALA step (or ULA) at ``l = 1``.

Multimodal targets (docs/multimodal.md), on by default:

* at ``t = A`` and three more times, evenly, while tuning, the population's
  modes are found (``modes.find_modes``: no gradient); from ``t = A`` on, with
  probability ``jump_prob`` per iteration (one coin for the population,
  independent of the state), every particle makes an exact
  Metropolis-Hastings jump from the mixture fitted to the modes (``jumps.step``)
  instead of a Langevin step, as long as more than one mode was found;
* at ``t = W - 1`` (the last warmup iteration) the modes are found again and
  the population is rebalanced: each mode's mass is estimated by importance
  sampling and particles are resampled between modes
  (``rebalancing.rebalance``; its draws are the iteration's one evaluation per
  particle). The modes, with their corrected masses, are then frozen: the jump
  proposal of the sampling phase.

Each kernel of the sampling phase (MALA, jump) leaves ``p`` invariant and the
choice between them does not depend on the state, so sampling stays exact.

Particles start at their Dirac centres (``y = c``), which is the law ``p_0``.
The state knows its own schedule, so a step needs nothing but the state.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_dilation.core import adaptation, dilation_path, langevin, stragglers
from numpyro_dilation.core.multimodal import jumps, modes, rebalancing
from numpyro_dilation.core.preconditioner import make_preconditioner

__all__ = ["Schedule", "SamplerOptions", "SamplerState", "SamplerInfo", "init", "step"]

LogDensityAndGrad = Callable[[Array], tuple[Array, Array]]


class Schedule(NamedTuple):
    """Per-run phase lengths and levels (part of the state, not of the kernel)."""

    levels: Array
    num_anneal: Array
    num_warmup: Array


class SamplerOptions(NamedTuple):
    """Static options. ``adjusted=False`` runs the paper's ULA (biased at l = 1).

    ``rebalance``: correct the mode masses at the last warmup iteration;
    ``jump_prob``: probability of a jump iteration from ``t = A`` on (0: none);
    ``max_modes``: clusters fitted (``K``); ``min_mode_ess``: the effective
    sample size under which a mode's mass estimate is not used.
    """

    adjusted: bool = True
    target_accept_prob: float = 0.574
    adaptation_gain: float = 1.0
    adapt_step_size: bool = True
    adapt_inv_mass: bool = True
    dense_mass: bool = False
    rebalance: bool = True
    jump_prob: float = 0.5
    max_modes: int = 64
    min_mode_ess: float = 20.0


class SamplerState(NamedTuple):
    """Population state; ``logdensity`` and its gradient are those of ``p_lam``."""

    iteration: Array
    position: Array
    center: Array
    lam: Array
    logdensity: Array
    logdensity_grad: Array
    accept_prob: Array
    diverging: Array
    step_size: adaptation.StepSizeState
    inv_mass: Array
    schedule: Schedule
    modes: modes.Modes
    jump_block: jumps.BlockChoice
    jump_accept_prob: Array


class SamplerInfo(NamedTuple):
    is_rescale: Array
    is_jump: Array
    is_rebalance: Array


def level_at(schedule: Schedule, t: Array) -> Array:
    """``l_t = levels[floor(t K / A)]`` while annealing, then 1."""
    num_levels = schedule.levels.shape[0]
    k = jnp.minimum(
        t * num_levels // jnp.maximum(schedule.num_anneal, 1), num_levels - 1
    )
    return jnp.where(t < schedule.num_anneal, schedule.levels[k], 1.0).astype(
        schedule.levels.dtype
    )


def _evaluate(logdensity_and_grad_fn: LogDensityAndGrad, y, center, lam):
    return jax.vmap(
        lambda yi, ci: dilation_path.logdensity_and_score(
            logdensity_and_grad_fn, yi, ci, lam
        )
    )(y, center)


def target_potential(state: SamplerState) -> Array:
    """``-log p(x)`` at each particle, from ``log p_l(y) = -d/2 log l + log p(x)``."""
    d = state.position.shape[-1]
    return -(state.logdensity + 0.5 * d * jnp.log(state.lam))


def target_position(state: SamplerState) -> Array:
    """``x = c + (y - c) / sqrt(l)`` for each particle."""
    return dilation_path.to_target(state.position, state.center, state.lam)


def init(
    center: Array,
    logdensity_and_grad_fn: LogDensityAndGrad,
    schedule: Schedule,
    step_size: float,
    inv_mass: Array,
    max_modes: int = SamplerOptions().max_modes,
) -> SamplerState:
    """All particles at their centres (``y = c``), at the first level, no modes yet."""
    n, d = center.shape
    lam = level_at(schedule, jnp.zeros((), int))
    logdensity, grad = _evaluate(logdensity_and_grad_fn, center, center, lam)
    return SamplerState(
        iteration=jnp.zeros((), int),
        position=center,
        center=center,
        lam=lam,
        logdensity=logdensity,
        logdensity_grad=grad,
        accept_prob=jnp.ones(n, center.dtype),
        diverging=jnp.zeros(n, bool),
        step_size=adaptation.step_size_init(step_size),
        inv_mass=inv_mass,
        schedule=schedule,
        modes=modes.empty(n, d, max_modes, center.dtype),
        jump_block=jumps.block_choice_init(center.dtype),
        jump_accept_prob=jnp.zeros(n, center.dtype),
    )


def _rescale(state: SamplerState, lam, logdensity_and_grad_fn) -> SamplerState:
    """Re-evaluate every particle under the new level ``lam`` (y fixed).

    A particle whose density is not finite there is flagged divergent and keeps
    its target-space position instead (``y`` re-mapped so that ``x`` is unchanged).
    """
    logdensity, grad = _evaluate(
        logdensity_and_grad_fn, state.position, state.center, lam
    )
    bad = ~(jnp.isfinite(logdensity) & jnp.all(jnp.isfinite(grad), axis=-1))
    d = state.position.shape[-1]
    # log p(x) and grad log p(x) at the unchanged x, from the cached values.
    kept_logdensity = -target_potential(state) - 0.5 * d * jnp.log(lam)
    kept_grad = state.logdensity_grad * jnp.sqrt(state.lam / lam)
    kept = dilation_path.to_path(target_position(state), state.center, lam)
    return state._replace(
        position=jnp.where(bad[:, None], kept, state.position),
        lam=lam,
        logdensity=jnp.where(bad, kept_logdensity, logdensity),
        logdensity_grad=jnp.where(bad[:, None], kept_grad, grad),
        diverging=bad,
    )


def _move(key, state: SamplerState, lam, logdensity_and_grad_fn, adjusted):
    """One Langevin step per particle on ``p_lam``, step ``h = eps * lam``.

    The proposal noise and the accept uniforms of the whole population are drawn
    in one call each (one key per particle costs more than a cheap target).
    """
    h = jnp.exp(state.step_size.log_step_size) * lam
    precond = make_preconditioner(state.inv_mass)
    key_noise, key_accept = jax.random.split(key)
    y = state.position
    z = jax.random.normal(key_noise, y.shape, y.dtype)
    log_uniform = jnp.log(jax.random.uniform(key_accept, y.shape[:1]))

    def one(z, log_uniform, y, c, logdensity, grad):
        fn = lambda yi: dilation_path.logdensity_and_score(  # noqa: E731
            logdensity_and_grad_fn, yi, c, lam
        )
        return langevin.step_from_noise(
            z,
            log_uniform,
            langevin.LangevinState(y, logdensity, grad),
            fn,
            h,
            precond,
            adjusted,
        )

    new, info = jax.vmap(one)(
        z, log_uniform, y, state.center, state.logdensity, state.logdensity_grad
    )
    return state._replace(
        position=new.position,
        logdensity=new.logdensity,
        logdensity_grad=new.logdensity_grad,
        accept_prob=info.acceptance_rate,
        diverging=info.is_divergent,
    )


def _jump(key, state: SamplerState, logdensity_and_grad_fn) -> SamplerState:
    """One jump per particle from the mixture of the current modes.

    Jumps happen at ``l = 1``, where path and target coordinates agree. During
    warmup the squared jump distances tune the choice of block.
    """
    x = state.position
    new, info = jumps.step(
        key,
        langevin.LangevinState(x, state.logdensity, state.logdensity_grad),
        logdensity_and_grad_fn,
        modes.proposal(state.modes),
        state.modes.marginals,
        jumps.coordinate_prob(state.jump_block),
    )
    scale = jnp.std(x, axis=0)
    squared = jnp.sum(((new.position - x) / jnp.where(scale > 0, scale, 1.0)) ** 2, -1)
    block = jax.tree.map(
        lambda a, b: jnp.where(state.iteration < state.schedule.num_warmup, a, b),
        jumps.update_block_choice(state.jump_block, squared, info.is_coordinate),
        state.jump_block,
    )
    return state._replace(
        jump_block=block,
        position=new.position,
        logdensity=new.logdensity,
        logdensity_grad=new.logdensity_grad,
        jump_accept_prob=info.acceptance_rate,
        diverging=info.is_divergent,
    )


def _find_modes(key, state: SamplerState, logdensity_and_grad_fn, options):
    """The modes of the population in target space (at ``l = 1``)."""
    found, _ = modes.find_modes(
        key,
        target_position(state),
        -target_potential(state),
        logdensity_and_grad_fn,
        options.max_modes,
    )
    return found


def _rebalance(key, state: SamplerState, logdensity_and_grad_fn, options):
    """Correct the masses of the modes just found; resample particles between them."""
    index, found = rebalancing.rebalance(
        key,
        target_position(state),
        state.modes,
        lambda x: logdensity_and_grad_fn(x)[0],
        options.min_mode_ess,
    )
    per_particle = (
        state.position,
        state.center,
        state.logdensity,
        state.logdensity_grad,
        state.accept_prob,
        state.jump_accept_prob,
        state.diverging,
    )
    position, center, logdensity, grad, accept_prob, jump_accept_prob, diverging = (
        a[index] for a in per_particle
    )
    return state._replace(
        position=position,
        center=center,
        logdensity=logdensity,
        logdensity_grad=grad,
        accept_prob=accept_prob,
        jump_accept_prob=jump_accept_prob,
        diverging=diverging,
        modes=found,
    )


def _replace_stragglers(key, state: SamplerState) -> SamplerState:
    """Warmup only: see ``stragglers``; every per-particle field is copied."""
    fields = (
        "position",
        "center",
        "logdensity",
        "logdensity_grad",
        "accept_prob",
        "jump_accept_prob",
    )
    copied, _ = stragglers.replace_stragglers(
        jax.random.fold_in(key, 1),
        {name: getattr(state, name) for name in fields},
        target_potential(state),
    )
    return state._replace(**copied)


def _adapt(state: SamplerState, options: SamplerOptions, moved: Array) -> SamplerState:
    t = state.iteration
    schedule = state.schedule
    in_warmup = t < schedule.num_warmup
    step_size = state.step_size
    if options.adapt_step_size:
        window = jnp.maximum((schedule.num_warmup - schedule.num_anneal) // 4, 1)
        updated = adaptation.step_size_update(
            step_size,
            jnp.mean(state.accept_prob),
            options.target_accept_prob,
            options.adaptation_gain,
            t >= schedule.num_warmup - window,
        )
        updated = jax.tree.map(
            lambda new, old: jnp.where(in_warmup & moved, new, old), updated, step_size
        )
        frozen = updated._replace(
            log_step_size=jnp.log(adaptation.final_step_size(updated))
        )
        step_size = jax.tree.map(
            lambda a, b: jnp.where(t == schedule.num_warmup - 1, a, b), frozen, updated
        )
    inv_mass = state.inv_mass
    if options.adapt_inv_mass and state.position.shape[0] > 1:
        tuning = in_warmup & (t >= schedule.num_anneal)
        inv_mass = jax.lax.cond(
            tuning,
            lambda s: adaptation.population_inv_mass(
                target_position(s), options.dense_mass, s.inv_mass
            ).astype(s.inv_mass.dtype),
            lambda s: s.inv_mass,
            state,
        )
    return state._replace(step_size=step_size, inv_mass=inv_mass)


def step(
    key: Array,
    state: SamplerState,
    logdensity_and_grad_fn: LogDensityAndGrad,
    options: SamplerOptions,
) -> tuple[SamplerState, SamplerInfo]:
    """One iteration of the population (one gradient per particle)."""
    t = state.iteration
    schedule = state.schedule
    key_move, key_modes, key_coin = jax.random.split(key, 3)
    lam = level_at(schedule, t)
    tuning = (t >= schedule.num_anneal) & (t < schedule.num_warmup)
    is_rebalance = options.rebalance & tuning & (t == schedule.num_warmup - 1)
    jumping = options.jump_prob > 0
    if jumping or options.rebalance:
        period = jnp.maximum((schedule.num_warmup - schedule.num_anneal) // 4, 1)
        state = jax.lax.cond(
            is_rebalance
            | (jumping & tuning & ((t - schedule.num_anneal) % period == 0)),
            lambda s: s._replace(
                modes=_find_modes(key_modes, s, logdensity_and_grad_fn, options)
            ),
            lambda s: s,
            state,
        )
    is_jump = (
        jumping
        & (t >= schedule.num_anneal)
        & ~is_rebalance
        & (state.modes.num_modes > 1)
        & (jax.random.uniform(key_coin) < options.jump_prob)
    )
    # Branches: 0 Langevin move, 1 re-evaluation at a new level, 2 jump, 3 rebalance.
    branches = [
        lambda s: _move(key_move, s, lam, logdensity_and_grad_fn, options.adjusted),
        lambda s: _rescale(s, lam, logdensity_and_grad_fn),
        lambda s: _jump(key_move, s, logdensity_and_grad_fn) if jumping else s,
        lambda s: (
            _rebalance(key_move, s, logdensity_and_grad_fn, options)
            if options.rebalance
            else s
        ),
    ]
    branch = jnp.where(
        lam != state.lam, 1, jnp.where(is_rebalance, 3, jnp.where(is_jump, 2, 0))
    )
    state = jax.lax.switch(branch, branches, state)
    state = _adapt(state, options, branch == 0)
    if state.position.shape[0] > 1:
        state = jax.lax.cond(
            tuning, lambda s: _replace_stragglers(key, s), lambda s: s, state
        )
    info = SamplerInfo(branch == 1, branch == 2, branch == 3)
    return state._replace(iteration=t + 1), info
