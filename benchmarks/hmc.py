"""HMC moves against MALA and NUTS on correlated and curved posteriors.

    python benchmarks/hmc.py [--targets rotated,spread,banana] [--particles 1024]

For each target (known answer), with the defaults otherwise (500 warmup + 200
draws, 1024 particles; NUTS 4 chains of 500 + 1000), same seed: NUTS,
``DilationKernel(step="mala")`` and ``DilationKernel(step="hmc")`` side by side
(``numpyro_dilation.compare``). Printed per run: wall time apart from
compilation and the compilation, gradients (warmup included), the smallest
bulk ESS, ESS per gradient against NUTS's in the same run, and the answer:
the largest |mean error| in sds and the largest |sd / sd_true - 1|.

* ``rotated``: 10-d Gaussian, variances log-spaced over 1..1e3 (condition
  number 1e3) in a random rotation; initial points uniform(-3, 3).
* ``spread``: 100-d Gaussian, variances log-spaced over 1e-2..1e2, rotated;
  initial points standard normal (NumPyro's ``init_to_sample`` of a N(0, I)
  prior would do the same).
* ``banana``: x1 ~ N(0, 10^2), x2 | x1 ~ N(0.03 (x1^2 - 100), 1); exact means
  0 and sds 10 and sqrt(0.03^2 * 2 * 10^4 + 1).
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import NUTS
from numpyro.infer.initialization import init_to_uniform

from numpyro_dilation import DilationKernel
from numpyro_dilation.compare import Run, compare


def _gaussian(dim, low, high, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.logspace(low, high, dim)) @ q.T
    chol = jnp.asarray(np.linalg.cholesky(cov), jnp.float32)

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=chol))

    return model, np.zeros(dim), np.sqrt(np.diag(cov))


def _banana():
    def model():
        x1 = numpyro.sample("x1", dist.Normal(0.0, 10.0))
        numpyro.sample("x2", dist.Normal(0.03 * (x1**2 - 100.0), 1.0))

    return model, np.zeros(2), np.array([10.0, np.sqrt(0.03**2 * 2e4 + 1.0)])


def _standard_normal(site=None):
    if site["type"] == "sample" and not site["is_observed"]:
        return jax.random.normal(site["kwargs"]["rng_key"], site["fn"].shape())
    return None


init_to_standard_normal = functools.partial(_standard_normal)
"""Initial points N(0, I) for real sites (a partial, as NumPyro's strategies)."""


def _target(name):
    if name == "rotated":
        model, mean, sd = _gaussian(10, 0, 3, 0)
        return model, mean, sd, init_to_uniform(radius=3)
    if name == "spread":
        model, mean, sd = _gaussian(100, -2, 2, 1)
        return model, mean, sd, init_to_standard_normal
    model, mean, sd = _banana()
    return model, mean, sd, init_to_uniform(radius=2)


def _draws(idata):
    post = idata["posterior"]
    names = sorted(post.data_vars) if hasattr(post, "data_vars") else sorted(post)
    arrays = [np.asarray(post[k].values) for k in names]
    return np.concatenate([a.reshape(a.shape[0] * a.shape[1], -1) for a in arrays], 1)


def side_by_side(model, model_args, kernels, particles):
    """``compare`` at the defaults (500 warmup + 200 draws, same seed): its table
    and each run's draws, flat (draws, coordinates)."""
    comparison = compare(
        model,
        *model_args,
        kernels=kernels,
        num_warmup=500,
        num_samples=200,
        num_particles=particles,
    )
    draws = {run: _draws(idata) for run, idata in comparison.idata.items()}
    return comparison.table, draws


def answer_errors(x, mean, sd):
    """The largest |mean error| in sds and the largest |sd / sd_true - 1|."""
    return np.max(np.abs(x.mean(0) - mean) / sd), np.max(np.abs(x.std(0) / sd - 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="rotated,spread,banana")
    parser.add_argument("--particles", type=int, default=1024)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()}")
    for name in args.targets.split(","):
        model, mean, sd, init = _target(name)
        kernels = {
            "NUTS": Run(NUTS(model, init_strategy=init), num_samples=1000),
            "DK mala": DilationKernel(model, init_strategy=init),
            "DK hmc": DilationKernel(model, step="hmc", init_strategy=init),
        }
        table, draws = side_by_side(model, (), kernels, args.particles)
        nuts_per_grad = table.loc["NUTS", "ess_per_grad"]
        print(f"\n{name}:")
        for run, x in draws.items():
            err, sd_err = answer_errors(x, mean, sd)
            row = table.loc[run]
            per_grad = row["ess_per_grad"] / nuts_per_grad
            print(
                f"  {run:8s} time {row['time_s']:6.1f} s + {row['compile_s']:5.1f} s "
                f"compile, gradients {row['gradients']:.3g}, ESS min "
                f"{row['ess_bulk_min']:8.0f}, ESS/grad {per_grad:6.2f}x "
                f"NUTS's; max |mean err| {err:.3f} sd, max |sd ratio - 1| {sd_err:.3f}"
            )


if __name__ == "__main__":
    main()
