"""Robust linear regression with Student-t noise: a model with constrained
parameters (scale sigma > 0 and degrees of freedom nu > 0, sampled by
DilationKernel in NumPyro's unconstrained space, reported in their own).

Data: y = 1 + 2 x + N(0, 0.5^2) at 50 points of [-2, 2], the 5 rightmost
pushed down by 10 (fixed seed, nothing downloaded). Least squares is pulled by the
outliers; the Student-t likelihood lets them go, its small nu says they are
outliers.

    python examples/robust_regression.py
    python examples/robust_regression.py --compare-nuts
"""

import numpy as np
import numpyro
import numpyro.distributions as dist
from common import DEFAULT_BUDGET, Budget, parse_budget, run_dilation, side_by_side

TRUE_SLOPE = 2.0


def make_data(num_points: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.linspace(-2.0, 2.0, num_points)
    y = 1.0 + TRUE_SLOPE * x + rng.normal(0.0, 0.5, num_points)
    y[-5:] -= 10.0
    return x, y


def robust_model(x: np.ndarray, y: np.ndarray) -> None:
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 10.0))
    slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    nu = numpyro.sample("nu", dist.Gamma(2.0, 0.1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.StudentT(nu, intercept + slope * x, sigma), obs=y)


def main(budget: Budget = DEFAULT_BUDGET) -> dict[str, float]:
    """Returns the posterior mean slope and the least-squares slope (true: 2)."""
    x, y = make_data()
    mcmc = run_dilation(robust_model, x, y, budget=budget)
    samples = mcmc.get_samples()
    result = {
        "slope": float(np.mean(samples["slope"])),
        "least_squares_slope": float(np.polyfit(x, y, 1)[0]),
        "min_sigma": float(np.min(samples["sigma"])),
        "min_nu": float(np.min(samples["nu"])),
    }
    print(
        f"\nslope: posterior mean {result['slope']:.3f}, least squares "
        f"{result['least_squares_slope']:.3f}, true {TRUE_SLOPE}"
    )
    print(
        "smallest draws of sigma and nu (both must be > 0): "
        f"{result['min_sigma']:.3g}, {result['min_nu']:.3g}"
    )
    side_by_side(robust_model, x, y, budget=budget)
    return result


if __name__ == "__main__":
    main(parse_budget(__doc__))
