"""Peak memory of a DilationKernel run against the size of the draws it keeps.

    python benchmarks/memory.py                       # 8192 x 1000 x d=100, GPU
    python benchmarks/memory.py --particles 2048 --samples 200 --dim 100   # CPU

A standard Gaussian in ``--dim`` dimensions (potential_fn, float32) is sampled
with ``--particles`` chains for ``--samples`` iterations, once keeping every
draw and once with ``thinning=10`` (every tenth draw, NumPyro's own option).
Each run is its own process; its peak is the device's peak bytes in use (GPU)
or the growth of the process's peak resident memory from just before the run
(CPU, which also counts XLA compiling). The draws are
``particles x samples / thinning x dim x 4`` bytes; NumPyro's vectorized MCMC
collects them iteration-major and transposes them to chains-first once at the
end, so a run holds about two copies of its draws at its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _run(particles: int, samples: int, dim: int, thinning: int, warmup: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from numpyro.infer import MCMC

    sys.path.insert(0, os.path.dirname(__file__))
    from run import _peak_memory, _rss

    from numpyro_dilation import DilationKernel

    init = jax.random.normal(jax.random.PRNGKey(1), (particles, dim))
    jax.block_until_ready(init)
    baseline = _rss()
    mcmc = MCMC(
        DilationKernel(potential_fn=lambda x: 0.5 * jnp.sum(x**2)),
        num_warmup=warmup,
        num_samples=samples,
        num_chains=particles,
        chain_method="vectorized",
        thinning=thinning,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), init_params=init)
    draws = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(draws)
    peak, kind = _peak_memory(baseline)
    return {
        "particles": particles,
        "samples": samples,
        "dim": dim,
        "thinning": thinning,
        "draws_shape": list(draws.shape),
        "draws_bytes": int(np.asarray(draws).nbytes),
        "peak_bytes": int(peak),
        "peak_kind": kind,
        "device": jax.devices()[0].device_kind,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--thinning", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        out = _run(
            args.particles, args.samples, args.dim, args.thinning[0], args.warmup
        )
        print("RESULT " + json.dumps(out), flush=True)
        return [out]
    rows = []
    for thinning in args.thinning:
        cmd = [sys.executable, __file__, "--one", "--thinning", str(thinning)]
        for flag in ("particles", "samples", "dim", "warmup"):
            cmd += [f"--{flag}", str(getattr(args, flag))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise RuntimeError(proc.stderr[-3000:])
        row = json.loads(lines[-1][len("RESULT ") :])
        rows.append(row)
        draws_mib, peak_mib = row["draws_bytes"] / 2**20, row["peak_bytes"] / 2**20
        print(
            f"{row['particles']} particles x {row['samples']} iterations x "
            f"d={row['dim']}, thinning={row['thinning']}: draws {draws_mib:.0f} MiB, "
            f"peak {peak_mib:.0f} MiB ({peak_mib / draws_mib:.2f}x the draws; "
            f"{row['peak_kind']}, {row['device']})",
            flush=True,
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
