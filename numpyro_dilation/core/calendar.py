"""The warmup calendar: every phase, window and event of a run's warmup, from
``num_warmup`` and the options, computed in one place (as NumPyro's
``build_adaptation_schedule`` and BlackJAX's ``build_schedule``).

With ``W = num_warmup`` warmup iterations, ``A = round(anneal_fraction * W)``
of them annealing, ``T = W - A`` tuning at ``l = 1`` and ``K`` levels:

* anneal, ``0 <= t < A``: level ``l_t = levels[floor(t K / A)]``; a new level's
  first iteration re-evaluates the particles under it (no move);
* tune, ``A <= t < W``: the preconditioner is estimated from the population
  every iteration of the first half, ``A <= t < W - k`` (``k`` below), and
  kept for the second, so that the population relaxes, and the end-of-warmup
  check watches it, under a fixed metric; stragglers are looked for and
  replaced at ``t = A + j s``, ``s = STRAGGLER_PERIOD = 10`` (each search is a
  radix selection over the population, several dependent reductions when it
  is split over processes);
* mode fits (when jumps are on): ``t = A + j p`` for ``j = 0, 1, ...`` while
  ``t < W``, period ``p = max(floor(T / 4), 1)``: ``ceil(T / p)`` fits, that is
  four when 4 divides ``T`` and five otherwise (for ``T >= 8``);
* rebalancing (when on and ``T > 0``): the modes are fitted once more at
  ``t = W - 1``, their masses corrected and particles resampled between them
  (back to back with the last periodic fit when that falls at ``W - 2``);
* one mode: when the fit at ``t = A`` (the end of annealing, where the
  population has reached every mode it will hold) finds at most one mode, the
  calendar drops the later fits and the rebalancing (``single_mode``): the
  tuning and sampling phases then never jump, so a unimodal run compiles
  none of that code (the kernel's warmup runs in segments for that);
* step size: adapted from ``t = 0`` to ``W - 1``; its log is averaged over the
  final window ``t >= W - max(floor(T / 4), 1)`` and frozen at that mean;
* end-of-warmup check (``diagnostics.track``): over the last
  ``k = floor(T / 2)`` warmup iterations, ``W - k <= t < W``.

``mode_fit_iterations`` lists the fits of a calendar; at ``W = 500`` (defaults)
they are ``t = 250, 312, 374, 436, 498`` and the rebalancing fit at ``499``.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array

from numpyro_dilation.core.level_schedule import ScheduleLike, make_levels
from numpyro_dilation.core.options import DEFAULT_OPTIONS, SamplerOptions

__all__ = [
    "Calendar",
    "build_calendar",
    "level_at",
    "is_tuning",
    "estimates_preconditioner",
    "is_straggler_check",
    "STRAGGLER_PERIOD",
    "is_mode_fit",
    "is_rebalance",
    "in_step_size_window",
    "monitor_window",
    "mode_fit_iterations",
    "keeps_one_mode",
    "single_mode",
]


STRAGGLER_PERIOD = 10


class Calendar(NamedTuple):
    """One run's warmup calendar (part of the state: ``num_warmup`` is dynamic).

    - **levels**: ``(K,)`` the dilation levels ``l_0 <= ... <= l_{K-1} = 1``.
    - **num_anneal**: ``A``; **num_warmup**: ``W``.
    - **mode_fit_period**: ``p``; 0 when there are no periodic mode fits.
    - **mode_fit_end**: periodic fits happen at ``t < mode_fit_end`` (``W``;
      ``A + 1`` after ``single_mode``).
    - **rebalance_at**: ``W - 1``, or -1 when there is no rebalancing.
    - **step_size_window_start**: first iteration of the step-size average.
    - **monitor_start**: ``W - k``, first iteration of the end-of-warmup check.
    """

    levels: Array
    num_anneal: Array
    num_warmup: Array
    mode_fit_period: Array
    mode_fit_end: Array
    rebalance_at: Array
    step_size_window_start: Array
    monitor_start: Array


def build_calendar(
    num_warmup: int,
    options: SamplerOptions = DEFAULT_OPTIONS,
    *,
    anneal_fraction: float = 0.5,
    num_levels: int | None = None,
    schedule: ScheduleLike = "geometric",
    lambda_min: float = 1e-4,
    dtype=jnp.float32,
) -> Calendar:
    """The calendar of a run of ``num_warmup`` warmup iterations.

    :param options: the sampler's options: periodic mode fits when
        ``jump_prob > 0``, the rebalancing when ``rebalance``.
    :param anneal_fraction: ``A / W``.
    :param num_levels: ``K`` (default: one level per 5 annealing iterations).
    :param schedule: the levels (``level_schedule.make_levels``).
    :param lambda_min: first level of the geometric schedule.
    """
    num_anneal = int(round(anneal_fraction * num_warmup))
    num_levels = num_levels or max(1, num_anneal // 5)
    levels = make_levels(schedule, num_levels, lambda_min).astype(dtype)
    num_tune = num_warmup - num_anneal
    period = max(num_tune // 4, 1)
    # NumPy scalars: the calendar is data, computed before anything compiles.
    integer = np.dtype(jnp.result_type(int))
    return Calendar(
        levels=levels,
        num_anneal=np.asarray(num_anneal, integer),
        num_warmup=np.asarray(num_warmup, integer),
        mode_fit_period=np.asarray(period if options.jump_prob > 0 else 0, integer),
        mode_fit_end=np.asarray(num_warmup, integer),
        rebalance_at=np.asarray(
            num_warmup - 1 if options.rebalance and num_tune > 0 else -1, integer
        ),
        step_size_window_start=np.asarray(num_warmup - period, integer),
        monitor_start=np.asarray(num_warmup - num_tune // 2, integer),
    )


def level_at(calendar: Calendar, t: Array) -> Array:
    """``l_t = levels[floor(t K / A)]`` while annealing, then 1."""
    num_levels = calendar.levels.shape[0]
    k = jnp.minimum(
        t * num_levels // jnp.maximum(calendar.num_anneal, 1), num_levels - 1
    )
    level = jnp.asarray(calendar.levels)[k]
    return jnp.where(t < calendar.num_anneal, level, 1.0).astype(calendar.levels.dtype)


def is_tuning(calendar: Calendar, t: Array) -> Array:
    """``A <= t < W``."""
    return (t >= calendar.num_anneal) & (t < calendar.num_warmup)


def estimates_preconditioner(calendar: Calendar, t: Array) -> Array:
    """``A <= t < W - k``: the first half of tuning (the preconditioner is
    kept from ``monitor_start`` on)."""
    return is_tuning(calendar, t) & (t < calendar.monitor_start)


def is_straggler_check(calendar: Calendar, t: Array) -> Array:
    """``t = A + j s`` while tuning, ``s = STRAGGLER_PERIOD``."""
    return is_tuning(calendar, t) & ((t - calendar.num_anneal) % STRAGGLER_PERIOD == 0)


def is_rebalance(calendar: Calendar, t: Array) -> Array:
    """``t = W - 1`` when rebalancing is on."""
    return is_tuning(calendar, t) & (t == calendar.rebalance_at)


def is_mode_fit(calendar: Calendar, t: Array) -> Array:
    """A periodic fit (``t = A + j p``, tuning) or the rebalancing's."""
    period = calendar.mode_fit_period
    periodic = (
        (period > 0)
        & is_tuning(calendar, t)
        & (t < calendar.mode_fit_end)
        # period + (period == 0): the period, or 1 when there is none (operators
        # only, so that a NumPy calendar gives NumPy answers, see below).
        & ((t - calendar.num_anneal) % (period + (period == 0)) == 0)
    )
    return periodic | is_rebalance(calendar, t)


def keeps_one_mode(calendar: Calendar, t: Array, num_modes: Array) -> Array:
    """The mode fit at ``t`` ends the annealing (``t = A``) and found at most
    one mode: the population is unimodal from there (``single_mode``)."""
    return (t == calendar.num_anneal) & (num_modes <= 1)


def single_mode(calendar: Calendar, t: Array, num_modes: Array) -> Calendar:
    """The calendar after the mode fit at ``t``: without the later fits and the
    rebalancing when ``keeps_one_mode`` (their draws would never be used: jumps
    need two modes, and one mode keeps its particles), else unchanged."""
    one = keeps_one_mode(calendar, t, num_modes)
    return calendar._replace(
        mode_fit_end=jnp.where(one, calendar.num_anneal + 1, calendar.mode_fit_end),
        rebalance_at=jnp.where(one, -1, calendar.rebalance_at),
    )


def in_step_size_window(calendar: Calendar, t: Array) -> Array:
    """``t`` is in the final window whose mean step size is frozen."""
    return t >= calendar.step_size_window_start


def monitor_window(calendar: Calendar) -> Array:
    """``k``: the number of iterations the end-of-warmup check looks back over."""
    return calendar.num_warmup - calendar.monitor_start


def mode_fit_iterations(calendar: Calendar) -> np.ndarray:
    """The iterations at which the modes are fitted (host-side, in NumPy:
    nothing is compiled for it)."""
    host = Calendar(*(np.asarray(field) for field in calendar))
    return np.flatnonzero(is_mode_fit(host, np.arange(int(host.num_warmup))))
