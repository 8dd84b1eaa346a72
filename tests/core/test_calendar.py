"""The warmup calendar: what docs/calendar.md states, the sampler follows it, and
the kernel's defaults are the core's."""

import inspect
import re
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpyro_dilation import DilationKernel, core
from numpyro_dilation.core import calendar, sampler

DOC = Path(__file__).parents[2] / "docs" / "calendar.md"


def _documented_mode_fits() -> dict[int, list[int]]:
    """Rows ``| W | A | t, t, ... |`` of the table of mode fits in the docs."""
    rows = re.findall(
        r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*([\d, ]+?)\s*\|", DOC.read_text(), re.M
    )
    return {int(w): [int(t) for t in fits.split(",")] for w, _, fits in rows}


def test_the_documented_mode_fits_are_the_calendars():
    documented = _documented_mode_fits()
    assert 500 in documented and len(documented) >= 3
    for num_warmup, fits in documented.items():
        found = calendar.mode_fit_iterations(calendar.build_calendar(num_warmup))
        assert found.tolist() == fits, num_warmup


@settings(max_examples=30, deadline=None, derandomize=True)
@given(num_warmup=st.integers(8, 2000), fraction=st.floats(0.0, 0.9))
def test_mode_fits_are_while_tuning_four_or_five_and_the_rebalancing(
    num_warmup, fraction
):
    cal = calendar.build_calendar(num_warmup, anneal_fraction=fraction)
    num_anneal, tune = int(cal.num_anneal), num_warmup - int(cal.num_anneal)
    fits = calendar.mode_fit_iterations(cal)
    if tune == 0:
        assert fits.size == 0
        return
    assert fits[0] == num_anneal and fits[-1] == num_warmup - 1
    assert np.all((fits >= num_anneal) & (fits < num_warmup))
    periodic = [t for t in fits if (t - num_anneal) % max(tune // 4, 1) == 0]
    if tune >= 8:
        assert len(periodic) == (4 if tune % 4 == 0 else 5)
    # Options switch them off: no jumps, no periodic fits; no rebalancing, none
    # at the end.
    no_jumps = calendar.build_calendar(
        num_warmup, core.SamplerOptions(jump_prob=0.0), anneal_fraction=fraction
    )
    assert calendar.mode_fit_iterations(no_jumps).tolist() == [num_warmup - 1]
    neither = calendar.build_calendar(
        num_warmup,
        core.SamplerOptions(jump_prob=0.0, rebalance=False),
        anneal_fraction=fraction,
    )
    assert calendar.mode_fit_iterations(neither).size == 0


def test_windows_lie_inside_the_tuning_phase():
    cal = calendar.build_calendar(500)
    assert int(cal.num_anneal) == 250
    assert 250 <= int(cal.step_size_window_start) < 500
    assert int(calendar.monitor_window(cal)) == 125
    assert int(cal.monitor_start) == 375


def test_straggler_checks_are_every_period_from_the_end_of_annealing():
    cal = calendar.build_calendar(500)
    t = np.arange(700)
    checks = np.flatnonzero(np.asarray(calendar.is_straggler_check(cal, t)))
    np.testing.assert_array_equal(
        checks, np.arange(250, 500, calendar.STRAGGLER_PERIOD)
    )


def _run_calendar(logdensity, num_warmup=40, n=64, d=2):
    options = core.SamplerOptions()
    cal = core.build_calendar(num_warmup, options, num_levels=4)
    fn = jax.value_and_grad(logdensity)
    centers = jax.random.normal(jax.random.PRNGKey(0), (n, d))
    state = core.init(centers, fn, cal, options)

    def body(state, key):
        state, info = core.step(key, state, fn, options)
        return state, (info, state.inv_mass)

    keys = jax.random.split(jax.random.PRNGKey(1), num_warmup + 5)
    state, (info, inv_mass) = jax.jit(lambda s: jax.lax.scan(body, s, keys))(state)
    return cal, state, info, inv_mass


def test_the_sampler_follows_the_calendar():
    # Level changes (re-evaluations) where the calendar's level changes, one
    # rebalancing at W - 1, no jump before the tuning phase: two modes.
    num_warmup = 40

    def logdensity(x):
        return jnp.logaddexp(
            -0.5 * jnp.sum((x - 4.0) ** 2), -0.5 * jnp.sum((x + 4.0) ** 2)
        )

    cal, state, info, _ = _run_calendar(logdensity, num_warmup)
    assert int(state.modes.num_modes) == 2
    t = jnp.arange(num_warmup + 5)
    levels = np.asarray(jax.vmap(lambda i: calendar.level_at(cal, i))(t))
    changed = np.concatenate([[False], levels[1:] != levels[:-1]])
    np.testing.assert_array_equal(np.asarray(info.is_rescale), changed)
    assert np.flatnonzero(np.asarray(info.is_rebalance)).tolist() == [num_warmup - 1]
    assert not np.any(np.asarray(info.is_jump)[: int(cal.num_anneal)])
    np.testing.assert_array_equal(
        calendar.mode_fit_iterations(state.calendar),
        calendar.mode_fit_iterations(cal),
    )


def test_the_preconditioner_is_kept_through_the_second_half_of_tuning():
    # Estimated at every iteration of the first half of tuning, A <= t < W - k,
    # then kept: the check window and the sampling phase move under one
    # metric (calendar.estimates_preconditioner).
    scales = jnp.array([1.0, 3.0])
    cal, _, _, inv_mass = _run_calendar(lambda x: -0.5 * jnp.sum((x / scales) ** 2))
    m = np.asarray(inv_mass)  # after each iteration t, sampling's included
    start, kept = int(cal.num_anneal), int(cal.monitor_start)
    assert start < kept < int(cal.num_warmup)
    estimated = calendar.estimates_preconditioner(cal, np.arange(len(m)))
    assert np.flatnonzero(np.asarray(estimated)).tolist() == list(range(start, kept))
    assert np.all(np.any(np.diff(m[start - 1 : kept], axis=0) != 0, axis=1))
    np.testing.assert_array_equal(
        m[kept:], np.broadcast_to(m[kept - 1], m[kept:].shape)
    )


def test_one_mode_at_the_end_of_annealing_drops_later_fits_and_rebalancing():
    # calendar.single_mode: a unimodal population is fitted once, at t = A,
    # and never rebalanced; its tuning iterations are all moves.
    cal, state, info, _ = _run_calendar(lambda x: -0.5 * jnp.sum((x - 3.0) ** 2))
    assert int(state.modes.num_modes) == 1
    num_anneal = int(cal.num_anneal)
    assert calendar.mode_fit_iterations(state.calendar).tolist() == [num_anneal]
    assert len(calendar.mode_fit_iterations(cal)) > 1
    assert not np.any(np.asarray(info.is_rebalance))
    assert not np.any(np.asarray(info.is_jump))


@pytest.mark.parametrize(
    "name, source",
    [
        ("anneal_fraction", calendar.build_calendar),
        ("num_levels", calendar.build_calendar),
        ("schedule", calendar.build_calendar),
        ("lambda_min", calendar.build_calendar),
        ("step_size", core.init),
    ],
)
def test_the_kernel_defaults_are_the_cores(name, source):
    kernel = inspect.signature(DilationKernel.__init__).parameters[name].default
    assert kernel == inspect.signature(source).parameters[name].default


@pytest.mark.parametrize("name", ["jump_prob", "max_modes", "rebalance"])
def test_the_kernel_option_defaults_are_the_cores(name):
    kernel = inspect.signature(DilationKernel.__init__).parameters[name].default
    assert kernel == core.DEFAULT_OPTIONS._asdict()[name]


def test_a_step_for_one_phase_holds_that_phase_work_only():
    # sampler.step_from_keys(phase=ANNEAL) at every annealing iteration and
    # (phase=TUNE) at every tuning one gives the state of the step for either
    # phase (up to rounding), and compiles only that phase's work: the
    # annealing's step evaluates the model once (its Langevin move, no jump,
    # rebalancing or HMC trajectory), the tuning's everything but the
    # annealing's move when that is not its own (HMC moves; with MALA moves
    # it is). Two modes, so jumps and the rebalancing run.
    num_warmup, n, d = 24, 64, 2
    traced = []

    def logdensity(x):
        traced.append(None)
        return jnp.logaddexp(
            -0.5 * jnp.sum((x - 4.0) ** 2), -0.5 * jnp.sum((x + 4.0) ** 2)
        )

    fn = jax.value_and_grad(logdensity)
    centers = 6.0 * jax.random.normal(jax.random.PRNGKey(0), (n, d))
    keys = sampler.iteration_keys(jax.random.PRNGKey(1))[1]
    for hmc in (False, True):
        options = core.SamplerOptions(hmc=hmc)
        cal = core.build_calendar(num_warmup, options, num_levels=3)
        state = core.init(centers, fn, cal, options)

        def step(phase, keys, s, options=options):
            return sampler.step_from_keys(keys, s, fn, options, fit=False, phase=phase)

        evaluations = {}
        for phase in (None, sampler.ANNEAL, sampler.TUNE):
            traced.clear()
            jax.make_jaxpr(partial(step, phase))(keys, state)
            evaluations[phase] = len(traced)
        assert evaluations[sampler.ANNEAL] == 1
        assert evaluations[sampler.TUNE] == evaluations[None] - hmc > 1

    # The same states, with HMC moves (the last options).
    steps = {phase: jax.jit(partial(step, phase)) for phase in evaluations}
    fit = jax.jit(lambda keys, s: sampler.fit_modes(keys.modes, s, fn, options))
    fits = calendar.mode_fit_iterations(cal)
    key = jax.random.PRNGKey(2)
    for t in range(num_warmup):
        key, keys = sampler.iteration_keys(key)
        if t in fits:
            state = fit(keys, state)
        phase = sampler.ANNEAL if t < int(cal.num_anneal) else sampler.TUNE
        expected, info = steps[None](keys, state)
        got, got_info = steps[phase](keys, state)
        pairs = zip(
            jax.tree.leaves((got, got_info)),
            jax.tree.leaves((expected, info)),
            strict=True,
        )
        for a, b in pairs:
            # Up to rounding: XLA fuses the smaller program otherwise (1 ulp
            # in one coordinate seen at t = A).
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"t={t}")
        state = expected
    assert int(state.modes.num_modes) == 2
    with pytest.raises(ValueError, match="phase must be one of"):
        step("sample", keys, state)
