"""One MCMC run of a kernel with every chain in one vectorised population."""

import jax
from numpyro.infer import MCMC


def run_vectorized(
    kernel,
    *args,
    num_warmup: int,
    num_samples: int,
    num_chains: int,
    seed: int = 0,
    thinning: int = 1,
    **kwargs,
) -> MCMC:
    """``MCMC(kernel, chain_method="vectorized")`` run on ``*args, **kwargs``.

    Waits for DilationKernel's end-of-warmup warnings, which a
    ``jax.debug.callback`` raises asynchronously.
    """
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        thinning=thinning,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), *args, **kwargs)
    jax.effects_barrier()
    return mcmc
