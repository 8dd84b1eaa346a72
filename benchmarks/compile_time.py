"""Time to a first answer on eight schools: compilation and run of ``mcmc.run``,
DilationKernel (1024 particles, 500 + 200) against NUTS (4 chains, 500 + 500)
in the same process, as a ratio.

    python benchmarks/compile_time.py [--repeats 3]

Each repeat builds fresh kernels (so everything compiles again) and times one
``mcmc.run`` inside ``numpyro_dilation.compile_timer.CompileTimer``; the
medians are printed with the ratio DilationKernel / NUTS.
"""

import argparse
import time
import warnings

import jax
import numpy as np
from numpyro.infer import MCMC, NUTS

from numpyro_dilation import DilationKernel
from numpyro_dilation.compile_timer import CompileTimer
from numpyro_dilation.validation import targets


def one_run(kernel, num_chains: int, num_warmup: int, num_samples: int):
    """(compile seconds, seconds after compilation) of one ``mcmc.run``."""
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with CompileTimer() as timer:
            start = time.perf_counter()
            mcmc.run(jax.random.PRNGKey(0))
            jax.block_until_ready(mcmc.get_samples())
            wall = time.perf_counter() - start
    return timer.seconds, wall - timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = targets.eight_schools_model
    runs = {"NUTS": [], "DilationKernel": []}
    for _ in range(args.repeats):
        runs["NUTS"].append(one_run(NUTS(model), 4, 500, 500))
        runs["DilationKernel"].append(one_run(DilationKernel(model), 1024, 500, 200))
    medians = {name: np.median(np.asarray(r), axis=0) for name, r in runs.items()}
    for name, (compile_s, run_s) in medians.items():
        print(f"{name:>15}: compile {compile_s:6.1f} s, run {run_s:6.2f} s")
    ratio = medians["DilationKernel"] / medians["NUTS"]
    print(f"DilationKernel / NUTS: compile {ratio[0]:.2f}x, run {ratio[1]:.2f}x")


if __name__ == "__main__":
    main()
