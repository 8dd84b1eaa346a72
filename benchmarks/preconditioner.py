"""Diagonal against dense population preconditioner, as the dimension grows.

    python benchmarks/preconditioner.py [--dims 10,30,100,200] [--particles 1024]
        [--targets independent,rotated,eight_schools,breast_cancer,two_modes]
        [--step mala|hmc|auto]

The measurement behind the ``dense_mass=None`` rule of ``DilationKernel``.
For each target, with the defaults otherwise (500 warmup + 200 draws, 1024
particles), same seed: ``DilationKernel(dense_mass=False)`` and
``DilationKernel(dense_mass=True)`` side by side (``numpyro_dilation.compare``),
and NUTS (4 chains of 500 + 1000, diagonal mass) on the two real models, where
its draws are also the reference. Printed per run: the ratio ``d / particles``,
gradients, the smallest bulk ESS, ESS per gradient of dense against
diagonal's in the same run (and against NUTS's where NUTS ran), and the answer:
the largest |mean error| in sds and the largest |sd / sd_true - 1|.

* ``independent``: d-dim Gaussian, variances log-spaced over 1e-2..1e2 on the
  axes: a diagonal preconditioner is exact there, a dense one only adds the
  noise of estimating d(d-1)/2 covariances from the population.
* ``rotated``: the same variances in a random rotation (condition number 1e4).
* ``eight_schools``: non-centred eight schools, d = 10.
* ``breast_cancer``: logistic regression on scikit-learn's bundled data, d = 31.
* ``two_modes`` (only when named): ``targets.asymmetric_mixture`` in each
  dimension, two modes along the first axis (weights 0.3 / 0.7): with
  ``--step auto`` the MALA moves and jumps that ``step="auto"`` runs on a
  multimodal posterior, with the preconditioner that its dense rule gives.
Initial points: standard normal for the Gaussians, NumPyro's uniform(-2, 2)
for the real models.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from hmc import (  # the script's folder is on sys.path
    answer_errors,
    init_to_standard_normal,
    side_by_side,
)
from numpyro.infer import NUTS
from numpyro.infer.initialization import init_to_uniform

from numpyro_dilation import DilationKernel
from numpyro_dilation.compare import Run
from numpyro_dilation.validation import targets


def _gaussian(dim, rotated, seed=0):
    rng = np.random.default_rng(seed)
    variances = np.logspace(-2, 2, dim)
    q = np.linalg.qr(rng.normal(size=(dim, dim)))[0] if rotated else np.eye(dim)
    cov = q @ np.diag(variances) @ q.T
    chol = jnp.asarray(np.linalg.cholesky(cov), jnp.float32)

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=chol))

    return model, (), np.zeros(dim), np.sqrt(np.diag(cov))


def _cases(names, dims):
    for name in names:
        if name in ("independent", "rotated"):
            for dim in dims:
                model, args, mean, sd = _gaussian(dim, name == "rotated")
                yield (
                    f"{name} d={dim}",
                    dim,
                    model,
                    args,
                    (mean, sd),
                    init_to_standard_normal,
                )
        elif name == "two_modes":
            for dim in dims:
                target = targets.asymmetric_mixture(dim)
                mean = np.asarray(target.reference["mean"])
                sd = np.sqrt(np.asarray(target.reference["var"]))
                model = targets.as_numpyro_model(target)
                yield f"{name} d={dim}", dim, model, (), (mean, sd), init_to_uniform
        elif name == "eight_schools":
            yield name, 10, targets.eight_schools_model, (), None, init_to_uniform
        elif name == "breast_cancer":
            data = targets.breast_cancer_data()
            model = targets.logistic_regression_model
            yield name, 31, model, data, None, init_to_uniform
        else:
            raise ValueError(f"unknown target {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets", default="independent,rotated,eight_schools,breast_cancer"
    )
    parser.add_argument("--dims", default="10,30,100,200")
    parser.add_argument("--particles", type=int, default=1024)
    parser.add_argument("--step", default="mala", choices=("mala", "hmc", "auto"))
    args = parser.parse_args()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()}")
    dims = [int(d) for d in args.dims.split(",")]
    for label, dim, model, model_args, truth, init in _cases(
        args.targets.split(","), dims
    ):
        kernels = {}
        if truth is None:
            kernels["NUTS"] = Run(NUTS(model, init_strategy=init), num_samples=1000)
        for dense in (False, True):
            kernels["dense" if dense else "diagonal"] = DilationKernel(
                model, step=args.step, dense_mass=dense, init_strategy=init
            )
        table, draws = side_by_side(model, model_args, kernels, args.particles)
        mean, sd = truth or (draws["NUTS"].mean(0), draws["NUTS"].std(0))
        print(f"\n{label} (d / particles = {dim / args.particles:.3f}):")
        for run, x in draws.items():
            row = table.loc[run]
            versus = row["ess_per_grad"] / table.loc["diagonal", "ess_per_grad"]
            nuts = (
                f", {row['ess_per_grad'] / table.loc['NUTS', 'ess_per_grad']:6.2f}x "
                "NUTS's"
                if "NUTS" in table.index
                else ""
            )
            err, sd_err = answer_errors(x, mean, sd)
            print(
                f"  {run:8s} gradients {row['gradients']:.3g}, ESS min "
                f"{row['ess_bulk_min']:8.0f}, ESS/grad {versus:6.2f}x diagonal's"
                f"{nuts}; max |mean err| {err:.3f} sd, max |sd ratio - 1| "
                f"{sd_err:.3f}; time {row['time_s']:.1f} s"
            )


if __name__ == "__main__":
    main()
