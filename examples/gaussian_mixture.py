"""A two-component Gaussian mixture with unequal weights and label switching.

Data: 200 points, 30% from N(-2, 1) and 70% from N(2, 1) (fixed seed, nothing
downloaded). Model: weights ~ Dirichlet(1, 1), locs_k ~ N(0, 5^2),
scale ~ HalfNormal(2). Swapping the labels of the components leaves the
posterior unchanged, so it has two modes of equal mass, locs near (-2, 2) and
near (2, -2): a sampler that explores it puts half its draws in each. A few
NUTS chains each keep the labelling they started in; the particles of
DilationKernel start in both.

    python examples/gaussian_mixture.py
    python examples/gaussian_mixture.py --compare-nuts
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from common import DEFAULT_BUDGET, Budget, parse_budget, run_dilation, side_by_side

TRUE_WEIGHTS = np.array([0.3, 0.7])
TRUE_LOCS = np.array([-2.0, 2.0])
# The two labellings, in the coordinates of the "locs" site.
LABELLINGS = np.array([TRUE_LOCS, TRUE_LOCS[::-1]])


def make_data(num_points: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    component = rng.choice(2, size=num_points, p=TRUE_WEIGHTS)
    return rng.normal(TRUE_LOCS[component], 1.0)


def mixture_model(y: np.ndarray) -> None:
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    locs = numpyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    scale = numpyro.sample("scale", dist.HalfNormal(2.0))
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=weights), dist.Normal(locs, scale)
    )
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", mixture, obs=y)


def main(budget: Budget = DEFAULT_BUDGET) -> dict[str, float]:
    """Returns the share of draws in the labelling (-2, 2); 0.5 is right."""
    y = make_data()
    mcmc = run_dilation(mixture_model, y, budget=budget)
    locs = np.asarray(mcmc.get_samples()["locs"])
    share = float(np.mean(locs[:, 0] < locs[:, 1]))
    print(f"\nshare of draws with locs[0] < locs[1]: {share:.3f} (0.5 is right)")
    side_by_side(
        mixture_model,
        y,
        budget=budget,
        mode_means=LABELLINGS,
        true_mode_weights=[0.5, 0.5],
        mode_sites=["locs"],
    )
    return {"share": share}


if __name__ == "__main__":
    main(parse_budget(__doc__))
