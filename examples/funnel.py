"""Neal's funnel in 10 dimensions (Neal 2003): x0 ~ N(0, 3^2) and
x1..x9 | x0 ~ N(0, exp(x0)). The neck (x0 very negative) is narrow: a sampler
with one step size for the whole space misses it. Exact answers: x0 has sd 3
and P(x0 < -3) = Phi(-1) = 0.1587.

    python examples/funnel.py
    python examples/funnel.py --compare-nuts
"""

import math

import numpy as np
from common import DEFAULT_BUDGET, Budget, parse_budget, run_dilation, side_by_side

from numpyro_dilation.validation import targets

NECK_MASS = 0.5 * math.erfc(1 / math.sqrt(2))  # P(x0 < -3) = Phi(-1)


def main(budget: Budget = DEFAULT_BUDGET) -> dict[str, float]:
    """Returns the sd of x0 (3 is right) and the mass below x0 = -3 (0.1587)."""
    model = targets.as_numpyro_model(targets.funnel(10))
    mcmc = run_dilation(model, budget=budget)
    x0 = np.asarray(mcmc.get_samples()["x"][:, 0])
    result = {"sd_x0": float(np.std(x0)), "neck_mass": float(np.mean(x0 < -3))}
    print(f"\nsd of x0: {result['sd_x0']:.3f} (3 is right)")
    print(f"P(x0 < -3): {result['neck_mass']:.4f} ({NECK_MASS:.4f} is right)")
    side_by_side(model, budget=budget)
    return result


if __name__ == "__main__":
    main(parse_budget(__doc__))
