"""Stochastic volatility: each move's draws against the reference's quantiles.

    python benchmarks/sv_quantiles.py     # about 6 minutes on 2 cores

The sd of ``mu`` (the mean log-variance) is a fragile statistic on
``targets.stochastic_volatility_model`` (100 days): with the persistence near
1, ``mu`` is barely identified and heavy-tailed, and NUTS at its default
``target_accept_prob=0.8`` diverges there and misses part of those tails.
This script runs the reference of ``benchmarks/hmc.py``
(``hmc.reference_draws``: NUTS, 4 chains of 1000 + 25000,
``target_accept_prob=0.99``, seed 1) and ``DilationKernel`` with
``step="hmc"`` and ``step="mala"`` (1024 particles, 500 + 200, seed 0), and
prints for ``mu``, ``persistence`` and ``shock_scale`` each sampler's sd and
its share of draws below the reference's 0.1, 1, 5, 25, 50, 75, 95, 99 and
99.9% quantiles (for a right sampler, those shares up to Monte Carlo error).
"""

import numpy as np
from hmc import mcmc_draws, reference_draws  # the script's folder is on sys.path

from numpyro_dilation import DilationKernel
from numpyro_dilation.validation import targets

QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
SITES = ("mu", "persistence", "shock_scale")


def main() -> None:
    model = targets.stochastic_volatility_model
    returns = targets.stochastic_volatility_data()
    reference = reference_draws(model, (returns,))
    runs = {
        step: mcmc_draws(
            DilationKernel(model, step=step), (returns,), 500, 200, 1024, 0
        )
        for step in ("hmc", "mala")
    }
    for site in SITES:
        ref = reference[site].ravel()
        cuts = np.quantile(ref, QUANTILES)
        print(f"{site}: reference sd {ref.std():.3f}, quantiles {np.round(cuts, 3)}")
        for step, run in runs.items():
            x = run[site].ravel()
            shares = [np.mean(x <= c) for c in cuts]
            print(f"  {step}: sd {x.std():.3f}, below {np.round(shares, 3)}")


if __name__ == "__main__":
    main()
