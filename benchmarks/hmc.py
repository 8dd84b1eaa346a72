"""MALA and HMC moves against NUTS (and BlackJAX's ChEES-HMC) on correlated,
curved and real posteriors of 2 to 502 dimensions.

    python benchmarks/hmc.py [--targets spread,banana,...] [--particles 1024]
        [--reference benchmarks/results/hmc_reference.json] [--no-chees]
        [--dk-steps mala,hmc] [--low-rank-mass R] [--dense-mass] [--seed S]

For each target, with the defaults otherwise (500 warmup + 200 draws, 1024
particles; NUTS 4 chains of 500 + 1000), same seed: NUTS,
``DilationKernel(step="mala")``, ``DilationKernel(step="hmc")``
(``numpyro_dilation.compare``, one call per sampler so that each run's
``DilationWarning`` is its own) and, with blackjax installed (the ``bench``
extra), BlackJAX's ChEES-HMC (``blackjax.chees_adaptation`` with its
ensemble-estimated diagonal mass matrix, then ``blackjax.dynamic_hmc``) with
as many chains as particles, 500 + 200. Printed per run, as a markdown row:
wall time apart from compilation (and the compilation), gradients (warmup
included), the smallest bulk ESS, ESS per gradient and ESS per second
against NUTS's in the same run (ESS per second is the inverse of the time to
the same smallest ESS), and the answer: the largest |mean error| in Monte
Carlo standard errors (``se = sd / sqrt(ESS)`` per coordinate,
``numpyro.diagnostics.effective_sample_size``, the reference's added in
quadrature), the largest |sd / sd_ref - 1|, and the end-of-warmup warnings.
With ``--low-rank-mass R`` each DilationKernel move also runs with
``low_rank_mass=R`` (a diagonal preconditioner that whitens ``R`` more
directions; rows "DK mala, rank R"); with ``--dense-mass`` with
``dense_mass=True`` (rows "DK hmc, dense"), for the dimensions where the
default (``dense_mass=None``) is diagonal.

Targets (the goals of issue 10; ``init`` is NumPyro's ``init_to_uniform``
unless said):

* ``rotated``: 10-d Gaussian, variances log-spaced over 1..1e3 (condition
  number 1e3) in a random rotation; init uniform(-3, 3). Exact answer.
* ``rotated50``: 50-d, variances over 1..1e4 (condition number 1e4). Exact.
* ``spread``: 100-d Gaussian, variances log-spaced over 1e-2..1e2, rotated;
  init standard normal. Exact.
* ``banana``: x1 ~ N(0, 10^2), x2 | x1 ~ N(0.03 (x1^2 - 100), 1). Exact
  means 0 and sds 10 and sqrt(0.03^2 * 2 * 10^4 + 1).
* ``sv``: ``targets.stochastic_volatility_model`` (non-centred, 100 days,
  d = 103); ``irt``: ``targets.item_response_model`` (400 x 100, d = 502);
  ``hier_logistic``: ``targets.hierarchical_logistic_model`` (5 groups, 10
  predictors correlated 0.9, d = 66); ``eight_schools``; ``logistic``:
  ``targets.logistic_regression_model`` (20000 x 50, d = 51). Against a long
  NUTS run (4 chains of 1000 + 25000, ``target_accept_prob=0.99``:
  :func:`reference_draws`), kept in the ``--reference`` JSON file and
  computed when missing from it. ``irt`` runs only when named.
"""

import argparse
import functools
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from numpyro.infer.initialization import init_to_uniform

from numpyro_dilation import DilationKernel, arviz_compat
from numpyro_dilation.compare import Run, compare
from numpyro_dilation.compile_timer import CompileTimer
from numpyro_dilation.diagnostics import DilationWarning
from numpyro_dilation.validation import targets

REFERENCE = Path(__file__).parent / "results" / "hmc_reference.json"
EXACT = ("rotated", "rotated50", "spread", "banana")
MODELS = ("sv", "irt", "hier_logistic", "eight_schools", "logistic")
REFERENCE_ACCEPT = 0.99


def _gaussian(dim, low, high, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.logspace(low, high, dim)) @ q.T
    chol = jnp.asarray(np.linalg.cholesky(cov), jnp.float32)

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(dim), scale_tril=chol))

    return model, {"mean": np.zeros(dim), "sd": np.sqrt(np.diag(cov))}


def _banana():
    def model():
        x1 = numpyro.sample("x1", dist.Normal(0.0, 10.0))
        numpyro.sample("x2", dist.Normal(0.03 * (x1**2 - 100.0), 1.0))

    sd = np.array([10.0, np.sqrt(0.03**2 * 2e4 + 1.0)])
    return model, {"mean": np.zeros(2), "sd": sd}


def _standard_normal(site=None):
    if site["type"] == "sample" and not site["is_observed"]:
        return jax.random.normal(site["kwargs"]["rng_key"], site["fn"].shape())
    return None


init_to_standard_normal = functools.partial(_standard_normal)
"""Initial points N(0, I) for real sites (a partial, as NumPyro's strategies)."""


def target(name):
    """``(model, model_args, init_strategy, exact answer or None)``."""
    if name in ("rotated", "rotated50"):
        dim, high, seed = (10, 3, 0) if name == "rotated" else (50, 4, 2)
        model, exact = _gaussian(dim, 0, high, seed)
        return model, (), init_to_uniform(radius=3), exact
    if name == "spread":
        model, exact = _gaussian(100, -2, 2, 1)
        return model, (), init_to_standard_normal, exact
    if name == "banana":
        model, exact = _banana()
        return model, (), init_to_uniform(radius=2), exact
    data = {
        "sv": lambda: (targets.stochastic_volatility_data(),),
        "irt": lambda: (targets.item_response_data(),),
        "hier_logistic": lambda: targets.hierarchical_logistic_data()[:3],
        "eight_schools": lambda: (),
        "logistic": lambda: targets.logistic_regression_data(),
    }[name]()
    model = {
        "sv": targets.stochastic_volatility_model,
        "irt": targets.item_response_model,
        "hier_logistic": targets.hierarchical_logistic_model,
        "eight_schools": targets.eight_schools_model,
        "logistic": targets.logistic_regression_model,
    }[name]
    return model, data, init_to_uniform, None


def flat(samples):
    """``{site: (chain, draw, ...)}`` -> ``(chain, draw, coordinates)``, sites
    in sorted order, each flattened in C order."""
    arrays = [np.asarray(samples[k]) for k in sorted(samples)]
    return np.concatenate([a.reshape(a.shape[:2] + (-1,)) for a in arrays], -1)


def summary(x):
    """Per coordinate of ``x (chain, draw, coordinates)``: mean, sd and the
    Monte Carlo standard error of the mean, ``sd / sqrt(ESS)``."""
    sd = x.std((0, 1))
    ess = effective_sample_size(x)
    return {"mean": x.mean((0, 1)), "sd": sd, "mcse": sd / np.sqrt(ess)}


def mcmc_draws(
    kernel, model_args, num_warmup, num_samples, num_chains, seed, divergences=False
):
    """``MCMC(kernel, chain_method="vectorized")`` run from ``PRNGKey(seed)``:
    its draws ``{site: (chain, draw, ...)}``; with ``divergences``, prints its
    divergent transitions."""
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    fields = ("diverging",) if divergences else ()
    mcmc.run(jax.random.PRNGKey(seed), *model_args, extra_fields=fields)
    if divergences:
        divergent = int(np.sum(mcmc.get_extra_fields()["diverging"]))
        total = num_chains * num_samples
        print(f"{divergent} divergent transitions of {total}", file=sys.stderr)
    return {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}


def reference_draws(model, model_args):
    """The long NUTS reference run: 4 chains of 1000 + 25000, seed 1, with
    ``target_accept_prob=REFERENCE_ACCEPT`` (NUTS's default 0.8 left 854
    divergent transitions in 100000 on the stochastic-volatility model, where
    the persistence nears 1, and too little of ``mu``'s tails); prints its
    divergent transitions."""
    nuts = NUTS(model, target_accept_prob=REFERENCE_ACCEPT)
    return mcmc_draws(nuts, model_args, 1000, 25000, 4, 1, divergences=True)


def reference_run(model, model_args):
    """:func:`summary` of :func:`reference_draws`."""
    return summary(flat(reference_draws(model, model_args)))


def answer(x, ref):
    """The largest |mean error| in standard errors and |sd / sd_ref - 1|."""
    s = summary(x)
    se = np.sqrt(s["mcse"] ** 2 + np.asarray(ref.get("mcse", 0.0)) ** 2)
    z = np.abs(s["mean"] - np.asarray(ref["mean"])) / se
    return float(z.max()), float(np.max(np.abs(s["sd"] / np.asarray(ref["sd"]) - 1)))


def posterior_draws(idata):
    """A converted run's posterior as ``(chain, draw, coordinates)`` (:func:`flat`)."""
    post = idata["posterior"]
    names = post.data_vars if hasattr(post, "data_vars") else post
    return flat({k: post[k].values for k in names})


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
    draws = {}
    for run, idata in comparison.idata.items():
        x = posterior_draws(idata)
        draws[run] = x.reshape(-1, x.shape[-1])
    return comparison.table, draws


def answer_errors(x, mean, sd):
    """The largest |mean error| in sds and the largest |sd / sd_true - 1| of
    draws ``x`` (draws, coordinates)."""
    return np.max(np.abs(x.mean(0) - mean) / sd), np.max(np.abs(x.std(0) / sd - 1.0))


def _ess_bulk_min(posterior):
    import arviz as az

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "More chains", UserWarning)
        ess = az.ess(arviz_compat.from_posterior(posterior), method="bulk")
    values = np.concatenate([np.ravel(np.asarray(v)) for v in ess.data_vars.values()])
    return float(np.nanmin(values))


def dilation_or_nuts(name, kernel, model, model_args, particles, seed=0):
    """One ``compare`` run from ``PRNGKey(seed)``: its table row, draws
    ``(chain, draw, coordinates)`` and DilationWarnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DilationWarning)
        comparison = compare(
            model,
            *model_args,
            kernels={name: kernel},
            num_warmup=500,
            num_samples=200,
            num_particles=particles,
            seed=seed,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    messages = [str(w.message) for w in caught if w.category is DilationWarning]
    row = comparison.table.loc[name]
    out = {k: float(row[k]) for k in ("time_s", "compile_s", "gradients")}
    out["ess"] = float(row["ess_bulk_min"])
    out["divergences"] = float(row["divergences"])
    return out, posterior_draws(comparison.idata[name]), messages


def chees(model, model_args, init, chains, seed=0):
    """BlackJAX's ChEES-HMC, 500 + 200, ``chains`` chains started by ``init``:
    its row and constrained draws ``(chain, draw, coordinates)``."""
    import blackjax
    import optax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    key_init, key_warmup, key_sample = jax.random.split(jax.random.PRNGKey(seed), 3)
    info = initialize_model(
        jax.random.split(key_init, chains),
        model,
        model_args=model_args,
        init_strategy=init,
    )
    params = info.param_info.z
    one = jax.tree.map(lambda a: a[0], params)
    _, unravel = ravel_pytree(one)
    positions = jax.vmap(lambda p: ravel_pytree(p)[0])(params)

    def logdensity(x):
        return -info.potential_fn(unravel(x))

    def run(key_warmup, key_sample, positions):
        warmup = blackjax.chees_adaptation(
            logdensity, chains, mass_matrix_estimation="diagonal"
        )
        (states, parameters), warmup_info = warmup.run(
            key_warmup, positions, 0.1, optax.adam(0.025), 500
        )
        step = jax.vmap(blackjax.dynamic_hmc(logdensity, **parameters).step)

        def one_step(states, key):
            states, step_info = step(jax.random.split(key, chains), states)
            return states, (states.position, step_info.num_integration_steps)

        _, (draws, steps) = jax.lax.scan(
            one_step, states, jax.random.split(key_sample, 200)
        )
        warmup_steps = jnp.sum(warmup_info.info.num_integration_steps)
        return draws, warmup_steps + jnp.sum(steps)

    with CompileTimer() as timer:
        start = time.perf_counter()
        draws, gradients = jax.jit(run)(key_warmup, key_sample, positions)
        jax.block_until_ready(draws)
        wall = time.perf_counter() - start
    constrained = jax.vmap(jax.vmap(lambda x: info.postprocess_fn(unravel(x))))(
        jnp.swapaxes(draws, 0, 1)
    )
    posterior = {k: np.asarray(v) for k, v in constrained.items()}
    out = {
        "time_s": wall - timer.seconds,
        "compile_s": timer.seconds,
        "gradients": float(gradients),
        "ess": _ess_bulk_min(posterior),
    }
    return out, flat(posterior)


_WARNINGS = {
    "still moving": "still moving",
    "still changing": "spread still changing",
    "region whose scale": "sticky",
    "divergent": "divergences",
    "barely": "low acceptance",
    "stuck": "stuck",
    "mix slowly": "slow mixing",
}


def warning_summary(messages):
    """The end-of-warmup warnings, in short ("no" when none)."""
    found = [
        short for key, short in _WARNINGS.items() if any(key in m for m in messages)
    ]
    return ", ".join(found) or ("other" if messages else "no")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # The item-response model only on request: its HMC run does not finish in
    # 20 minutes on 2 cores (docs/known-issues.md).
    default = [t for t in EXACT + MODELS if t != "irt"]
    parser.add_argument("--targets", default=",".join(default))
    parser.add_argument("--particles", type=int, default=1024)
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--no-chees", action="store_true")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="every sampler's seed (ESS per gradient moves by 10-30%% between seeds)",
    )
    parser.add_argument(
        "--dk-steps",
        default="mala,hmc",
        help="the DilationKernel moves to run (NUTS always runs: the yardstick)",
    )
    parser.add_argument(
        "--low-rank-mass",
        type=int,
        default=0,
        help="also run each DilationKernel move with low_rank_mass=R",
    )
    parser.add_argument(
        "--dense-mass",
        action="store_true",
        help="also run each DilationKernel move with dense_mass=True",
    )
    args = parser.parse_args()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()}")
    if not args.no_chees:
        try:
            import blackjax  # noqa: F401
        except ImportError:
            print("blackjax is not installed (pip install -e .[bench]): no ChEES rows")
            args.no_chees = True
    stored = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    print(
        "| target | sampler | time (s) | gradients | ESS min | ESS/grad vs NUTS "
        "| ESS/s vs NUTS | max mean error (se) | max \\|sd ratio - 1\\| | warns |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.targets.split(","):
        model, model_args, init, exact = target(name)
        if exact is None:
            if name not in stored:
                ref = reference_run(model, model_args)
                stored[name] = {k: v.tolist() for k, v in ref.items()}
                args.reference.write_text(json.dumps(stored))
            exact = stored[name]
        runs = {"NUTS": Run(NUTS(model, init_strategy=init), num_samples=1000)}
        for step in args.dk_steps.split(","):
            runs[f"DK {step}"] = DilationKernel(model, step=step, init_strategy=init)
            if args.low_rank_mass:
                runs[f"DK {step}, rank {args.low_rank_mass}"] = DilationKernel(
                    model,
                    step=step,
                    init_strategy=init,
                    low_rank_mass=args.low_rank_mass,
                )
            if args.dense_mass:
                runs[f"DK {step}, dense"] = DilationKernel(
                    model, step=step, init_strategy=init, dense_mass=True
                )
        rows = {}
        for run, kernel in runs.items():
            rows[run] = dilation_or_nuts(
                run, kernel, model, model_args, args.particles, args.seed
            )
        if not args.no_chees:
            row, x = chees(model, model_args, init, args.particles, args.seed)
            rows["ChEES (BlackJAX)"] = (row, x, [])
        nuts = rows["NUTS"][0]
        for i, (run, (row, x, messages)) in enumerate(rows.items()):
            err, sd_err = answer(x, exact)
            per_grad = (row["ess"] / row["gradients"]) / (
                nuts["ess"] / nuts["gradients"]
            )
            per_s = (row["ess"] / row["time_s"]) / (nuts["ess"] / nuts["time_s"])
            warns = warning_summary(messages) if run.startswith("DK") else ""
            print(
                f"| {name if i == 0 else ''} | {run} | {row['time_s']:.1f} "
                f"({row['compile_s']:.1f}) | {row['gradients']:.2g} | "
                f"{row['ess']:.0f} | {per_grad:.2f} | {per_s:.2f} | {err:.1f} | "
                f"{sd_err:.3f} | {warns} |",
                flush=True,
            )
            for m in messages:
                print(f"<!-- {name}, {run}: {m} -->", flush=True)


if __name__ == "__main__":
    main()
