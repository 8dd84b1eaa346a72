"""What the examples share: their budget options and the DilationKernel run.

Each example is a script, ``python examples/<name>.py --help``, whose ``main``
takes the budget as arguments so that the smoke test can run it small.
"""

import argparse
from dataclasses import dataclass

import jax
from numpyro.infer import MCMC

from numpyro_dilation import DilationKernel
from numpyro_dilation.compare import Comparison, compare


@dataclass(frozen=True)
class Budget:
    """How long an example runs; ``compare_nuts`` adds NUTS side by side."""

    num_warmup: int = 500
    num_samples: int = 200
    num_particles: int = 1024
    seed: int = 0
    compare_nuts: bool = False


DEFAULT_BUDGET = Budget()


def parse_budget(description: str) -> Budget:
    """The :class:`Budget` given on the command line (``--help`` lists it)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    helps = {
        "num_warmup": "warmup iterations (annealing, then tuning)",
        "num_samples": "draws per particle after warmup",
        "num_particles": "particles, one MCMC chain each",
        "seed": "PRNG seed",
    }
    for name, text in helps.items():
        default = getattr(DEFAULT_BUDGET, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=default,
            help=f"{text} (default {default})",
        )
    parser.add_argument(
        "--compare-nuts",
        action="store_true",
        help="also run NUTS (4 chains) and print both side by side",
    )
    return Budget(**vars(parser.parse_args()))


def run_dilation(model, *args, budget: Budget, **kwargs) -> MCMC:
    """``MCMC(DilationKernel(model))`` with one chain per particle; prints the
    summary and returns the MCMC object."""
    mcmc = MCMC(
        DilationKernel(model),
        num_warmup=budget.num_warmup,
        num_samples=budget.num_samples,
        num_chains=budget.num_particles,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(budget.seed), *args, **kwargs)
    mcmc.print_summary(exclude_deterministic=False)
    return mcmc


def side_by_side(model, *args, budget: Budget, **options) -> Comparison | None:
    """With ``budget.compare_nuts``: :func:`numpyro_dilation.compare.compare`
    (NUTS and DilationKernel) on the same budget; prints the tables."""
    if not budget.compare_nuts:
        return None
    comparison = compare(
        model,
        *args,
        num_warmup=budget.num_warmup,
        num_samples=budget.num_samples,
        num_particles=budget.num_particles,
        seed=budget.seed,
        progress=print,
        **options,
    )
    print(comparison.to_string())
    return comparison
