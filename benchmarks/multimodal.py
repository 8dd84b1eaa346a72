"""Multimodal targets: DilationKernel, NUTS and adaptive tempered SMC side by side.

Every method gets the same number of gradient evaluations: DilationKernel's
(one per particle per iteration, plus the peak climbs of its mode fits) is the
budget; NUTS (4 chains) samples until it has spent it, BlackJAX's adaptive
tempered SMC (MALA moves) gets as many MALA steps per temperature as fit in
it. Printed per target: gradients, log-density-only evaluations, wall time
(compilation included) and the accuracy figures of docs/multimodal.md:

* 40-mode 2-D mixture: modes found (of 40) and mode-weight TV;
* two modes 2:1, d = 8, 16, 32, 64: share of the heavy mode (exact 2/3);
* many-well, d = 32: right-well mass per pair (exact 0.8443), mean and worst;
* asymmetric mixture (off-centre modes, widths 0.5 and 1.5), d = 2, 8, 32:
  share of the light mode (exact 0.3);
* unimodal (correlated Gaussian d = 20, eight schools): the largest error of a
  posterior mean, in posterior sds, with the correction on and off;
* cost: wall time of a Langevin iteration, a jump iteration, a mode fit and a
  rebalancing at 1k, 8k and 64k particles (two modes, d = 32).

Particles start uniform in [-r, r]^d (r = 2, NumPyro's init_to_uniform, or 40
for the 40-mode box): each particle's start is its own Dirac centre. SMC's
prior is N(0, r^2 I); NUTS starts from 4 of the same points.

    python benchmarks/multimodal.py                       # the issue's sizes
    python benchmarks/multimodal.py --quick               # small, to try it
    python benchmarks/multimodal.py --only two_modes --dims 8 16
"""

import argparse
import time
from collections.abc import Callable

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import MCMC, NUTS

from numpyro_dilation import DilationKernel
from numpyro_dilation.core.multimodal import modes
from numpyro_dilation.validation import targets

CASES = ("forty_modes", "two_modes", "many_well", "asymmetric", "unimodal", "cost")


def dilation_cost(num_particles: int, num_warmup: int, num_samples: int, kernel):
    """Gradients and log-density-only evaluations of one DilationKernel run.

    One gradient per particle per iteration; each mode fit (four while tuning
    and one at the last warmup iteration, when jumps are on) climbs from K
    cluster anchors (K (CLIMB_STEPS + 1) gradients) and tests 3 K NEIGHBOURS
    segment points; the rebalancing draws one point per particle.
    """
    options = kernel._options
    k = min(options.max_modes, num_particles)
    num_fits = (4 if options.jump_prob > 0 else 0) + int(options.rebalance)
    gradients = num_particles * (num_warmup + num_samples)
    gradients += num_fits * k * (modes.CLIMB_STEPS + 1)
    values = num_fits * 3 * k * min(modes.NEIGHBOURS, k - 1)
    values += num_particles * int(options.rebalance)
    return gradients, values


def run_dilation(logdensity_fn, init, num_warmup, num_samples, seed, **options):
    kernel = DilationKernel(potential_fn=lambda x: -logdensity_fn(x), **options)
    thinning = max(1, num_samples // 100)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=init.shape[0],
        chain_method="vectorized",
        thinning=thinning,
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), init_params=init)
    draws = np.asarray(mcmc.get_samples())
    seconds = time.perf_counter() - start
    gradients, values = dilation_cost(init.shape[0], num_warmup, num_samples, kernel)
    return draws, gradients, values, seconds, mcmc


def run_nuts(logdensity_fn, init, budget, seed, num_warmup=1000, max_draws=20000):
    """4 NUTS chains: warmup, then as many draws as the budget leaves."""
    potential = lambda x: -logdensity_fn(x)  # noqa: E731
    start = time.perf_counter()
    warm = MCMC(
        NUTS(potential_fn=potential),
        num_warmup=num_warmup,
        num_samples=1,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    warm.warmup(
        jax.random.PRNGKey(seed),
        init_params=init,
        collect_warmup=True,
        extra_fields=("num_steps",),
    )
    steps = np.asarray(warm.get_extra_fields(group_by_chain=True)["num_steps"])
    spent = int(steps.sum())
    per_iteration = max(float(steps[:, num_warmup // 2 :].mean()), 1.0)
    num_samples = max(int((budget - spent) / (4 * per_iteration)), 100)
    thinning = max(1, num_samples // max_draws)
    mcmc = warm
    mcmc.num_samples, mcmc.thinning = num_samples - num_samples % thinning, thinning
    mcmc.run(jax.random.PRNGKey(seed + 1), extra_fields=("num_steps",))
    spent += int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum()) * thinning
    draws = np.asarray(mcmc.get_samples())
    return draws, spent, 0, time.perf_counter() - start


def run_smc(logdensity_fn, dim, radius, num_particles, budget, seed):
    """BlackJAX adaptive tempered SMC from the prior N(0, radius^2 I), MALA moves.

    The MALA step size starts at radius^2 / 10 and is tuned between
    temperatures from the mean acceptance of the last move:
    ``h <- h exp(4 (a - 0.574))``. A pilot run with one MALA step per
    temperature counts the temperatures T; the run then gets
    budget / (num_particles T) MALA steps per temperature.
    """

    def logprior(x):
        return -0.5 * jnp.sum(x**2) / radius**2

    def loglikelihood(x):
        return logdensity_fn(x) - logprior(x)

    def run(num_mcmc_steps, key):
        key_init, key_run = jax.random.split(key)
        x0 = radius * jax.random.normal(key_init, (num_particles, dim))

        def body(carry):
            i, state, step_size = carry
            algorithm = blackjax.adaptive_tempered_smc(
                logprior,
                loglikelihood,
                blackjax.mala.build_kernel(),
                blackjax.mala.init,
                {"step_size": step_size[None]},
                blackjax.smc.resampling.systematic,
                target_ess=0.5,
                num_mcmc_steps=num_mcmc_steps,
            )
            state, info = algorithm.step(jax.random.fold_in(key_run, i), state)
            accept = jnp.mean(info.update_info.acceptance_rate)
            return i + 1, state, step_size * jnp.exp(4 * (accept - 0.574))

        @jax.jit
        def go(x0):
            state = blackjax.smc.tempered.init(x0)
            carry = (0, state, jnp.asarray(0.1 * radius**2))
            return jax.lax.while_loop(lambda c: c[1].tempering_param < 1, body, carry)

        return go(x0)

    start = time.perf_counter()
    temperatures, _, _ = run(1, jax.random.PRNGKey(seed + 1))
    steps = max(1, int(budget / (num_particles * int(temperatures))))
    temperatures, state, _ = run(steps, jax.random.PRNGKey(seed))
    draws = np.asarray(state.particles)
    seconds = time.perf_counter() - start
    gradients = num_particles * steps * int(temperatures)
    values = num_particles * int(temperatures)
    return draws, gradients, values, seconds


def uniform_init(num, dim, radius, seed):
    key = jax.random.PRNGKey(seed)
    return jax.random.uniform(key, (num, dim), minval=-radius, maxval=radius)


def compare(name, target, metric: Callable, args, radius=2.0):
    """The three methods on one target; prints one row each."""
    dim = target.dim
    init = uniform_init(args.particles, dim, radius, args.seed + 1)
    draws, grads, values, seconds, _ = run_dilation(
        target.logdensity_fn, init, args.warmup, args.samples, args.seed
    )
    rows = [("DilationKernel", grads, values, seconds, metric(draws))]
    if not args.skip_nuts:
        nuts = run_nuts(target.logdensity_fn, init[:4], grads, args.seed)
        rows.append(("NUTS x4", *nuts[1:], metric(nuts[0])))
    if not args.skip_smc:
        smc = run_smc(
            target.logdensity_fn, dim, radius, args.particles, grads, args.seed
        )
        rows.append(("adaptive tempered SMC", *smc[1:], metric(smc[0])))
    for method, grads, values, seconds, figures in rows:
        text = "  ".join(f"{k} {v}" for k, v in figures.items())
        print(
            f"{name:<22} {method:<22} grads {grads / 1e6:7.2f}M  values "
            f"{values / 1e6:6.2f}M  {seconds:7.1f}s  {text}",
            flush=True,
        )


def forty_modes(args):
    target = targets.forty_mode_mixture()

    def metric(draws):
        draws = jnp.asarray(draws.reshape(-1, 2))
        found = int(targets.modes_found(draws, target.means))
        tv = float(targets.mode_weight_tv(draws, target.means, target.weights))
        return {"modes_found": found, "TV": f"{tv:.3f}"}

    compare("forty_modes", target, metric, args, radius=40.0)


def _first_mode_share(name, make_target, dims, label, exact, args):
    """For each dimension: the share of draws nearest the first mode."""
    for dim in dims:
        target = make_target(dim)

        def metric(draws, target=target):
            draws = jnp.asarray(draws.reshape(-1, target.dim))
            share = float(jnp.mean(targets.nearest_mode(draws, target.means) == 0))
            return {label: f"{share:.4f}", "error": f"{share - exact:+.4f}"}

        compare(f"{name} d={dim}", target, metric, args)


def two_modes(args):
    _first_mode_share(
        "two_modes", targets.two_unequal_modes, args.dims, "heavy_share", 2 / 3, args
    )


def many_well(args):
    target = targets.many_well(32)
    mass = target.reference["right_well_mass"]

    def metric(draws):
        share = np.asarray(targets.right_well_share(jnp.asarray(draws.reshape(-1, 32))))
        return {
            "right_mean": f"{share.mean():.4f}",
            "worst_error": f"{np.max(np.abs(share - mass)):.4f}",
        }

    compare("many_well d=32", target, metric, args)


def asymmetric(args):
    _first_mode_share(
        "asymmetric",
        targets.asymmetric_mixture,
        args.asym_dims,
        "light_share",
        0.3,
        args,
    )


def _mean_error(draws, mean, sd):
    return float(np.max(np.abs(draws.mean(0) - mean) / sd))


def unimodal(args):
    """Correction on and off on unimodal posteriors: the largest mean error."""
    dim = 20
    rng = np.random.default_rng(0)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.5 * np.eye(dim)
    mean = rng.normal(size=dim)
    precision = jnp.asarray(np.linalg.inv(cov))
    logp = lambda x: -0.5 * (x - mean) @ precision @ (x - mean)  # noqa: E731
    num = min(args.particles, 1024)
    init = uniform_init(num, dim, 2.0, args.seed + 1)
    for label, options in [("on", {}), ("off", {"rebalance": False, "jump_prob": 0.0})]:
        draws, grads, values, seconds, mcmc = run_dilation(
            logp, init, args.warmup, args.samples, args.seed, **options
        )
        error = _mean_error(draws.reshape(-1, dim), mean, np.sqrt(np.diag(cov)))
        modes_found = int(mcmc.last_state.sampler_state.modes.num_modes)
        print(
            f"{'gaussian d=20':<22} {'correction ' + label:<22} grads "
            f"{grads / 1e6:7.2f}M  values {values / 1e6:6.2f}M  {seconds:7.1f}s  "
            f"max_mean_error_sd {error:.4f}  modes {modes_found}",
            flush=True,
        )
    reference = targets.EIGHT_SCHOOLS_REFERENCE
    for label, options in [("on", {}), ("off", {"rebalance": False, "jump_prob": 0.0})]:
        kernel = DilationKernel(targets.eight_schools_model, **options)
        mcmc = MCMC(
            kernel,
            num_warmup=args.warmup,
            num_samples=args.samples,
            num_chains=num,
            chain_method="vectorized",
            thinning=max(1, args.samples // 100),
            progress_bar=False,
        )
        start = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(args.seed))
        samples = mcmc.get_samples()
        seconds = time.perf_counter() - start
        error = max(
            abs(float(np.mean(samples[site])) - ref["mean"]) / ref["sd"]
            for site, ref in reference.items()
        )
        grads, values = dilation_cost(num, args.warmup, args.samples, kernel)
        print(
            f"{'eight_schools':<22} {'correction ' + label:<22} grads "
            f"{grads / 1e6:7.2f}M  values {values / 1e6:6.2f}M  {seconds:7.1f}s  "
            f"max_mean_error_sd {error:.4f}",
            flush=True,
        )


def _seconds(fn, *args, repeat=3):
    """Best wall time of ``fn(*args)`` after one compiling call."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def cost(args):
    """Wall time of each part at 1k, 8k and 64k particles (two modes, d = 32).

    One Langevin iteration (the unit: one gradient per particle), one jump
    iteration, one mode fit (k-means twice, peaks, barrier tests, marginals)
    and one rebalancing (importance draws, assignment, resampling).
    """
    from numpyro_dilation import core
    from numpyro_dilation.core.multimodal import rebalancing

    target = targets.two_unequal_modes(32)
    fn = jax.value_and_grad(target.logdensity_fn)
    langevin_only = core.SamplerOptions(jump_prob=0.0)
    jumps_only = core.SamplerOptions(jump_prob=1.0)
    for n in args.cost_particles:
        x = target.sample_fn(jax.random.PRNGKey(0), n)
        state = core.init(x, fn, core.build_calendar(0, num_levels=1))

        @jax.jit
        def fit(x):
            logdensity = jax.vmap(target.logdensity_fn)(x)
            return modes.find_modes(jax.random.PRNGKey(1), x, logdensity, fn, 64)[0]

        state = state._replace(modes=fit(x))

        def step(options):
            return jax.jit(
                lambda s: core.step(jax.random.PRNGKey(2), s, fn, options)[0]
            )

        rebalance = jax.jit(
            lambda s: rebalancing.rebalance(
                jax.random.PRNGKey(4),
                s.particles.position,
                s.modes,
                target.logdensity_fn,
            )
        )
        unit = _seconds(step(langevin_only), state)
        print(
            f"{'cost d=32':<22} {n:>6} particles  Langevin iteration "
            f"{unit * 1e3:8.1f} ms  jump iteration "
            f"{_seconds(step(jumps_only), state) / unit:5.2f}x  mode fit "
            f"{_seconds(fit, x) / unit:6.1f}x  rebalancing "
            f"{_seconds(rebalance, state) / unit:6.1f}x",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=CASES, default=CASES)
    parser.add_argument("--dims", nargs="*", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--asym-dims", nargs="*", type=int, default=[2, 8, 32])
    parser.add_argument(
        "--cost-particles", nargs="*", type=int, default=[1024, 8192, 65536]
    )
    parser.add_argument("--skip-nuts", action="store_true")
    parser.add_argument("--skip-smc", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1024 particles, 200+100")
    args = parser.parse_args()
    if args.quick:
        args.particles = 1024
    print(
        f"jax {jax.__version__} numpyro {numpyro.__version__} blackjax "
        f"{blackjax.__version__} on {jax.devices()[0].platform}; "
        f"{args.particles} particles, seed {args.seed}",
        flush=True,
    )
    budgets = {  # (warmup, samples) per case at the issue's sizes
        "forty_modes": (400, 400),
        "two_modes": (400, 400),
        "many_well": (1000, 1000),
        "asymmetric": (400, 400),
        "unimodal": (400, 400),
        "cost": (0, 0),
    }
    for case in args.only:
        warmup, samples = (200, 100) if args.quick else budgets[case]
        case_args = argparse.Namespace(**vars(args))
        case_args.warmup = args.warmup or warmup
        case_args.samples = args.samples or samples
        globals()[case](case_args)


if __name__ == "__main__":
    main()
