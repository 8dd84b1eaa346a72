"""The HMC move (``core.hmc``) and its ChEES trajectory-length adaptation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_dilation.core import adaptation, hmc, langevin
from numpyro_dilation.core.preconditioner import make_preconditioner

COV = np.array([[2.0, 0.9], [0.9, 0.6]])
PRECISION = jnp.asarray(np.linalg.inv(COV), jnp.float32)


def _gaussian(x):
    return jax.value_and_grad(lambda x: -0.5 * x @ PRECISION @ x)(x)


def _energy_error(step_size, num_steps, precond, seed=0):
    key_x, key_z = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(key_x, (2,))
    z = jax.random.normal(key_z, (2,))
    state = langevin.init(x, _gaussian)
    # log U = -inf accepts; the acceptance rate is min(1, exp(-dH)).
    _, info = hmc.step_from_noise(
        z, -jnp.inf, state, _gaussian, step_size, num_steps, precond
    )
    return -jnp.log(info.acceptance_rate)


def test_jitter_is_the_van_der_corput_sequence():
    got = jax.vmap(hmc.jitter)(jnp.arange(7))
    np.testing.assert_allclose(got, [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875])


def test_num_integration_steps_is_ceil_and_clipped():
    assert int(hmc.num_integration_steps(1.0, 0.3, 1.0, 100)) == 4
    assert int(hmc.num_integration_steps(1.0, 0.3, 0.01, 100)) == 1
    assert int(hmc.num_integration_steps(1e6, 0.3, 1.0, 100)) == 100
    assert int(hmc.num_integration_steps(jnp.nan, 0.3, 1.0, 100)) == 1


@pytest.mark.parametrize("dense", [False, True])
def test_leapfrog_energy_error_is_second_order(dense):
    # Over a fixed time the leapfrog's energy error is O(h^2): halving h
    # divides it by about 4 (between 2.5 and 6 here); a wrong kinetic energy or
    # preconditioner would leave an O(1) error instead.
    inv_mass = jnp.asarray(COV if dense else np.diag(COV), jnp.float32)
    precond = make_preconditioner(inv_mass)
    coarse = max(abs(float(_energy_error(0.2, 10, precond, s))) for s in range(5))
    fine = max(abs(float(_energy_error(0.1, 20, precond, s))) for s in range(5))
    assert 2.5 < coarse / fine < 6.0
    assert coarse < 0.2


@pytest.mark.parametrize("dense", [False, True])
def test_one_leapfrog_step_is_the_mala_step_of_half_its_square(dense):
    # The identity by which the sampler hands the annealing's MALA step h to
    # HMC as the leapfrog step e = sqrt(2 h) (core.sampler): from v_0 = L z, one
    # leapfrog step proposes y + e^2 / 2 M grad + e L z, MALA's proposal with
    # noise z, and accepts with MALA's ratio. Float32 rounding apart (1e-5).
    inv_mass = jnp.asarray(COV if dense else np.diag(COV), jnp.float32)
    precond = make_preconditioner(inv_mass)
    keys = jax.random.split(jax.random.PRNGKey(3), 32)
    x = 2.0 * jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
    z = jax.vmap(lambda k: jax.random.normal(k, (2,)))(jax.random.split(keys[0], 32))
    state = jax.vmap(lambda x: langevin.init(x, _gaussian))(x)
    h = jnp.geomspace(0.02, 0.5, 32)  # acceptances from 1 to about 0

    def both(z, state, h):
        by_hmc = hmc.step_from_noise(
            z, -jnp.inf, state, _gaussian, jnp.sqrt(2 * h), 1, precond
        )
        return by_hmc, langevin.step_from_noise(
            z, -jnp.inf, state, _gaussian, h, precond
        )

    (by_hmc, hmc_info), (by_mala, mala_info) = jax.vmap(both)(z, state, h)
    np.testing.assert_allclose(by_hmc.position, by_mala.position, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        hmc_info.acceptance_rate, mala_info.acceptance_rate, rtol=1e-5, atol=1e-7
    )
    # Ratios, not only clipped ones: min(1, exp(r)) below 1 for several.
    assert np.sum(np.asarray(mala_info.acceptance_rate) < 1.0) >= 3


def test_hmc_leaves_a_gaussian_invariant():
    # 20000 exact draws, 3 trajectories each at a step size that rejects about
    # a quarter: the moments stay those of N(0, COV). Each check is a z-score
    # against the Monte Carlo error of 20000 draws (independent across
    # particles), |z| < 5 (false alarm 6e-7 each).
    n = 20000
    key = jax.random.PRNGKey(1)
    x = jax.random.multivariate_normal(key, jnp.zeros(2), jnp.asarray(COV), (n,))
    precond = make_preconditioner(jnp.ones(2))
    state = jax.vmap(lambda x: langevin.init(x, _gaussian))(x)

    @jax.jit
    def move(key, state):
        key_z, key_u = jax.random.split(key)
        z = jax.random.normal(key_z, (n, 2))
        log_u = jnp.log(jax.random.uniform(key_u, (n,)))
        return jax.vmap(
            lambda z, u, s: hmc.step_from_noise(z, u, s, _gaussian, 0.6, 3, precond)
        )(z, log_u, state)

    rates = []
    for k in range(3):
        state, info = move(jax.random.PRNGKey(10 + k), state)
        rates.append(float(jnp.mean(info.acceptance_rate)))
    assert 0.3 < np.mean(rates) < 0.9
    y = np.asarray(state.position, float)
    sd = np.sqrt(np.diag(COV))
    assert np.all(np.abs(y.mean(0)) / (sd / np.sqrt(n)) < 5)
    for i in range(2):
        sq = y[:, i] ** 2
        assert abs(sq.mean() - COV[i, i]) / (sq.std() / np.sqrt(n)) < 5
    cross = y[:, 0] * y[:, 1]
    assert abs(cross.mean() - COV[0, 1]) / (cross.std() / np.sqrt(n)) < 5


def test_non_finite_endpoint_is_rejected_and_divergent():
    def cliff(x):
        value, grad = _gaussian(x)
        return jnp.where(x[0] > 0.5, jnp.nan, value), grad

    state = langevin.init(jnp.zeros(2), cliff)
    new, info = hmc.step_from_noise(
        jnp.array([3.0, 0.0]),
        -jnp.inf,
        state,
        cliff,
        0.3,
        4,
        make_preconditioner(jnp.ones(2)),
    )
    assert bool(info.is_divergent) and not bool(info.is_accepted)
    np.testing.assert_array_equal(new.position, state.position)


@pytest.mark.parametrize(("length", "sign"), [(0.5, 1.0), (2.5, -1.0)])
def test_chees_gradient_points_to_a_quarter_period(length, sign):
    # On N(0, I) the exact dynamics rotate (x, v) by the angle T; ChEES,
    # E[(|x_T|^2 - |x_0|^2)^2] / 4, is largest at T = pi / 2: its gradient
    # estimate is positive below and negative above. 4096 draws put the
    # estimate's sign beyond doubt (the mean is many standard errors from 0).
    key_x, key_v = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (4096, 5))
    v = jax.random.normal(key_v, (4096, 5))
    end = x * jnp.cos(length) + v * jnp.sin(length)
    velocity = -x * jnp.sin(length) + v * jnp.cos(length)
    weight = jnp.ones(4096)
    end_sums = jnp.sum(adaptation.chees_terms(end, velocity, weight), 0)
    gradient = adaptation.chees_gradient(
        x, end, velocity, weight, length, jnp.mean(x, 0), end_sums
    )
    assert sign * float(gradient) > 0
    # A divergent trajectory (weight 0, non-finite end) counts for nothing:
    # neither in the weighted endpoint sums nor in the mean of g_i.
    bad = jnp.full((1, 5), jnp.nan)
    end_sums_bad = jnp.sum(
        adaptation.chees_terms(
            jnp.concatenate([end, bad]),
            jnp.concatenate([velocity, bad]),
            jnp.append(weight, 0.0),
        ),
        0,
    )
    np.testing.assert_allclose(end_sums_bad, end_sums, rtol=1e-6)
    with_divergent = adaptation.chees_gradient(
        jnp.concatenate([x, jnp.zeros((1, 5))]),
        jnp.concatenate([end, bad]),
        jnp.concatenate([velocity, bad]),
        jnp.append(weight, 0.0),
        length,
        jnp.mean(x, 0),
        end_sums_bad,
    )
    np.testing.assert_allclose(with_divergent, gradient, rtol=1e-5)


def test_trajectory_update_ascends_and_averages_the_final_window():
    state = adaptation.trajectory_init(0.1, 3)
    for k in range(10):
        state = adaptation.trajectory_update(state, jnp.asarray(3.0), 0.05, k >= 5)
    # Adam without momentum on a constant gradient: a step of lr per update.
    np.testing.assert_allclose(state.log_length, np.log(0.1) + 10 * 0.05, rtol=1e-5)
    window = np.log(0.1) + 0.05 * np.arange(6, 11)
    np.testing.assert_allclose(
        adaptation.final_trajectory_length(state), np.exp(window.mean()), rtol=1e-5
    )
    unchanged = adaptation.trajectory_update(state, jnp.asarray(jnp.nan), 0.05, False)
    np.testing.assert_allclose(unchanged.log_length, state.log_length)


def test_trajectory_length_stops_at_the_longest_trajectory():
    # A gradient that keeps asking for longer trajectories (as ChEES's does at
    # the cap, where u T / h > max_steps runs the same capped trajectory) moves
    # T up by lr per update until it reaches max_length, then leaves it there.
    state = adaptation.trajectory_init(0.1, 3)
    max_length = 0.1 * np.exp(0.12)
    for _ in range(10):
        state = adaptation.trajectory_update(
            state, jnp.asarray(3.0), 0.05, False, max_length
        )
    np.testing.assert_allclose(state.log_length, np.log(max_length), rtol=1e-6)
    lower = adaptation.trajectory_update(state, jnp.asarray(-3.0), 0.05, False, 1.0)
    np.testing.assert_allclose(lower.log_length, np.log(max_length) - 0.05, rtol=1e-5)


def test_harmonic_mean_acceptance_leaves_divergent_particles_out():
    accept = jnp.array([0.5, 1.0, 0.0, 0.25])
    diverging = jnp.array([False, False, True, False])

    def harmonic(diverging):
        terms = adaptation.acceptance_terms(accept, diverging, None, harmonic=True)
        return adaptation.acceptance_statistics(jnp.sum(terms, 0), 4, True)[1]

    # 1 / mean(2, 1, 4) over the three that did not diverge.
    value = harmonic(diverging)
    np.testing.assert_allclose(value, 3 / 7, rtol=1e-6)
    # Far below the arithmetic mean (7 / 12) when a few accept little.
    assert float(value) < float(jnp.mean(accept[~diverging]))
    assert float(harmonic(~diverging | True)) == 0


def test_length_floor_is_a_quarter_period_of_the_widest_direction():
    # Whitened population N(c, diag(4, 1, 1, 1, 1)) rotated, far from the
    # origin (c = 1e4 in every coordinate: the sums must not cancel):
    # lambda_max = 4, floor pi sqrt(4) = 2 pi. The top sample eigenvalue of
    # n = 4096 draws has sd about 4 sqrt(2 / n) = 0.088; 5 of them (0.44)
    # move the floor by at most pi (sqrt(4.44) - 2) = 0.34. One power step per
    # call, each converging as 1/4: after 12 calls the direction is within
    # 4^-12 of the top eigenvector; every floor is a lower bound on the last.
    key_x, key_q = jax.random.split(jax.random.PRNGKey(3))
    q, _ = jnp.linalg.qr(jax.random.normal(key_q, (5, 5)))
    x = jax.random.normal(key_x, (4096, 5)) * jnp.array([2.0, 1, 1, 1, 1]) @ q.T
    x = x + 1e4
    state = adaptation.trajectory_init(1.0, 5)
    assert float(adaptation.trajectory_length(state)) == pytest.approx(1.0)
    floors = []
    floored = state
    for _ in range(12):
        floored = adaptation.length_floor(floored, x)
        floors.append(float(floored.floor))
    assert abs(floors[-1] - 2 * np.pi) < 0.34
    assert max(floors) <= floors[-1] * (1 + 1e-5)
    np.testing.assert_allclose(jnp.abs(floored.direction @ q[:, 0]), 1.0, atol=1e-3)
    np.testing.assert_allclose(floored.centre, jnp.mean(x, 0), rtol=1e-6)
    assert float(adaptation.trajectory_length(floored)) == float(floored.floor)
    # Other columns summed in the same reduction leave the floor as it is.
    extra = jnp.stack([jnp.ones(4096), x[:, 0]], axis=1)
    with_extra, extra_sums = adaptation.length_floor(floored, x, extra)
    again = adaptation.length_floor(floored, x)
    np.testing.assert_allclose(with_extra.floor, again.floor, rtol=1e-6)
    np.testing.assert_allclose(extra_sums, jnp.sum(extra, 0), rtol=1e-6)
    longer = floored._replace(log_length=jnp.log(10.0))
    assert float(adaptation.trajectory_length(longer)) == pytest.approx(10.0)
