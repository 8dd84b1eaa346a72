"""The two runs of tests/test_distributed.py: made by each process of a JAX
cluster and, as the reference, by the test process on one device."""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

from numpyro_dilation import DilationKernel
from numpyro_dilation.validation import targets


def gaussian():
    loc = numpyro.sample("loc", dist.Normal(jnp.zeros(3), 2.0).to_event(1))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 0.5))
    numpyro.sample("obs", dist.Normal(loc.sum(), scale), obs=1.0)


# The unimodal run takes the default move (HMC here: one mode, a dense
# preconditioner); the two modes MALA's, which the default also moves them
# with after the annealing ("auto" would compile the annealing loop with HMC's
# options as well, for the same collectives). The models are built by the run,
# so that their constants take the run's precision (float64 for the tests).
RUNS = {
    "unimodal": (lambda: gaussian, "auto"),
    "multimodal": (
        lambda: targets.as_numpyro_model(targets.two_unequal_modes(4)),
        "mala",
    ),
}


def run(name: str) -> MCMC:
    """The run ``name`` of ``RUNS``: 512 particles, 100 + 20 iterations."""
    make_model, step = RUNS[name]
    mcmc = MCMC(
        DilationKernel(make_model(), step=step),
        num_warmup=100,
        num_samples=20,
        num_chains=512,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), extra_fields=("accept_prob",))
    return mcmc
