"""Local (per-particle, exact) step sizes against the shared step and NUTS.

    python benchmarks/local_step.py [--particles 1024]
        [--targets funnel10,funnel50,eight_schools,breast_cancer,
                   eight_schools_centred,forty_mode] [--no-local]
    python benchmarks/local_step.py --targets sv_centred   # only when named

For each target, with the defaults otherwise (500 warmup + 200 draws, 1024
particles; NUTS 4 chains of 500 + 1000), same seed, through
``numpyro_dilation.compare``: NUTS, ``DilationKernel`` with its defaults (the
shared step; ``step="auto"``: HMC moves on a population of one mode with a
dense preconditioner, else MALA), and with ``step_size_selection="local"``
for MALA and for HMC moves.
Printed per run: wall time apart from compilation, gradients (warmup
included; a local-step iteration counts the gradients its population's step
searches computed, per particle: ``num_steps``), the smallest bulk ESS, ESS
per gradient against NUTS's and against the shared step's in the same run,
the end-of-warmup warnings of that run (each run is its own ``compare``
call, so a warning belongs to the run it is printed with; in full in an HTML
comment below the line), and the answer:
on Neal's funnel (``targets.funnel``) the sd of x0 (exact 3) and P(x0 < -3)
(exact 0.1587); elsewhere the largest |mean error| in sds and |sd ratio - 1|
against NUTS's draws (eight schools non-centred, the breast-cancer logistic
regression: targets where one shared step suffices) or, on the 2-D mixture of
40 Gaussians (``targets.forty_mode_mixture``, where one step suffices too but
NUTS misses modes), against its exact mean and sd. ``eight_schools_centred``
(``targets.eight_schools_funnel_model``, tau ~ HalfCauchy(5), centred) is read
by tau's posterior against a long NUTS run on the non-centred model
(``hmc.reference_draws``): the share of draws below the reference's median and
90% quantile (0.5 and 0.9 if they agree), P(tau < 1) against the reference's,
each with its Monte Carlo standard error ``sqrt(p (1 - p) / ESS)`` (ESS the
run's smallest bulk ESS, the reference's own for its P), and the share of
divergent draws. ``sv_centred`` (``targets.stochastic_volatility_model``
with ``centred=True``: a funnel between the log-variances and the shock
scale) is read by the shock scale's mean (in Monte Carlo standard errors) and
sd against the stored long NUTS reference on the non-centred model
(``benchmarks/results/hmc_reference.json``), the issue's criterion being the
sd within 5%.
"""

import argparse
import json

import jax
import numpy as np
import numpyro
from hmc import (  # the script's folder is on sys.path
    REFERENCE,
    answer_errors,
    dilation_or_nuts,
    effective_sample_size,
    flat,
    reference_draws,
    warning_summary,
)
from numpyro.infer import NUTS

from numpyro_dilation import DilationKernel
from numpyro_dilation.compare import Run
from numpyro_dilation.validation import targets


def _target(name):
    if name.startswith("funnel"):
        model = targets.as_numpyro_model(targets.funnel(int(name[len("funnel") :])))
        return model, (), True
    if name == "eight_schools":
        return targets.eight_schools_model, (), False
    if name == "breast_cancer":
        return targets.logistic_regression_model, targets.breast_cancer_data(), False
    if name == "eight_schools_centred":
        return targets.eight_schools_funnel_model, (), False
    if name == "forty_mode":
        return targets.as_numpyro_model(targets.forty_mode_mixture()), (), False
    if name == "sv_centred":
        returns = targets.stochastic_volatility_data()
        return targets.stochastic_volatility_model, (returns, True), False
    raise ValueError(f"unknown target {name!r}")


def _reference_moments(name, nuts_draws):
    """The exact mean and sd of the 40-mode mixture, else NUTS's draws'."""
    if name == "forty_mode":
        reference = targets.forty_mode_mixture().reference
        return np.asarray(reference["mean"]), np.sqrt(np.asarray(reference["var"]))
    return nuts_draws.mean(0), nuts_draws.std(0)


TAU = 1  # tau's column in the flat draws (sites sorted: mu, tau, theta)


def _tau_reference():
    """tau's draws ``(chain, draw)`` from the long NUTS run on the non-centred
    eight schools."""
    args = (targets.EIGHT_SCHOOLS_Y, targets.EIGHT_SCHOOLS_SIGMA, False)
    return flat(reference_draws(targets.eight_schools_funnel_model, args))[..., TAU]


def _shock_scale_answer(x, ess):
    """The shock scale's (the last coordinate's) mean error in Monte Carlo
    standard errors and sd ratio against the stored non-centred reference."""
    ref = json.loads(REFERENCE.read_text())["sv"]
    mean, sd, mcse = (ref[k][-1] for k in ("mean", "sd", "mcse"))
    se = np.sqrt(x[:, -1].var() / ess + mcse**2)
    return (
        f"shock scale mean {x[:, -1].mean():.4f} ({(x[:, -1].mean() - mean) / se:+.1f}"
        f" se), sd {x[:, -1].std():.4f} (ref {sd:.4f}, {x[:, -1].std() / sd - 1:+.1%})"
    )


def _tau_answer(tau, ess, reference, divergent_share):
    """tau's quantiles and P(tau < 1) against the reference (module docstring)."""
    ref_ess = float(
        effective_sample_size((reference[..., None] < 1.0).astype(float))[0]
    )
    reference = reference.ravel()
    parts = []
    for label, level in (("median", 0.5), ("q90", 0.9)):
        share = np.mean(tau < np.quantile(reference, level))
        se = np.sqrt(level * (1 - level) / ess)
        parts.append(f"below ref {label} {share:.3f} ({level} +- {se:.3f})")
    p, p_ref = np.mean(tau < 1.0), np.mean(reference < 1.0)
    se, se_ref = np.sqrt(p * (1 - p) / ess), np.sqrt(p_ref * (1 - p_ref) / ref_ess)
    parts.append(f"P(tau < 1) {p:.3f} +- {se:.3f} (ref {p_ref:.3f} +- {se_ref:.3f})")
    return ", ".join(parts) + f", divergent {100 * divergent_share:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets",
        default=(
            "funnel10,funnel50,eight_schools,breast_cancer,eight_schools_centred,"
            "forty_mode"
        ),
    )
    parser.add_argument("--particles", type=int, default=1024)
    parser.add_argument(
        "--no-local",
        action="store_true",
        help="NUTS and DilationKernel's defaults only (no local-step runs)",
    )
    args = parser.parse_args()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()}")
    for name in args.targets.split(","):
        model, model_args, is_funnel = _target(name)
        # Every sampler starts from NumPyro's default, init_to_uniform.
        kernels = {
            "NUTS": Run(NUTS(model), num_samples=1000),
            "shared": DilationKernel(model),
            "local": DilationKernel(model, step="mala", step_size_selection="local"),
            "local hmc": DilationKernel(model, step="hmc", step_size_selection="local"),
        }
        if args.no_local:
            kernels = {run: kernels[run] for run in ("NUTS", "shared")}
        # One compare call per run, so that each run's end-of-warmup
        # warnings are its own.
        rows = {
            run: dilation_or_nuts(run, kernel, model, model_args, args.particles)
            for run, kernel in kernels.items()
        }
        draws = {run: x.reshape(-1, x.shape[-1]) for run, (_, x, _) in rows.items()}
        tau_reference = _tau_reference() if name == "eight_schools_centred" else None
        print(f"\n{name}:")
        per_grad = {
            run: row["ess"] / row["gradients"] for run, (row, _, _) in rows.items()
        }
        for run, x in draws.items():
            row, _, messages = rows[run]
            versus_nuts = per_grad[run] / per_grad["NUTS"]
            versus_shared = per_grad[run] / per_grad["shared"]
            if tau_reference is not None:
                draws_total = (4 * 1000) if run == "NUTS" else args.particles * 200
                answer = _tau_answer(
                    x[:, TAU],
                    row["ess"],
                    tau_reference,
                    row["divergences"] / draws_total,
                )
            elif name == "sv_centred":
                answer = _shock_scale_answer(x, row["ess"])
            elif is_funnel:
                answer = (
                    f"sd x0 {x[:, 0].std():.3f} (3), P(x0 < -3) "
                    f"{np.mean(x[:, 0] < -3):.4f} (0.1587)"
                )
            else:
                mean, sd = _reference_moments(name, draws["NUTS"])
                err, sd_err = answer_errors(x, mean, sd)
                answer = f"max |mean err| {err:.3f} sd, max |sd ratio - 1| {sd_err:.3f}"
            warns = "" if run == "NUTS" else f"; warnings: {warning_summary(messages)}"
            print(
                f"  {run:9s} time {row['time_s']:6.1f} s, gradients "
                f"{row['gradients']:.3g}, ESS min {row['ess']:8.0f}, "
                f"ESS/grad {versus_nuts:6.2f}x NUTS's, {versus_shared:6.2f}x "
                f"shared's; {answer}{warns}"
            )
            for m in messages:
                print(f"    <!-- {run}: {m} -->")


if __name__ == "__main__":
    main()
