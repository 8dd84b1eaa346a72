"""Memory: MCMC(thinning=k) keeps every k-th draw of every particle, nothing else
changes (the kernel's phases follow its own iteration counter)."""

import jax
import jax.numpy as jnp
import numpy as np
from runs import run_vectorized

from numpyro_dilation import DilationKernel


def _draws(thinning):
    init = jax.random.normal(jax.random.PRNGKey(1), (16, 3))
    mcmc = run_vectorized(
        DilationKernel(potential_fn=lambda x: 0.5 * jnp.sum(x**2)),
        num_warmup=100,
        num_samples=30,
        num_chains=16,
        thinning=thinning,
        init_params=init,
    )
    return mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(
        group_by_chain=True
    )


def test_thinning_keeps_every_kth_draw_of_the_same_run():
    full, full_fields = _draws(1)
    thinned, fields = _draws(3)
    assert full.shape == (16, 30, 3) and thinned.shape == (16, 10, 3)
    assert np.std(np.asarray(full)) > 0.5  # the particles move: N(0, I) draws
    # NumPyro's fori_collect keeps the last iteration of each block of `thinning`.
    np.testing.assert_array_equal(thinned, full[:, 2::3])
    for name, value in fields.items():
        np.testing.assert_array_equal(value, full_fields[name][:, 2::3])
