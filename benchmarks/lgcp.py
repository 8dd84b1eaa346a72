"""Log-Gaussian Cox process (d = 102): DilationKernel with its defaults against
NUTS, and both against a long NUTS reference.

    python benchmarks/lgcp.py [--runs 5] [--particles 1024] [--timeout 1800]
                              [--reference FILE] [--no-nuts]

(``--runs 0`` runs NUTS alone.)

The model is ``targets.lgcp_model`` on a 10 x 10 grid (``targets.lgcp_data``):
a latent Gaussian field on 100 cells with a Matern-3/2 covariance whose
amplitude and length scale are latent. On jaxlib < 0.11 (CPU) its batched
Cholesky factors and triangular solves could deadlock (docs/known-issues.md);
this script runs DilationKernel ``--runs`` times (seeds 0, 1, ...), each in a
fresh subprocess with a time limit, and counts the runs that finished. It then
prints, for the first run, the wall time (compilation included) against NUTS
with 4 chains and 500 + 500 iterations on the same model (its split R-hat too),
and the answer of every finished run against a long NUTS reference: 4 chains of
2000 + 2000 on ``targets.lgcp_model_noncentred``, the same posterior in the
parameterisation where NUTS mixes. The figures are the largest |mean
difference| in Monte Carlo standard errors of the difference
(``sqrt(sd^2 / ESS + sd_ref^2 / ESS_ref)``) and the largest relative sd
difference, over the two hyperparameters and the 100 field values.
``--reference FILE`` stores the reference there, or reads it if FILE exists
(one reference serves both stacks); ``--no-nuts`` skips the NUTS comparison.
NUTS chains run one after the other (``chain_method="sequential"``): no
batched LAPACK call, so no deadlock on jaxlib < 0.11, and no chain waits for
the longest trajectory of the others.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

_CHILD = "--child"


def _run(kind: str, seed: int, particles: int, warmup: int, samples: int) -> dict:
    import jax
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
    from numpyro.infer import MCMC, NUTS

    from numpyro_dilation import DilationKernel
    from numpyro_dilation.validation import targets

    coords, counts = targets.lgcp_data(10)
    if kind == "dilation":
        kernel, chains, method = (
            DilationKernel(targets.lgcp_model),
            particles,
            "vectorized",
        )
    elif kind == "nuts":
        kernel, chains, method = NUTS(targets.lgcp_model), 4, "sequential"
    else:
        kernel, chains, method = NUTS(targets.lgcp_model_noncentred), 4, "sequential"
    start = time.perf_counter()
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=samples,
        num_chains=chains,
        chain_method=method,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), coords, counts)
    draws = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(draws)
    jax.effects_barrier()
    wall = time.perf_counter() - start
    flat = np.concatenate(
        [
            np.asarray(draws[k]).reshape(chains, samples, -1)
            for k in ("amplitude", "length_scale", "f")
        ],
        axis=-1,
    )
    return {
        "wall_s": wall,
        "mean": flat.mean((0, 1)).tolist(),
        "sd": flat.std((0, 1), ddof=1).tolist(),
        "ess": np.asarray(effective_sample_size(flat)).tolist(),
        "max_rhat": float(np.max(split_gelman_rubin(flat))),
    }


def _child(args) -> None:
    result = _run(args.kind, args.seed, args.particles, args.warmup, args.samples)
    print(json.dumps(result))


def _spawn(args, kind: str, seed: int, warmup: int, samples: int) -> dict | None:
    command = [
        sys.executable,
        __file__,
        _CHILD,
        "--kind",
        kind,
        "--seed",
        str(seed),
        "--particles",
        str(args.particles),
        "--warmup",
        str(warmup),
        "--samples",
        str(samples),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(_CHILD, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="dilation", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=500, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--particles", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--reference", help="JSON file: store the reference, or read it"
    )
    parser.add_argument("--no-nuts", action="store_true", help="skip the NUTS run")
    args = parser.parse_args()
    if args.child:
        return _child(args)
    import jax
    import jaxlib

    print(
        f"Python {sys.version.split()[0]}, jax {jax.__version__}, "
        f"jaxlib {jaxlib.__version__}, {os.cpu_count()} CPUs"
    )
    runs = [_spawn(args, "dilation", seed, 500, 200) for seed in range(args.runs)]
    finished = [r for r in runs if r is not None]
    print(f"DilationKernel finished {len(finished)} of {args.runs} runs")
    print(
        "wall times (s):", [None if r is None else round(r["wall_s"], 1) for r in runs]
    )
    if not args.no_nuts:
        nuts = _spawn(args, "nuts", 0, 500, 500)
        if nuts is None:
            print(f"NUTS (4 chains, 500 + 500) did not finish in {args.timeout:.0f} s")
        else:
            ratio = (
                f", DilationKernel (seed 0) {finished[0]['wall_s']:.1f} s, "
                f"ratio {finished[0]['wall_s'] / nuts['wall_s']:.2f}"
                if finished
                else ""
            )
            print(
                f"wall time, compilation included: NUTS (4 chains, 500 + 500) "
                f"{nuts['wall_s']:.1f} s{ratio}; "
                f"NUTS max split R-hat {nuts['max_rhat']:.2f}"
            )
    reference = _reference(args)
    if reference is None:
        print("the NUTS reference did not finish in time")
        return
    print(f"reference: max split R-hat {reference['max_rhat']:.3f}")
    ref_mean, ref_sd, ref_ess = (
        np.asarray(reference[k]) for k in ("mean", "sd", "ess")
    )
    for seed, run in enumerate(runs):
        if run is None:
            continue
        mean, sd, ess = (np.asarray(run[k]) for k in ("mean", "sd", "ess"))
        z = np.abs(mean - ref_mean) / np.sqrt(sd**2 / ess + ref_sd**2 / ref_ess)
        rel = np.abs(sd / ref_sd - 1.0)
        print(
            f"seed {seed} against the reference: max |mean diff| {z.max():.1f} MCSE "
            f"(coordinate {int(z.argmax())}; goal 4), max |sd / sd_ref - 1| "
            f"{rel.max():.3f} (coordinate {int(rel.argmax())}; goal 0.05); "
            f"hyperparameters: z {z[:2].round(1).tolist()}, "
            f"sd {rel[:2].round(3).tolist()}"
        )


def _reference(args) -> dict | None:
    if args.reference and os.path.exists(args.reference):
        with open(args.reference) as f:
            return json.load(f)
    reference = _spawn(args, "reference", 1, 2000, 2000)
    if reference is not None and args.reference:
        with open(args.reference, "w") as f:
            json.dump(reference, f)
    return reference


if __name__ == "__main__":
    main()
