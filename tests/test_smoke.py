import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC

from numpyro_dilation import DilationKernel


def test_standard_normal_potential_fn():
    # 512 particles x 100 draws of N(0, I_3); the mean of 51200 correlated draws
    # has sd well under 0.02 even with an autocorrelation time of 10: 0.1 is > 5 sd.
    pe = lambda x: 0.5 * jnp.sum(x**2)  # noqa: E731
    init = jax.random.normal(jax.random.PRNGKey(1), (512, 3))
    mcmc = MCMC(
        DilationKernel(potential_fn=pe),
        num_warmup=200,
        num_samples=100,
        num_chains=512,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), init_params=init)
    draws = np.asarray(mcmc.get_samples())
    assert draws.shape == (512 * 100, 3)
    assert np.all(np.abs(draws.mean(0)) < 0.1)
    assert np.all(np.abs(draws.std(0) - 1) < 0.1)
