"""Exact inter-mode jumps: invariance, convergence, the choice of block."""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_dilation.core import langevin
from numpyro_dilation.core.multimodal import jumps, modes
from numpyro_dilation.core.multimodal.mixture_fit import GaussianMixture
from numpyro_dilation.validation import targets

ASYMMETRIC = targets.asymmetric_mixture(2)
BARRIER = 0.5  # between the modes at -2 (sd 0.5) and 5 (sd 1.5) on x_0

# A deliberately wrong proposal: weights swapped, means shifted, scales widened.
WRONG = GaussianMixture(
    log_weights=jnp.log(jnp.array([0.7, 0.3])),
    means=ASYMMETRIC.means + 0.5,
    scales=jnp.array([[0.75, 1.5], [2.25, 1.5]]),
)


def run_jumps(target, x, mixture, marginals, coordinate_prob, num_steps, seed=0):
    fn = jax.value_and_grad(target.logdensity_fn)

    @jax.jit
    def go(x):
        state = jax.vmap(lambda xi: langevin.init(xi, fn))(x)

        def body(i, carry):
            state, accept = carry
            key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
            state, info = jumps.step(
                key, state, fn, mixture, marginals, coordinate_prob
            )
            return state, accept + jnp.mean(info.acceptance_rate) / num_steps

        return jax.lax.fori_loop(0, num_steps, body, (state, 0.0))

    state, accept = go(x)
    return np.asarray(state.position), float(accept)


def test_one_jump_leaves_the_target_invariant():
    # Exact draws in, exact draws out: the narrow mode keeps 30% of 40000
    # particles within 5 binomial sd, whatever the (wrong) proposal.
    n = 40000
    x = ASYMMETRIC.sample_fn(jax.random.PRNGKey(1), n)
    new, accept = run_jumps(ASYMMETRIC, x, WRONG, modes.fit_marginals(x), 0.5, 1)
    assert accept > 0.2  # particles did move
    assert not np.allclose(new, x)
    share = np.mean(new[:, 0] < BARRIER)
    assert abs(share - 0.3) < 5 * np.sqrt(0.21 / n), share


def test_full_jumps_converge_from_a_single_mode():
    # All particles start in the narrow mode. Each WRONG component is wider
    # than the target's, so p/q is bounded: sup p/q = 6.1 (on a grid), and the
    # independence sampler forgets its start at rate >= 1/6.1 per step: after
    # 60 steps the remaining bias is below (1 - 1/6.1)^60 < 2e-3.
    n = 20000
    x = -2.0 + jnp.array([0.5, 1.0]) * jax.random.normal(jax.random.PRNGKey(2), (n, 2))
    new, _ = run_jumps(ASYMMETRIC, x, WRONG, modes.fit_marginals(x), 0.0, 60)
    share = np.mean(new[:, 0] < BARRIER)
    assert abs(share - 0.3) < 5 * np.sqrt(0.21 / n) + 2e-3, share


def test_one_coordinate_jumps_equilibrate_the_wells_of_a_product():
    # Many-well in d = 4 (two double wells): every particle starts in the left
    # well of both pairs; one-coordinate jumps from a 1-D mixture fitted to a
    # population with both wells equally filled bring each pair's right-well
    # mass to 0.8443 (5 binomial sd over n particles, plus 2e-3 of leftover bias).
    target = targets.many_well(4)
    n = 20000
    exact = target.sample_fn(jax.random.PRNGKey(3), n)
    signs = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(4), 0.5, (n, 2)), 1, -1)
    balanced = exact.at[:, 0::2].set(signs * jnp.abs(exact[:, 0::2]))
    start = exact.at[:, 0::2].set(-jnp.abs(exact[:, 0::2]))
    joint = GaussianMixture(jnp.zeros(1), jnp.zeros((1, 4)), jnp.ones((1, 4)))
    new, _ = run_jumps(target, start, joint, modes.fit_marginals(balanced), 1.0, 120)
    share = np.asarray(targets.right_well_share(jnp.asarray(new)))
    mass = target.reference["right_well_mass"]
    sd = np.sqrt(mass * (1 - mass) / n)
    assert np.all(np.abs(share - mass) < 5 * sd + 2e-3), share


def test_block_choice_follows_the_squared_jump_distances():
    choice = jumps.block_choice_init()
    assert np.isclose(jumps.coordinate_prob(choice), 0.5)
    # One-coordinate jumps travel 3 times as far on average: probability 3/4.
    choice = jumps.update_block_choice(
        choice,
        jnp.array([1.0, 1.0, 3.0, 3.0] * 100),
        jnp.array([False, False, True, True] * 100),
    )
    assert np.isclose(jumps.coordinate_prob(choice), 3 / 4, atol=0.01)
    # Full jumps that never move: clipped at the upper bound.
    choice = jumps.update_block_choice(
        jumps.block_choice_init(), jnp.zeros(1000), jnp.zeros(1000, bool)
    )
    assert np.isclose(jumps.coordinate_prob(choice), jumps.PROB_BOUNDS[1])
