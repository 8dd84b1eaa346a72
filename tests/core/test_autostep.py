"""The locally adaptive step size (``core.autostep``): its selection rule, the
reversal of its search, and exact invariance on a Gaussian and on a funnel."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_dilation.core import autostep, hmc, langevin
from numpyro_dilation.core.preconditioner import make_preconditioner
from numpyro_dilation.validation import targets

FUNNEL = targets.funnel(4)
PRECOND = make_preconditioner(jnp.ones(4))
MAX_DOUBLINGS = 6


def _funnel(x, aux=None):
    return jax.value_and_grad(FUNNEL.logdensity_fn)(x)


def _states(x):
    return jax.vmap(lambda x: langevin.init(x, _funnel))(x)


def _args(num_steps):
    """The funnel, no per-particle arguments, base step 0.5, ``num_steps``."""
    return (_funnel, None, 0.5, num_steps, PRECOND, MAX_DOUBLINGS)


@functools.partial(jax.jit, static_argnums=3)
def _criteria(x, v, base, num_steps):
    """``c(theta_0 2^i)`` for every particle of ``x`` and every ``i`` in
    ``[-MAX, MAX]``, by brute force: one trajectory per step, ``(n, 2 MAX + 1)``."""
    exponents = jnp.arange(-MAX_DOUBLINGS, MAX_DOUBLINGS + 1, dtype=x.dtype)

    def criterion(x, v, step_size):
        state = langevin.init(x, _funnel)
        end, w = hmc.integrate(state, v, _funnel, step_size, num_steps, PRECOND)
        r = hmc.log_acceptance_ratio(
            state, end, hmc.kinetic_energy(v, PRECOND), hmc.kinetic_energy(w, PRECOND)
        )
        return jnp.where(jnp.isfinite(r), -jnp.abs(r), -jnp.inf)

    every_step = jax.vmap(criterion, in_axes=(None, None, 0))
    return jax.vmap(every_step, in_axes=(0, 0, None))(x, v, base * 2.0**exponents)


def _rule(criteria, log_a, log_b):
    """The module docstring's rule, written out over the brute-force criteria."""
    c = dict(zip(range(-MAX_DOUBLINGS, MAX_DOUBLINGS + 1), criteria, strict=True))
    if log_a <= c[0] < log_b:
        return 0
    if c[0] >= log_b:
        j = 0
        while j < MAX_DOUBLINGS and c[j + 1] >= log_b:
            j += 1
        return j
    j = -1
    while j > -MAX_DOUBLINGS and c[j] < log_a:
        j -= 1
    return j


@pytest.mark.parametrize("num_steps", [1, 3])
def test_selection_follows_the_halving_and_doubling_rule(num_steps):
    # Points over the funnel's neck and mouth, bands from both ends: the
    # selected exponent equals the rule applied to every step's criterion.
    rng = np.random.default_rng(0)
    x = np.asarray(FUNNEL.sample_fn(jax.random.PRNGKey(0), 12))
    v = rng.normal(size=(12, 4)).astype(np.float32)
    log_band = np.log(np.sort(rng.uniform(size=(12, 2)), axis=-1)).astype(np.float32)
    sel = autostep.select(
        _states(jnp.asarray(x)),
        jnp.asarray(v),
        jnp.asarray(log_band),
        *_args(num_steps),
    )
    criteria = np.asarray(_criteria(jnp.asarray(x), jnp.asarray(v), 0.5, num_steps))
    exponents = set()
    for i in range(12):
        want = _rule(criteria[i], *log_band[i])
        assert int(sel.exponent[i]) == want, (i, int(sel.exponent[i]), want)
        exponents.add(want)
    assert min(exponents) < 0 < max(exponents)  # both searches were exercised


def test_search_from_the_proposal_returns_the_same_step():
    # The proposal's trajectory reversed returns to the start, and the
    # selection from the proposal (velocity reversed) gives back the forward
    # exponent for most moves, on the neck and the mouth alike (the mismatches
    # are rejected, which keeps the kernel exact).
    n = 2000
    x = FUNNEL.sample_fn(jax.random.PRNGKey(1), n)
    key_z, key_band = jax.random.split(jax.random.PRNGKey(2))
    z = jax.random.normal(key_z, (n, 4))
    log_band = jnp.log(jnp.sort(jax.random.uniform(key_band, (n, 2)), axis=-1))
    args = _args(1)

    @jax.jit
    def both(x, z, log_band):
        forward = autostep.select(_states(x), z, log_band, *args)
        back, w = jax.vmap(
            lambda start, v, j: hmc.integrate(
                start, v, _funnel, 0.5 * 2.0 ** j.astype(jnp.float32), 1, PRECOND
            )
        )(forward.proposal, -forward.velocity, forward.exponent)
        backward = autostep.select(
            forward.proposal,
            -forward.velocity,
            log_band,
            *args,
            known=(forward.exponent, autostep._criterion(forward.log_ratio)),
        )
        return forward.exponent, backward.exponent, back.position, w

    j, j_back, x_back, w = both(x, z, log_band)
    finite = np.all(np.isfinite(np.asarray(x_back)), axis=1)
    assert finite.mean() > 0.99
    np.testing.assert_allclose(x_back[finite], x[finite], atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(w[finite], -z[finite], atol=2e-3, rtol=2e-3)
    assert np.mean(np.asarray(j) == np.asarray(j_back)) > 0.8
    assert np.min(j) < -1 and np.max(j) > 0


def _moves(x, num_moves, base, num_steps, seed):
    n = x.shape[0]
    state = _states(x)

    @jax.jit
    def move(key, state):
        key_z, key_u, key_band = jax.random.split(key, 3)
        z = jax.random.normal(key_z, x.shape)
        log_u = jnp.log(jax.random.uniform(key_u, (n,)))
        band = jax.random.uniform(key_band, (n, 2))
        return autostep.step_from_noise(
            z,
            log_u,
            band,
            state,
            _funnel,
            None,
            base,
            num_steps,
            PRECOND,
            MAX_DOUBLINGS,
        )

    rates, exponents = [], []
    for k in range(num_moves):
        state, info = move(jax.random.PRNGKey(seed + k), state)
        rates.append(float(jnp.mean(info.acceptance_rate)))
        exponents.append(np.asarray(info.exponent))
    return np.asarray(state.position, float), np.mean(rates), np.concatenate(exponents)


@pytest.mark.parametrize("num_steps", [1, 3])
def test_autostep_leaves_the_funnel_invariant(num_steps):
    # 20000 exact draws of the 4-d funnel (x0 ~ N(0, 9), scales exp(x0 / 2)
    # from 0.01 to 100), 3 moves each: x0's mean, variance and P(x0 < -3)
    # stay exact. Each check is a z-score against the Monte Carlo error of
    # 20000 independent draws, |z| < 5 (false alarm 6e-7 each). The selected
    # steps of the middle 98% span at least 2^4 (one shared step could not
    # serve all; the wide band leaves most moves at the base step).
    n = 20000
    x = FUNNEL.sample_fn(jax.random.PRNGKey(3), n)
    y, rate, exponents = _moves(x, 3, 0.5, num_steps, seed=20)
    assert rate > 0.2
    assert np.quantile(exponents, 0.99) - np.quantile(exponents, 0.01) >= 4
    x0 = y[:, 0]
    assert abs(x0.mean()) / (3.0 / np.sqrt(n)) < 5
    sq = x0**2
    assert abs(sq.mean() - 9.0) / (sq.std() / np.sqrt(n)) < 5
    tail = (x0 < -3).astype(float)
    assert abs(tail.mean() - 0.158655) / np.sqrt(0.158655 * 0.841345 / n) < 5
    moved = np.mean(np.any(y != np.asarray(x), axis=1))
    assert moved > 0.5


@pytest.mark.parametrize("num_steps", [1, 3])
def test_rounds_on_batches_give_every_particle_the_same_search(num_steps):
    # The same moves with the unfinished searches advanced a few at a time
    # (batch_size 4) and all together (batch_size n, every round over the
    # population: the lockstep run): every particle's exponent, tries,
    # proposal and accept decision agree, and the population pays less. Each
    # try is paid for (at least the sum of the tries), and the lockstep run
    # pays the population's longest search on every particle.
    n = 256
    x = FUNNEL.sample_fn(jax.random.PRNGKey(4), n)
    key_z, key_u, key_band = jax.random.split(jax.random.PRNGKey(5), 3)
    z = jax.random.normal(key_z, x.shape)
    log_u = jnp.log(jax.random.uniform(key_u, (n,)))
    band = jax.random.uniform(key_band, (n, 2))

    def run(batch_size):
        return jax.jit(
            lambda s: autostep.step_from_noise(
                z,
                log_u,
                band,
                s,
                *_args(num_steps),
                batch_size,
            )
        )(_states(x))

    (few, few_info), (all_, all_info) = run(4), run(n)
    np.testing.assert_array_equal(few_info.exponent, all_info.exponent)
    np.testing.assert_array_equal(few_info.num_gradients, all_info.num_gradients)
    np.testing.assert_array_equal(few_info.is_accepted, all_info.is_accepted)
    np.testing.assert_allclose(few.position, all_.position, rtol=1e-6, atol=1e-6)
    tries = np.asarray(few_info.num_gradients) / num_steps
    paid_few = float(few_info.population_gradients) * n / num_steps
    paid_all = float(all_info.population_gradients) * n / num_steps
    assert tries.sum() <= paid_few < paid_all
    assert np.std(tries) > 0  # the searches had different lengths
    # Forward and reversed searches each pay their longest on every particle.
    assert paid_all >= n * tries.max()


def test_a_reversed_search_at_the_forward_step_costs_nothing():
    # When the forward search kept j = 0 and the known criterion lies in the
    # band, the reversed search makes no try.
    x = FUNNEL.sample_fn(jax.random.PRNGKey(6), 8)
    z = jax.random.normal(jax.random.PRNGKey(7), x.shape)
    log_band = jnp.log(jnp.tile(jnp.array([0.1, 0.9]), (8, 1)))
    known = (jnp.zeros(8, jnp.int32), jnp.full(8, jnp.log(0.5)))
    sel = autostep.select(_states(x), z, log_band, *_args(1), known)
    np.testing.assert_array_equal(sel.num_tries, 0)
    np.testing.assert_array_equal(sel.exponent, 0)
    assert int(sel.num_evaluations) == 0
