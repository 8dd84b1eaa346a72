"""Reference posteriors: MALA and ULA (the paper's step) against exact
answers, in units of Monte Carlo error (numpyro_dilation.validation.reference).

Prints the markdown tables of docs/validation.md:

    PYTHONPATH=$PWD python benchmarks/reference.py [--particles 1024] ...

For each target and marginal: the exact value, each mode's estimate and its
z-score (estimate - exact) / se; for ULA also the bias in units of the
posterior sd (mean, sd rows). Then ULA on a Gaussian against its exact
stationary law. DilationWarnings raised by a run are listed under the table.
"""

import argparse
import warnings

import jax
import numpy as np

from numpyro_dilation.diagnostics import DilationWarning
from numpyro_dilation.validation.reference import (
    estimates,
    reference_cases,
    run_case,
    run_ula_gaussian,
)

STEPS = ("mala", "ula")


def run_logged(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and the DilationWarning messages it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DilationWarning)
        out = fn(*args, **kwargs)
        jax.effects_barrier()
    return out, [str(w.message) for w in caught if w.category is DilationWarning]


def fmt(c) -> str:
    return f"{c.estimate:.4g} ({c.z:+.1f})"


def reference_table(args) -> None:
    print(
        "| target | marginal | statistic | exact | MALA (z) | ULA (z) | ULA bias / sd |"
    )
    print("|---|---|---|---|---|---|---|")
    notes = []
    for case in reference_cases():
        results = {}
        for step in STEPS:
            (_, comparisons), messages = run_logged(
                run_case, case, step, args.particles, args.warmup, args.samples
            )
            results[step] = comparisons
            notes += [f"{case.name}, {step}: {m}" for m in messages]
        for marginal in case.marginals():
            mala, ula = results["mala"][marginal.label], results["ula"][marginal.label]
            for stat, c in mala.items():
                u = ula[stat]
                bias = (
                    f"{(u.estimate - u.exact) / marginal.sd:+.3f}"
                    if stat in ("mean", "sd") and marginal.sd is not None
                    else ""
                )
                print(
                    f"| {case.name} | {marginal.label} | {stat} | {c.exact:.4g} "
                    f"| {fmt(c)} | {fmt(u)} | {bias} |"
                )
    print()
    for note in notes:
        print(f"- {note}")


def ula_gaussian(args) -> None:
    run = run_ula_gaussian(args.particles, args.warmup, args.samples)
    print(
        "\n| coordinate | target var | ULA exact var | ULA draws var (z vs ULA law) |"
    )
    print("|---|---|---|---|")
    for j in range(3):
        v = run.stationary_cov[j, j]
        c = estimates(run.draws[..., j], run.mean[j], np.sqrt(v))["sd"]
        var = f"{c.estimate**2:.4f} ({c.z:+.1f})"
        print(f"| {j} | {run.cov[j, j]:.4f} | {v:.4f} | {var} |")
    print(
        f"\nULA step size {run.step_size:.4g}, "
        f"preconditioner diag {np.round(run.inv_mass, 3)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    print(
        f"particles={args.particles} warmup={args.warmup} samples={args.samples} "
        f"jax {jax.__version__} on {jax.devices()[0].platform}\n"
    )
    reference_table(args)
    ula_gaussian(args)


if __name__ == "__main__":
    main()
