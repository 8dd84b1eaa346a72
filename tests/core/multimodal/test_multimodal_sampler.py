"""The multimodal machinery inside the sampler and the kernel: mode weights right,
exact (frozen) sampling phase, nothing changed for a unimodal target."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from runs import run_vectorized

from numpyro_dilation import DilationKernel, core, mode_summary
from numpyro_dilation.validation import targets


def run_sampler(target, num_particles, num_warmup, num_samples, options, seed=0):
    """Pure-JAX run; returns the state after warmup, the final state, the
    positions after every iteration and the per-iteration infos.

    The iterations run in chunks of equal length through one compiled scan of
    ``core.step`` (the calendar is in the state), so XLA compiles one step.
    """
    fn = jax.value_and_grad(target.logdensity_fn)
    init = jax.random.uniform(
        jax.random.PRNGKey(seed + 1), (num_particles, target.dim), minval=-2, maxval=2
    )
    state = core.init(init, fn, core.build_calendar(num_warmup, options), options)

    @jax.jit
    def chunk(state, keys):
        def body(state, key):
            state, info = core.step(key, state, fn, options)
            return state, (core.target_position(state), info)

        return jax.lax.scan(body, state, keys)

    length = math.gcd(num_warmup, num_samples)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_warmup + num_samples)
    outputs = []
    for start in range(0, num_warmup + num_samples, length):
        state, out = chunk(state, keys[start : start + length])
        outputs.append(out)
        if start + length == num_warmup:
            warm = state
    positions, infos = jax.tree.map(lambda *a: jnp.concatenate(a), *outputs)
    return warm, state, positions, infos


def test_unequal_widths_off_centre_weights_and_frozen_sampling():
    # Modes N(-2, 0.5^2) (weight 0.3) and N(5, 1.5^2) (0.7) on x_0, d = 8:
    # the plain path puts 42% in the light mode. The draws of one iteration
    # are 2048 particles; an average over iterations of a stationary sequence
    # has at most the variance of one iteration, so 5 sd = 5 sqrt(0.21/2048).
    target = targets.asymmetric_mixture(8)
    n = 2048
    tolerance = 5 * np.sqrt(0.21 / n)
    for options, expect_right in [
        (core.SamplerOptions(rebalance=False, jump_prob=0.0), False),
        (core.SamplerOptions(), True),
    ]:
        warm, final, positions, info = run_sampler(target, n, 200, 100, options)
        share = float(jnp.mean(positions[200:, :, 0] < 0.5))
        assert (abs(share - 0.3) < tolerance) == expect_right, (options, share)
    # The corrected run (the last of the loop): two modes, jumps accepted,
    # everything frozen after warmup.
    assert int(final.modes.num_modes) == 2
    assert bool(info.is_rebalance[199]) and int(jnp.sum(info.is_rebalance)) == 1
    assert 0 < int(jnp.sum(info.is_jump[200:])) < 100
    assert float(jnp.mean(final.particles.jump_accept_prob)) > 0.1
    frozen = ("modes", "jump_block", "inv_mass", "step_size")
    same = jax.tree.map(
        np.array_equal,
        [getattr(warm, f) for f in frozen],
        [getattr(final, f) for f in frozen],
    )
    assert jax.tree.all(same), same


def test_a_unimodal_target_is_left_to_the_langevin_steps():
    # One mode: no jump is ever made, and no rebalancing either (one mode
    # found at the end of annealing: calendar.single_mode), so every tuning
    # iteration moves the particles.
    target = targets.gaussian_mixture(jnp.zeros((1, 3)), 1.0, jnp.ones(1))
    options = core.SamplerOptions()
    warm, final, positions, info = run_sampler(target, 256, 60, 20, options)
    assert int(final.modes.num_modes) == 1
    assert not bool(jnp.any(info.is_jump))
    assert not bool(jnp.any(info.is_rebalance))
    assert np.all(np.asarray(final.particles.jump_accept_prob) == 0)
    tuning = positions[int(warm.calendar.num_anneal) :]
    assert not np.any(np.all(tuning[1:] == tuning[:-1], axis=(1, 2)))


def test_kernel_two_unequal_modes_and_mode_summary():
    # SLIPS two modes 2:1 in d = 8, the heavy one farther from the centres:
    # the plain path gives it 20%. Tolerance as above with 1024 particles.
    target = targets.two_unequal_modes(8)
    n = 1024
    init = jax.random.uniform(jax.random.PRNGKey(1), (n, 8), minval=-2, maxval=2)
    mcmc = run_vectorized(
        DilationKernel(potential_fn=lambda x: -target.logdensity_fn(x)),
        num_warmup=200,
        num_samples=100,
        num_chains=n,
        init_params=init,
        extra_fields=("jump_accept_prob",),
    )
    draws = mcmc.get_samples()
    share = float(jnp.mean(targets.nearest_mode(draws, target.means) == 0))
    tolerance = 5 * np.sqrt((2 / 9) / n)
    assert abs(share - 2 / 3) < tolerance, share
    accept = mcmc.get_extra_fields(group_by_chain=True)["jump_accept_prob"]
    assert accept.shape == (n, 100) and float(jnp.mean(accept)) > 0.1
    summary = mode_summary(mcmc)
    assert summary.num_modes == 2
    assert np.allclose(summary.weights, [2 / 3, 1 / 3], atol=tolerance)
    assert np.allclose(summary.estimated_weights, [2 / 3, 1 / 3], atol=tolerance)
    assert np.allclose(summary.locations, target.means, atol=0.05)
    assert "2 mode(s)" in str(summary)
