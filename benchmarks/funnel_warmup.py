"""Neal's funnel through one run of the sampler: how x0 spreads over warmup.

Runs the pure-JAX core as ``DilationKernel(model)`` runs it on the funnel
(``targets.funnel(d)``, x0 ~ N(0, 9), the other coordinates N(0, e^x0)) where
its mode fit finds one mode: MALA along the dilation path, then HMC moves
with a dense population preconditioner at ``l = 1`` (``step="auto"`` with
``num_chains >= 5 d``; the script keeps that move at any ``--particles``), no
jumps; every particle starts at its own centre,
uniform in [-2, 2]^d as NumPyro's default initialisation. Prints, every
``--every`` warmup iterations and over the draws, the sd of x0 (exact 3) and
P(x0 < -3), P(x0 > 3) (exact 0.1587 each), then the rms change of x0 per
sampling iteration (all particles, and those in the mouth, x0 > 3, and in the
neck, x0 < -3) and the mean leapfrog steps per sampling iteration.

    python benchmarks/funnel_warmup.py [--dims 10,50] [--num-warmup 500]
"""

import argparse

import jax
import numpy as np
from path_figure import core_run  # the script's folder is on sys.path

from numpyro_dilation import core
from numpyro_dilation.validation import targets


def run(dim: int, num_warmup: int, num_samples: int, num_particles: int, seed: int):
    """x0 of every particle at every iteration ``(n, W + S)``, and the
    leapfrog steps of every iteration ``(W + S,)``."""
    options = core.SamplerOptions(
        hmc=True,
        dense_mass=True,
        target_accept_prob=0.651,
        jump_prob=0.0,
        rebalance=False,
    )
    key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
    center = jax.random.uniform(key_init, (num_particles, dim), minval=-2, maxval=2)
    x0, steps = core_run(
        targets.funnel(dim).logdensity_fn,
        center,
        options,
        num_warmup,
        jax.random.split(key_run, num_warmup + num_samples),
        lambda state: (core.target_position(state)[:, 0], state.num_steps),
    )
    return np.asarray(x0).T, np.asarray(steps)


def shares(x0: np.ndarray) -> str:
    return (
        f"sd {x0.std():.3f}, P(x0 < -3) {np.mean(x0 < -3):.3f}, "
        f"P(x0 > 3) {np.mean(x0 > 3):.3f}"
    )


def report(dim: int, x0: np.ndarray, steps: np.ndarray, num_warmup: int, every: int):
    num_anneal = int(core.build_calendar(num_warmup).num_anneal)
    print(f"funnel, d = {dim}: {x0.shape[0]} particles, {num_warmup} warmup")
    marks = sorted({num_anneal - 1, num_warmup - 1, *range(0, num_warmup, every)})
    for t in marks:
        phase = "annealing" if t < num_anneal else "tuning"
        print(f"  t = {t:4d} ({phase}): {shares(x0[:, t])}")
    draws = x0[:, num_warmup:]
    print(f"  the {draws.shape[1]} draws: {shares(draws)}")
    change = np.diff(draws, axis=1)
    start = draws[:, :-1]
    rms = {
        "all": np.sqrt(np.mean(change**2)),
        "x0 > 3": np.sqrt(np.mean(change[start > 3] ** 2)),
        "x0 < -3": np.sqrt(np.mean(change[start < -3] ** 2)),
    }
    print(
        "  rms change of x0 per sampling iteration: "
        + ", ".join(f"{k} {v:.3f}" for k, v in rms.items())
        + f"; leapfrog steps per sampling iteration {steps[num_warmup:].mean():.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="10,50")
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--particles", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    for dim in (int(d) for d in args.dims.split(",")):
        x0, steps = run(
            dim, args.num_warmup, args.num_samples, args.particles, args.seed
        )
        report(dim, x0, steps, args.num_warmup, args.every)


if __name__ == "__main__":
    main()
