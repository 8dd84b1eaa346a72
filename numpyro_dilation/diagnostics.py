"""Warnings that a run went wrong: collapsed acceptance, particles that reject
almost everything, divergences, stuck particles, and a population still moving at
the end of warmup.

``population_warnings`` is a pure function of statistics of the population at two
times ``k`` iterations apart (positions ``x_i(t - k)`` and ``x_i(t)``, each
particle's mean acceptance probability ``a_i`` and the divergence flags in
between). Seven checks, each with its threshold:

* acceptance collapsed: the population's mean acceptance ``mean_i a_i`` is below
  ``ACCEPTANCE_FLOOR`` (the step size adapts towards 0.574);
* sticky region: the mean acceptance has not collapsed but more than
  ``STICKY_SHARE`` of the particles, and at least ``STICKY_MIN_COUNT`` of them
  (one or two particles in a small population are not a region), have
  ``a_i < STICKY_ACCEPTANCE``. The step size is shared, so a region of the
  posterior whose scale is far below the typical one (a funnel's neck, a
  hierarchical scale near 0) rejects nearly every proposal: particles that enter
  it stay, others rarely get in, and the region is under-sampled. On Neal's
  funnel (d = 10) 9.5% of the particles have ``a_i < 0.01`` over 200 draws
  while the sd of ``x_0`` comes out 1.7 instead of 3; on centred eight schools
  0.2%, on Gaussians, mixtures and logistic regressions none;
* divergences: more than ``DIVERGENT_SHARE`` of the proposals had a non-finite
  potential or gradient (they were rejected, the draws stay valid);
* stuck particles: more than ``STUCK_SHARE`` of the particles did not move at all
  in ``k`` iterations (at an acceptance near 0.574 a particle stays put ``k = 10``
  times in a row with probability ``0.43^10 < 2e-4``);
* still moving: the paired differences ``d_i = x_i(t) - x_i(t - k)`` have a mean
  that is not zero. At stationarity the particles are independent draws of the
  same law at both times, so ``E d = 0`` and ``z_j = mean(d_j) / (sd(d_j)/sqrt(n))``
  is Student-t with ``n - 1`` degrees of freedom; the threshold is its quantile
  for a false-alarm probability of ``FLOW_FALSE_ALARM`` per run (Bonferroni over
  the ``d`` coordinates). Mass still flowing between modes moves the mean.
* spread still changing: the same test on the paired differences of the
  absolute deviations ``|x_ij(t) - m_j| - |x_ij(t - k) - m_j|``, ``m_j`` the
  mean over both times (a symmetric function of the pair, so ``E = 0`` again at
  stationarity; absolute rather than squared deviations need only a finite
  variance). A population still widening along a direction the move crosses
  slowly passes the mean test and fails this one. The two tests share the
  false-alarm budget (Bonferroni over ``2 d`` tests).
* slow mixing: the particles' positions ``k`` iterations apart are still
  correlated across the population. The annealing's draws are approximate; the
  exact moves of the tuning phase correct them only as far as they decorrelate
  the population from where the annealing left it, and a population that
  remembers its positions of ``k`` iterations before keeps part of whatever
  error it had. With ``r_j`` the correlation of ``x_j(t - k)`` and ``x_j(t)``
  over the particles, the check tests ``rho_j <= MEMORY_BOUND`` by Fisher's
  ``z_j = (atanh(r_j) - atanh(MEMORY_BOUND)) sqrt(n - 3)`` (standard normal at
  the bound for Gaussian marginals) against its quantile for a false-alarm
  probability of ``MEMORY_FALSE_ALARM`` per run (Bonferroni over the ``d``
  coordinates). It fires where both tests above stay quiet because the
  population relaxes too slowly for its drift to stand out in ``k``
  iterations: at the end of a 500-iteration warmup (``k = 125``, 1024
  particles) MALA on the stochastic-volatility model measures ``r = 0.41``,
  local MALA on Neal's funnel 0.60 and on centred eight schools 0.48, all
  three wrong, where the runs that are right measured 0.10 or less
  (docs/validation.md). A curved ridge (the banana) stays under it: 0.19,
  its sds 37% short.

The checks need ``MIN_PARTICLES`` particles (below, the population statistics are
too noisy to judge), a window of ``MIN_WINDOW`` iterations and at least one
dimension (a model without latent sites has nothing that could move).

They run automatically at the end of warmup, over the second half of the
tuning phase (``track`` after every warmup iteration and ``end_of_warmup``
after the last, inside the warmup's compiled program, then
``warn_end_of_warmup`` on the host once ``DilationKernel.init`` has run the
warmup, so the warnings come from the user's ``mcmc.run``), and on demand over
the sampling phase with ``check_run(mcmc)``.
"""

import inspect
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import scipy.stats
from jax import Array

from numpyro_dilation.core import calendar, sampler

__all__ = [
    "DilationWarning",
    "Move",
    "warn",
    "MIN_WARMUP",
    "population_warnings",
    "WarmupReference",
    "init_reference",
    "track",
    "EndOfWarmup",
    "end_of_warmup",
    "warn_end_of_warmup",
    "check_run",
]

MIN_WARMUP = 100
"""Fewer warmup iterations than this draw a ``DilationWarning`` at ``init``."""
MIN_PARTICLES = 32
MIN_WINDOW = 10
ACCEPTANCE_FLOOR = 0.1
STICKY_ACCEPTANCE = 0.01
STICKY_SHARE = 0.01
STICKY_MIN_COUNT = 3
DIVERGENT_SHARE = 0.05
STUCK_SHARE = 0.1
FLOW_FALSE_ALARM = 1e-6
MEMORY_BOUND = 0.1
MEMORY_FALSE_ALARM = 1e-6


class DilationWarning(UserWarning):
    """A DilationKernel run whose draws should not be trusted as they are."""


class Move(NamedTuple):
    """What moved the particles, for the warnings' advice: HMC trajectories
    (else one MALA or ULA step), a dense preconditioner, a step size chosen
    per particle (``step_size_selection="local"``)."""

    hmc: bool
    dense: bool
    local: bool


def _remedies(move: Move | None) -> str:
    """The settings that cross a slow direction faster than ``move`` did (for
    an unknown move, those of MALA with a diagonal preconditioner), then a
    longer warmup."""
    move = move or Move(hmc=False, dense=False, local=False)
    remedies = ["step='hmc' (longer moves)"] if not move.hmc else []
    remedies += ["dense_mass=True"] if not move.dense else []
    if move.hmc and not move.local:
        remedies.append(
            "step_size_selection='local' where the posterior's scale changes "
            "from region to region as in a funnel (exact, many more gradients)"
        )
    if not remedies:
        return "Raise num_warmup."
    return f"Use {' or '.join(remedies)}, or raise num_warmup."


def population_warnings(
    accept_prob: np.ndarray,
    diverging: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    num_iterations: int,
    when: str,
    move: Move | None = None,
) -> list[str]:
    """The messages of the six checks (empty when all pass).

    :param accept_prob: each particle's mean acceptance probability over the
        ``k`` iterations, shape ``(n,)``.
    :param diverging: divergence flags, any shape (the mean is used).
    :param before: positions ``x_i(t - k)``, shape ``(n, d)``.
    :param after: positions ``x_i(t)``, shape ``(n, d)``.
    :param num_iterations: ``k``.
    :param when: where in the run, e.g. ``"at the end of warmup"``.
    :param move: what moved the particles (``None``: not known), so that the
        advice names the settings the run did not use.
    """
    before = np.asarray(before, float).reshape(np.shape(before)[0], -1)
    after = np.asarray(after, float).reshape(before.shape)
    n, d = before.shape
    if n < MIN_PARTICLES or num_iterations < MIN_WINDOW or d == 0:
        return []
    messages = []
    acceptance = float(np.mean(accept_prob))
    if acceptance < ACCEPTANCE_FLOOR:
        messages.append(
            f"DilationKernel: the mean acceptance probability {when} is "
            f"{acceptance:.3f} (below {ACCEPTANCE_FLOOR}): the particles barely "
            "move. Raise num_warmup so that the step size can adapt; if the "
            "parameters have very different scales or strong correlations, "
            "reparametrise the model or use dense_mass=True."
        )
    is_sticky = np.asarray(accept_prob) < STICKY_ACCEPTANCE
    sticky = float(np.mean(is_sticky))
    if (
        sticky > STICKY_SHARE
        and np.sum(is_sticky) >= STICKY_MIN_COUNT
        and acceptance >= ACCEPTANCE_FLOOR
    ):
        if move is not None and move.local:
            cause = (
                "where even the step chosen per particle "
                "(step_size_selection='local') is too large"
            )
            remedy = "" if move.hmc else ", or move with step='hmc'"
        else:
            cause = "where the shared step size is too large"
            remedy = (
                ", or choose the step per particle: step='hmc', "
                "step_size_selection='local' (exact, many more gradients)"
            )
        messages.append(
            f"DilationKernel: {sticky:.1%} of the particles accepted fewer than "
            f"{STICKY_ACCEPTANCE:.0%} of their proposals over the last "
            f"{num_iterations} iterations {when} (mean acceptance "
            f"{acceptance:.2f}). The posterior has a region whose scale is far "
            "below the rest (e.g. the neck of a funnel, a hierarchical scale near "
            f"0) {cause}: that region is under-sampled and the draws are "
            "biased. Reparametrise the model (e.g. non-centred, "
            f"numpyro.infer.reparam.LocScaleReparam){remedy}."
        )
    divergent = float(np.mean(diverging))
    if divergent > DIVERGENT_SHARE:
        messages.append(
            f"DilationKernel: {divergent:.1%} of the proposals {when} were "
            "divergent (the potential or its gradient was NaN or inf there). They "
            "were rejected, so the draws stay valid, but those particles mix "
            "slowly. If the model should be finite there, look for the NaN (e.g. a "
            "log of a negative number); for a hard boundary, sample a constrained "
            "parameter instead."
        )
    stuck = float(np.mean(np.all(after == before, axis=1)))
    if stuck > STUCK_SHARE:
        messages.append(
            f"DilationKernel: {stuck:.1%} of the particles did not move at all in "
            f"the last {num_iterations} iterations {when}: they are stuck (every "
            "proposal rejected, or steps below the floating-point resolution of "
            "their position), typically far from the posterior mass when its "
            "scale is much smaller than the spread of the initial points. Start "
            "nearer the posterior (init_params, init_strategy), rescale the "
            "parameters, or raise num_warmup."
        )
    threshold = scipy.stats.t.isf(FLOW_FALSE_ALARM / (4 * d), n - 1)
    centre = 0.5 * (np.mean(before, axis=0) + np.mean(after, axis=0))
    for diff, change, what, cause, remedy in (
        (
            after - before,
            "still moving",
            "mean",
            "The particles have not settled (e.g. mass still flowing between modes)",
            "Raise num_warmup.",
        ),
        (
            np.abs(after - centre) - np.abs(before - centre),
            "still changing",
            "spread (mean absolute deviation)",
            "The population is still widening or narrowing (a direction much "
            "wider or narrower than the others that the moves cross slowly)",
            _remedies(move),
        ),
    ):
        z, j = _paired_z(diff, n)
        if z > threshold:
            messages.append(
                f"DilationKernel: the population was {change} {when}: over "
                f"the last {num_iterations} iterations the {what} of coordinate "
                f"{j} shifted by {z:.1f} standard errors (threshold "
                f"{threshold:.1f}). {cause}, so the draws do not represent the "
                f"posterior yet. {remedy}"
            )
    memory, r, j = _largest_memory(before, after)
    if memory > scipy.stats.norm.isf(MEMORY_FALSE_ALARM / d):
        messages.append(
            f"DilationKernel: the particles mix slowly {when}: their positions "
            f"{num_iterations} iterations apart are still correlated (coordinate "
            f"{j}: r = {r:.2f} across the population, {memory:.1f} standard "
            f"errors above {MEMORY_BOUND}). The moves have not decorrelated the "
            "population from where the annealing left it, so the draws keep "
            "what error it left (e.g. a curved ridge or a long narrow direction "
            f"that the moves cross slowly). {_remedies(move)}"
        )
    return messages


def _largest_memory(before: np.ndarray, after: np.ndarray) -> tuple[float, float, int]:
    """The largest ``(atanh(r_j) - atanh(MEMORY_BOUND)) sqrt(n - 3)`` over the
    coordinates that vary at both times (``r_j`` the correlation of
    ``before[:, j]`` and ``after[:, j]``), its ``r_j`` and its coordinate
    (``-inf``, 0 and -1 when none varies)."""
    n = before.shape[0]
    centred = [x - np.mean(x, axis=0) for x in (before, after)]
    norms = [np.sqrt(np.sum(x**2, axis=0)) for x in centred]
    varies = (norms[0] > 0) & (norms[1] > 0)
    if not np.any(varies):
        return -np.inf, 0.0, -1
    r = np.sum(centred[0][:, varies] * centred[1][:, varies], axis=0) / (
        norms[0][varies] * norms[1][varies]
    )
    z = (np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12)) - np.arctanh(MEMORY_BOUND)) * (
        np.sqrt(n - 3)
    )
    best = int(np.argmax(z))
    return float(z[best]), float(r[best]), int(np.flatnonzero(varies)[best])


def _paired_z(diff: np.ndarray, n: int) -> tuple[float, int]:
    """The largest ``|mean(d_j)| / (sd(d_j) / sqrt(n))`` over the coordinates
    that vary, and its coordinate (0 and -1 when none does)."""
    sd = np.std(diff, axis=0, ddof=1)
    varies = sd > 0
    if not np.any(varies):
        return 0.0, -1
    z = np.abs(np.mean(diff[:, varies], axis=0)) / (sd[varies] / np.sqrt(n))
    return float(np.max(z)), int(np.flatnonzero(varies)[np.argmax(z)])


def _user_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the first frame outside
    NumPyro, JAX and this package (the user's call, as NumPyro's
    ``find_stack_level`` does for NumPyro's own warnings)."""
    internal = (
        str(Path(jax.__file__).parent),
        str(Path(numpyro.__file__).parent),
        str(Path(__file__).parent),
    )
    frame, level = inspect.currentframe(), 0
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    return max(level, 1)


def warn(message: str, category: type[Warning] = DilationWarning) -> None:
    """``warnings.warn`` attributed to the user's call (not to NumPyro's or
    this package's code), so that the user's warning filters apply to it."""
    warnings.warn(message, category, stacklevel=_user_stacklevel())


def _warn(messages: list[str]) -> None:
    for message in messages:
        warn(message)


class WarmupReference(NamedTuple):
    """What ``track`` keeps between warmup iterations."""

    position: Array  # target-space positions at iteration W - k
    accept_sum: Array  # each particle's summed acceptance since W - k


def init_reference(state: sampler.SamplerState) -> WarmupReference:
    """The reference of a fresh population: zeros until ``track`` fills it
    (NumPy, so that starting a run compiles nothing)."""
    position = state.particles.position
    return WarmupReference(
        np.zeros(position.shape, position.dtype),
        np.zeros(position.shape[:1], position.dtype),
    )


def track(state: sampler.SamplerState, reference: WarmupReference) -> WarmupReference:
    """The end-of-warmup check's statistics, updated after every warmup iteration.

    ``reference`` keeps the target-space positions at iteration ``W - k`` (the
    calendar's ``monitor_start``; ``k`` is half the tuning phase) and sums each
    particle's acceptance probability over the ``k`` iterations that follow.
    """
    start = state.calendar.monitor_start
    # A copy at one iteration only (a select over all particles every
    # iteration costs as much as a cheap target's gradient).
    position = jax.lax.cond(
        state.iteration == start,
        sampler.target_position,
        lambda _: reference.position,
        state,
    )
    accept_sum = jnp.where(
        state.iteration > start, reference.accept_sum + state.particles.accept_prob, 0.0
    )
    return WarmupReference(position, accept_sum.astype(reference.accept_sum.dtype))


def _end_of_warmup_messages(
    move: Move | None, accept_sum, diverging, before, after, window: int
) -> list[str]:
    if window < MIN_WINDOW:
        return []
    return population_warnings(
        np.asarray(accept_sum) / window,
        np.asarray(diverging),
        np.asarray(before),
        np.asarray(after),
        window,
        "at the end of warmup",
        move,
    )


def _warn_from_callback(
    move: Move | None, accept_sum, diverging, before, after, window
) -> None:
    # Raising inside a callback would surface as an opaque XLA error: under a
    # filter that turns warnings into errors, print the message instead.
    for message in _end_of_warmup_messages(
        move, accept_sum, diverging, before, after, int(window)
    ):
        try:
            warnings.warn(message, DilationWarning, stacklevel=2)
        except DilationWarning:
            print(f"DilationWarning: {message}", file=sys.stderr)


class EndOfWarmup(NamedTuple):
    """The end-of-warmup check's inputs, computed where the warmup ran (inside
    its compiled program) so that only the host-side test is left."""

    accept_sum: Array  # each particle's summed acceptance over the window
    diverging: Array  # the last iteration's divergence flags
    before: Array  # target-space positions at iteration W - k
    after: Array  # target-space positions after warmup
    window: Array  # k


def end_of_warmup(
    state: sampler.SamplerState, reference: WarmupReference
) -> EndOfWarmup:
    """What ``warn_end_of_warmup`` tests, from the population after warmup."""
    return EndOfWarmup(
        reference.accept_sum,
        state.particles.diverging,
        reference.position,
        sampler.target_position(state),
        calendar.monitor_window(state.calendar),
    )


def warn_end_of_warmup(statistics: EndOfWarmup, move: Move | None = None) -> None:
    """Raise the warnings of ``population_warnings`` over the last ``k`` warmup
    iterations (``statistics`` from ``end_of_warmup``; ``move``, what moved the
    particles while tuning) as ``DilationWarning``, attributed to the user's
    call.

    Under a JAX transformation (the values are not concrete) the check runs in
    a ``jax.debug.callback`` when the computation reaches it instead.
    """
    if any(isinstance(a, jax.core.Tracer) for a in statistics):
        jax.debug.callback(partial(_warn_from_callback, move), *statistics)
        return
    *args, window = statistics
    _warn(_end_of_warmup_messages(move, *args, int(window)))


def check_run(mcmc: Any, warn: bool = True) -> list[str]:
    """The seven checks over the sampling phase of a finished ``MCMC`` run.

    Uses the collected ``accept_prob`` and ``diverging`` (default fields of
    ``DilationKernel``) and the draws of the first and last sample of every
    particle. The advice names the settings the run did not use (the kernel's
    ``move``). Returns the messages, and raises them as ``DilationWarning``
    when ``warn``.
    """
    fields = mcmc.get_extra_fields(group_by_chain=True)
    missing = {"accept_prob", "diverging"} - set(fields)
    if missing:
        raise ValueError(
            f"check_run needs the fields {sorted(missing)}: run MCMC without "
            "removing DilationKernel's default fields."
        )
    leaves = jax.tree.leaves(mcmc.get_samples(group_by_chain=True))
    draws = np.concatenate(
        [np.reshape(np.asarray(x, float), np.shape(x)[:2] + (-1,)) for x in leaves],
        axis=-1,
    )
    messages = population_warnings(
        np.mean(np.asarray(fields["accept_prob"]), axis=1),
        np.asarray(fields["diverging"]),
        draws[:, 0],
        draws[:, -1],
        (draws.shape[1] - 1) * mcmc.thinning,
        "during sampling",
        getattr(mcmc.sampler, "move", None),
    )
    if warn:
        _warn(messages)
    return messages
