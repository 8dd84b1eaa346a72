"""Log-Gaussian Cox process (d = 102): DilationKernel with its defaults against
NUTS, and both against a long NUTS reference.

    python benchmarks/lgcp.py [--runs 5] [--particles 1024] [--timeout 1800]

The model is ``targets.lgcp_model`` on a 10 x 10 grid (``targets.lgcp_data``):
a latent Gaussian field on 100 cells with a Matern-3/2 covariance whose
amplitude and length scale are latent. On jaxlib < 0.11 (CPU) its batched
Cholesky factors and triangular solves could deadlock (docs/known-issues.md);
this script runs DilationKernel ``--runs`` times (seeds 0, 1, ...), each in a
fresh subprocess with a time limit, and counts the runs that finished. It then
prints, for the first run, the wall time (compilation included) against NUTS
with 4 chains and 500 + 500 iterations in the same process, and the answer
against a long NUTS reference (4 chains, 2000 + 2000): the largest |mean
difference| in Monte Carlo standard errors of the difference
(``sqrt(sd^2 / ESS + sd_ref^2 / ESS_ref)``) and the largest relative sd
difference, over the two
hyperparameters and the 100 field values.
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
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    from numpyro_dilation import DilationKernel
    from numpyro_dilation.validation import targets

    coords, counts = targets.lgcp_data(10)
    if kind == "dilation":
        kernel, chains = DilationKernel(targets.lgcp_model), particles
    else:
        kernel, chains = NUTS(targets.lgcp_model), 4
    start = time.perf_counter()
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=samples,
        num_chains=chains,
        chain_method="vectorized",
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
    nuts = _spawn(args, "nuts", 0, 500, 500)
    reference = _spawn(args, "nuts", 1, 2000, 2000)
    if not finished or nuts is None or reference is None:
        print("a NUTS run did not finish in time")
        return
    first = finished[0]
    print(
        f"wall time, compilation included: DilationKernel {first['wall_s']:.1f} s, "
        f"NUTS (4 chains, 500 + 500) {nuts['wall_s']:.1f} s, "
        f"ratio {first['wall_s'] / nuts['wall_s']:.2f}"
    )
    mean, sd, ess = (np.asarray(first[k]) for k in ("mean", "sd", "ess"))
    ref_mean, ref_sd, ref_ess = (
        np.asarray(reference[k]) for k in ("mean", "sd", "ess")
    )
    z = np.abs(mean - ref_mean) / np.sqrt(sd**2 / ess + ref_sd**2 / ref_ess)
    rel = np.abs(sd / ref_sd - 1.0)
    print(
        f"against the long NUTS reference: max |mean diff| {z.max():.1f} MCSE "
        f"(coordinate {int(z.argmax())}; goal 4), max |sd / sd_ref - 1| "
        f"{rel.max():.3f} (coordinate {int(rel.argmax())}; goal 0.05); "
        f"hyperparameters: z {z[:2].round(1).tolist()}, sd {rel[:2].round(3).tolist()}"
    )


if __name__ == "__main__":
    main()
