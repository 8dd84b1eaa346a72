"""``langevin.step`` is ``step_from_noise`` with its own draws; the population
sampler draws the same noise for all particles at once."""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_dilation.core import langevin
from numpyro_dilation.core.preconditioner import make_preconditioner


def _logdensity_and_grad(x):
    return jax.value_and_grad(lambda x: -0.5 * jnp.sum(x**2 / jnp.arange(1.0, 4.0)))(x)


def test_step_is_step_from_noise_with_its_own_draws():
    precond = make_preconditioner(jnp.array([0.5, 1.0, 2.0]))
    state = langevin.init(jnp.array([0.3, -1.2, 2.0]), _logdensity_and_grad)
    for seed in range(20):
        key = jax.random.PRNGKey(seed)
        key_prop, key_acc = jax.random.split(key)
        z = jax.random.normal(key_prop, (3,))
        log_u = jnp.log(jax.random.uniform(key_acc))
        for adjusted in (True, False):
            got = langevin.step(
                key, state, _logdensity_and_grad, 0.7, precond, adjusted
            )
            want = langevin.step_from_noise(
                z, log_u, state, _logdensity_and_grad, 0.7, precond, adjusted
            )
            jax.tree.map(np.testing.assert_array_equal, got, want)


def test_accept_test_uses_the_given_uniform():
    # log U = -inf accepts every finite proposal, log U = +inf none (MALA).
    precond = make_preconditioner(jnp.ones(3))
    state = langevin.init(jnp.zeros(3), _logdensity_and_grad)
    z = jnp.array([3.0, -3.0, 3.0])
    moved, info = langevin.step_from_noise(
        z, -jnp.inf, state, _logdensity_and_grad, 0.5, precond
    )
    kept, info_kept = langevin.step_from_noise(
        z, jnp.inf, state, _logdensity_and_grad, 0.5, precond
    )
    assert bool(info.is_accepted) and not bool(info_kept.is_accepted)
    np.testing.assert_allclose(moved.position, z)  # x + h g + sqrt(2h) z, x = g = 0
    np.testing.assert_array_equal(kept.position, state.position)
