"""Eight schools (Rubin 1981), the non-centred hierarchical model, sampled by
DilationKernel and checked against the posterior computed by quadrature.

    python examples/eight_schools.py                  # 1024 particles
    python examples/eight_schools.py --compare-nuts   # and NUTS beside it
"""

import numpy as np
from common import DEFAULT_BUDGET, Budget, parse_budget, run_dilation, side_by_side

from numpyro_dilation.validation import targets


def main(budget: Budget = DEFAULT_BUDGET) -> dict[str, float]:
    """Returns, for the two global parameters, the error of the posterior mean
    in units of the reference posterior sd."""
    mcmc = run_dilation(targets.eight_schools_model, budget=budget)
    samples = mcmc.get_samples()
    errors = {}
    print("\nsite         mean    reference (sd)    error in sds")
    for site, ref in targets.EIGHT_SCHOOLS_REFERENCE.items():
        mean = float(np.mean(samples[site]))
        errors[site] = (mean - ref["mean"]) / ref["sd"]
        print(
            f"{site:<12} {mean:7.3f}  {ref['mean']:7.3f} ({ref['sd']:.3f})"
            f"  {errors[site]:+.3f}"
        )
    side_by_side(targets.eight_schools_model, budget=budget)
    return errors


if __name__ == "__main__":
    main(parse_budget(__doc__))
