"""The locally adaptive step size (``core.autostep``): its selection rule, the
reversal of its search, and exact invariance on a Gaussian and on a funnel."""

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


def _funnel(x):
    return jax.value_and_grad(FUNNEL.logdensity_fn)(x)


def _criteria(x, v, base, num_steps):
    """``c(theta_0 2^i)`` for every ``i`` in ``[-MAX, MAX]``, by brute force."""
    state = langevin.init(x, _funnel)
    out = []
    for i in range(-MAX_DOUBLINGS, MAX_DOUBLINGS + 1):
        end, w = hmc.integrate(state, v, _funnel, base * 2.0**i, num_steps, PRECOND)
        r = float(
            hmc.log_acceptance_ratio(
                state,
                end,
                hmc.kinetic_energy(v, PRECOND),
                hmc.kinetic_energy(w, PRECOND),
            )
        )
        out.append(-abs(r) if np.isfinite(r) else -np.inf)
    return np.array(out)


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
    exponents = set()
    for i in range(12):
        v = rng.normal(size=4).astype(np.float32)
        log_band = np.log(np.sort(rng.uniform(size=2)))
        sel = autostep.select(
            langevin.init(jnp.asarray(x[i]), _funnel),
            jnp.asarray(v),
            jnp.asarray(log_band),
            _funnel,
            0.5,
            num_steps,
            PRECOND,
            MAX_DOUBLINGS,
        )
        want = _rule(
            _criteria(jnp.asarray(x[i]), jnp.asarray(v), 0.5, num_steps), *log_band
        )
        assert int(sel.exponent) == want, (i, int(sel.exponent), want)
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
    args = (_funnel, 0.5, 1, PRECOND, MAX_DOUBLINGS)

    def both(x, z, log_band):
        state = langevin.init(x, _funnel)
        forward = autostep.select(state, z, log_band, *args)
        back, w = hmc.integrate(
            forward.proposal,
            -forward.velocity,
            _funnel,
            0.5 * 2.0 ** forward.exponent.astype(jnp.float32),
            1,
            PRECOND,
        )
        backward = autostep.select(
            forward.proposal,
            -forward.velocity,
            log_band,
            *args,
            known=(forward.exponent, autostep._criterion(forward.log_ratio)),
        )
        return forward.exponent, backward.exponent, back.position, w

    j, j_back, x_back, w = jax.jit(jax.vmap(both))(x, z, log_band)
    finite = np.all(np.isfinite(np.asarray(x_back)), axis=1)
    assert finite.mean() > 0.99
    np.testing.assert_allclose(x_back[finite], x[finite], atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(w[finite], -z[finite], atol=2e-3, rtol=2e-3)
    assert np.mean(np.asarray(j) == np.asarray(j_back)) > 0.8
    assert np.min(j) < -1 and np.max(j) > 0


def _moves(x, num_moves, base, num_steps, seed):
    n = x.shape[0]
    state = jax.vmap(lambda x: langevin.init(x, _funnel))(x)

    @jax.jit
    def move(key, state):
        key_z, key_u, key_band = jax.random.split(key, 3)
        z = jax.random.normal(key_z, x.shape)
        log_u = jnp.log(jax.random.uniform(key_u, (n,)))
        band = jax.random.uniform(key_band, (n, 2))
        return jax.vmap(
            lambda z, u, b, s: autostep.step_from_noise(
                z, u, b, s, _funnel, base, num_steps, PRECOND, MAX_DOUBLINGS
            )
        )(z, log_u, band, state)

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
    # steps span at least 2^3 (one shared step could not serve all).
    n = 20000
    x = FUNNEL.sample_fn(jax.random.PRNGKey(3), n)
    y, rate, exponents = _moves(x, 3, 0.5, num_steps, seed=20)
    assert rate > 0.2
    assert np.quantile(exponents, 0.95) - np.quantile(exponents, 0.05) >= 3
    x0 = y[:, 0]
    assert abs(x0.mean()) / (3.0 / np.sqrt(n)) < 5
    sq = x0**2
    assert abs(sq.mean() - 9.0) / (sq.std() / np.sqrt(n)) < 5
    tail = (x0 < -3).astype(float)
    assert abs(tail.mean() - 0.158655) / np.sqrt(0.158655 * 0.841345 / n) < 5
    moved = np.mean(np.any(y != np.asarray(x), axis=1))
    assert moved > 0.5
