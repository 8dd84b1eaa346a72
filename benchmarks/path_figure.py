"""The figure of docs/how-it-works.md: particles travelling along the dilation path.

The sampler (its pure-JAX core, as DilationKernel runs it) anneals 1024
particles on the 2-D mixture of 40 Gaussians (means in [-40, 40]^2), once from
one shared Dirac centre at the origin (the paper's setting) and once from one
centre per particle, drawn uniformly in the box (each particle's centre is its
initial point). Each panel shows the particles in path coordinates
``y = c + sqrt(l) (x - c)`` at one level ``l``, over the 40 mode centres.

    python benchmarks/path_figure.py            # writes docs/img/dilation_path.png
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from numpyro_dilation import core
from numpyro_dilation.validation import targets

LEVELS_SHOWN = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def core_run(logdensity_fn, center, options, num_warmup, keys, record):
    """The sampler's pure-JAX core as DilationKernel runs it: ``core.init`` at
    ``center`` with the calendar of ``num_warmup`` warmup iterations, then one
    ``core.step`` per key of ``keys`` (those past ``num_warmup`` are sampling
    iterations), stacking ``record(state)`` after each (DilationKernel runs
    its warmup inside ``init``, so this is how to watch it)."""
    fn = jax.value_and_grad(logdensity_fn)
    run_calendar = core.build_calendar(num_warmup, options)
    state = core.init(jnp.asarray(center, jnp.float32), fn, run_calendar, options)

    def body(state, key):
        state, _ = core.step(key, state, fn, options)
        return state, record(state)

    return jax.jit(lambda s: jax.lax.scan(body, s, keys)[1])(state)


def anneal(center: np.ndarray, num_warmup: int, seed: int):
    """Warmup positions in target space (particles, W, 2) and their levels (W,)."""
    target = targets.forty_mode_mixture()
    keys = jax.random.split(jax.random.PRNGKey(seed), num_warmup)
    x, levels = core_run(
        target.logdensity_fn,
        center,
        core.SamplerOptions(),
        num_warmup,
        keys,
        lambda state: (core.target_position(state), state.lam),
    )
    return np.swapaxes(np.asarray(x), 0, 1), np.asarray(levels), target


def main(num_particles: int = 1024, num_warmup: int = 400, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    centres = {
        "one shared centre (the paper)": np.zeros((num_particles, 2)),
        "one centre per particle, uniform in the box": rng.uniform(
            -40, 40, (num_particles, 2)
        ),
    }
    fig = Figure(figsize=(3.0 * len(LEVELS_SHOWN), 6.4))
    axes = fig.subplots(2, len(LEVELS_SHOWN), sharex=True, sharey=True)
    for row, (title, center) in enumerate(centres.items()):
        x, levels, target = anneal(center, num_warmup, seed)
        for col, level in enumerate(LEVELS_SHOWN):
            # the last warmup iteration spent at the level nearest to `level`
            nearest = levels[np.argmin(np.abs(np.log(levels) - np.log(level)))]
            t = np.flatnonzero(levels == nearest)[-1]
            lam = levels[t]
            y = center + np.sqrt(lam) * (x[:, t] - center)
            ax = axes[row, col]
            ax.scatter(*np.asarray(target.means).T, s=60, c="0.85", marker="o")
            ax.scatter(y[:, 0], y[:, 1], s=2, alpha=0.5, color=f"C{row}")
            ax.set_title(f"l = {lam:.1e}", fontsize=10)
            ax.set_xlim(-50, 50)
            ax.set_ylim(-50, 50)
        axes[row, 0].set_ylabel(title, fontsize=10)
    fig.suptitle(
        "Particles on the dilation path y = c + sqrt(l) (x - c), "
        "grey discs: the 40 modes of the target"
    )
    fig.tight_layout()
    out = Path(__file__).resolve().parent.parent / "docs" / "img" / "dilation_path.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-particles", type=int, default=1024)
    parser.add_argument("--num-warmup", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
