"""DilationKernel as a NumPyro MCMC kernel: correctness on known posteriors and the
NumPyro/ArviZ contract (docs/design.md section 4)."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.integrate
import scipy.stats
from mc_error import assert_matches
from numpyro.diagnostics import effective_sample_size
from runs import run_vectorized

from numpyro_dilation import DilationKernel, arviz_compat
from numpyro_dilation.core import adaptation, calendar, sampler
from numpyro_dilation.core.multimodal import modes
from numpyro_dilation.validation import targets

NUM_CHAINS = 512


def run(kernel, *args, num_warmup=300, num_samples=100, num_chains=NUM_CHAINS, **kw):
    return run_vectorized(
        kernel,
        *args,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        **kw,
    )


def gaussian_potential(mean, cov):
    precision = jnp.linalg.inv(cov)
    return lambda x: 0.5 * (x - mean) @ precision @ (x - mean)


def spread_init(dim, num_chains=NUM_CHAINS, seed=1):
    return jax.random.uniform(
        jax.random.PRNGKey(seed), (num_chains, dim), minval=-2, maxval=2
    )


def assert_moments_within_mc_error(draws, mean, cov, num_sigma=5.0):
    """Compare the mean and covariance of ``draws`` (chains, draws, d) with the truth.

    Monte Carlo standard errors: se(mean_i) = sqrt(cov_ii / ESS(x_i)); the
    covariance is estimated by the mean of ``p_ij = (x_i - mu_i)(x_j - mu_j)``
    (exact means), whose standard error is that of a mean over independent
    chains (after warmup every particle moves on its own, everything frozen):
    the sd of the chains' own time averages of ``p_ij`` over sqrt(chains).
    (The means' ESS does not serve the products: HMC's draws can be
    antithetic in ``x``, ESS above the number of draws, and not in ``x^2``;
    the chains' averages hold either.) Every mean and every covariance entry
    ``i <= j`` must lie within ``num_sigma`` standard errors (5 sigma: a false
    alarm has probability 6e-7 per entry, < 2e-3 over the 1830 entries of d =
    60 even if they were independent; with 512 chains the estimated se is
    within about 3% of the true one).
    """
    draws = np.asarray(draws, float)
    mean, cov = np.asarray(mean), np.asarray(cov)
    ess_mean = effective_sample_size(draws)
    # Each entry i <= j once (cov is symmetric), its chains' averages only:
    # at d = 60 the 1830 products' autocovariances (FFTs) took half the test.
    i, j = np.triu_indices(len(mean))
    centred = draws - mean
    averages = (centred.transpose(0, 2, 1) @ centred)[:, i, j] / draws.shape[1]
    se_cov = averages.std(0, ddof=1) / np.sqrt(draws.shape[0])
    var = np.diag(cov)
    z_mean = (draws.mean((0, 1)) - mean) / np.sqrt(var / ess_mean)
    z_cov = (averages.mean(0) - cov[i, j]) / se_cov
    assert np.min(ess_mean) > 1000, np.min(ess_mean)
    assert np.max(np.abs(z_mean)) < num_sigma, np.max(np.abs(z_mean))
    assert np.max(np.abs(z_cov)) < num_sigma, np.max(np.abs(z_cov))


def test_correlated_gaussian_20d():
    dim = 20
    rng = np.random.default_rng(0)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.5 * np.eye(dim)
    mean = rng.normal(size=dim)
    mcmc = run(
        DilationKernel(potential_fn=gaussian_potential(mean, cov)),
        init_params=spread_init(dim),
    )
    draws = mcmc.get_samples(group_by_chain=True)
    assert draws.shape == (NUM_CHAINS, 100, dim)
    assert_moments_within_mc_error(draws, mean, cov)


@pytest.mark.parametrize("dense_mass", [False, True])
def test_badly_scaled_gaussian(dense_mass):
    # Standard deviations from 1 to 100: condition number 1e4. Without the
    # population preconditioner, a step small enough for the narrow coordinates
    # leaves the wide ones where they started (within [-2, 2]).
    dim = 10
    sd = np.logspace(0, 2, dim)
    cov = np.diag(sd**2)
    mcmc = run(
        DilationKernel(
            potential_fn=gaussian_potential(jnp.zeros(dim), cov), dense_mass=dense_mass
        ),
        init_params=spread_init(dim),
    )
    assert_moments_within_mc_error(mcmc.get_samples(group_by_chain=True), 0 * sd, cov)


@pytest.mark.parametrize(
    "dim, step, adapt, low_rank, dense",
    [
        (12, "auto", True, 0, True),
        (12, "hmc", True, 0, True),
        (12, "mala", True, 0, False),
        (6, "auto", False, 0, False),
        (6, "auto", True, 2, False),
    ],
)
def test_dense_mass_default_follows_the_step_the_adaptation_and_the_low_rank(
    dim, step, adapt, low_rank, dense
):
    # dense_mass=None: dense exactly when the preconditioner is adapted, no
    # low rank is asked for, and the population is large enough for the moves
    # (core.preconditioner.dense_by_default, whose thresholds
    # tests/core/test_properties.py checks: 64 particles support a dense
    # preconditioner at d = 12 where HMC moves may run, step="auto" or "hmc",
    # and not with MALA's). The decision is made before the warmup, so the
    # state after it is traced, not compiled (jax.eval_shape: its shapes
    # through every warmup program, without XLA).
    num_chains = 64
    kernel = DilationKernel(
        potential_fn=gaussian_potential(jnp.zeros(dim), jnp.eye(dim)),
        adapt_mass_matrix=adapt,
        step=step,
        low_rank_mass=low_rank,
    )
    init_params = spread_init(dim, num_chains)
    keys = jax.random.split(jax.random.PRNGKey(0), num_chains)
    state = jax.eval_shape(lambda k: kernel.init(k, 100, init_params, (), {}), keys)
    inv_mass = state.sampler_state.inv_mass
    assert inv_mass.shape == ((dim, dim) if dense else (dim,))


def test_low_rank_mass_whitens_a_wide_direction():
    # low_rank_mass asks for a diagonal preconditioner (and so MALA moves);
    # the covariance I + 399 v v^T (v = 1 / sqrt(d)) has one direction 20 sds
    # wide, which a diagonal preconditioner leaves to MALA (300 warmup
    # iterations do not spread the population along it: variance 74 of 400
    # in that run). With low_rank_mass=2 the population finds it (400 times
    # the variance of the other directions; noise alone gives up to 2.0
    # times, one such estimate ended at 320) and the draws' moments are right
    # within Monte Carlo error (assert_moments_within_mc_error).
    dim = 60
    v = np.ones(dim) / np.sqrt(dim)
    cov = np.eye(dim) + 399.0 * np.outer(v, v)
    mcmc = run(
        DilationKernel(
            potential_fn=gaussian_potential(jnp.zeros(dim), cov), low_rank_mass=2
        ),
        init_params=spread_init(dim),
    )
    low_rank = mcmc.last_state.sampler_state.low_rank
    assert mcmc.last_state.sampler_state.inv_mass.shape == (dim,)
    assert low_rank.basis.shape == (dim, 2)
    assert abs(float(low_rank.basis[:, 0] @ v)) > 0.9 and low_rank.eigen[0] > 100
    draws = mcmc.get_samples(group_by_chain=True)
    assert_moments_within_mc_error(draws, np.zeros(dim), cov)


def constrained_model(y=None):
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    w = numpyro.sample("w", dist.Dirichlet(jnp.array([1.0, 2.0, 3.0])))
    numpyro.sample("L", dist.LKJCholesky(3, 2.0))
    numpyro.deterministic("tau2", tau**2)
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu + w[0], 1.0), obs=y)


def test_constrained_and_deterministic_sites_and_arviz():
    y = jnp.array([0.5, -0.2, 1.0])
    mcmc = run(DilationKernel(constrained_model), y=y)
    s = mcmc.get_samples()
    assert s["tau"].shape == (NUM_CHAINS * 100,)
    assert s["w"].shape == (NUM_CHAINS * 100, 3) and s["L"].shape[-2:] == (3, 3)
    # Constrained values, exactly.
    assert jnp.all(s["tau"] > 0)
    np.testing.assert_allclose(s["w"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(s["L"] ** 2, -1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(s["tau2"], s["tau"] ** 2, rtol=1e-6)

    # Prior-only sites keep their prior: E[tau] = 2 sqrt(2/pi), E[L_10] = 0.
    # w_0 is in the likelihood: with mu integrated out, y ~ N(w_0 1, I + 11'),
    # so p(w_0 | y) is Beta(1, 5) (the Dirichlet's marginal) times
    # exp(sum(y) w_0 / 4 - 3 w_0^2 / 8); its mean by quadrature, 0.1694 (the
    # prior's 1/6 is 5 standard errors off for HMC's draws), and E[w_2 | w_0] =
    # 3/5 (1 - w_0). Tolerances: 5 Monte Carlo standard errors sd/sqrt(ESS).
    def w0_density(w0):
        return scipy.stats.beta(1, 5).pdf(w0) * np.exp(
            float(y.sum()) * w0 / 4 - 3 * w0**2 / 8
        )

    norm = scipy.integrate.quad(w0_density, 0, 1)[0]
    w0_mean = scipy.integrate.quad(lambda w0: w0 * w0_density(w0), 0, 1)[0] / norm
    draws = mcmc.get_samples(group_by_chain=True)
    for value, truth in [
        (draws["tau"], 2 * np.sqrt(2 / np.pi)),
        (draws["w"][..., 0], w0_mean),
        (draws["w"][..., 2], 3 / 5 * (1 - w0_mean)),
        (draws["L"][..., 1, 0], 0.0),
    ]:
        se = np.std(value) / np.sqrt(effective_sample_size(np.asarray(value)))
        assert abs(np.mean(value) - truth) < 5 * se
    # ArviZ 1.x adds the log likelihood only when asked; 0.x by default.
    idata = az.from_numpyro(mcmc, log_likelihood=True)
    assert "log_likelihood" in arviz_compat.groups(idata)
    assert idata.log_likelihood["y"].shape == (NUM_CHAINS, 100, 3)
    stats = idata.sample_stats
    for name in ["lp", "acceptance_rate", "step_size", "diverging", "dilation_level"]:
        assert stats[name].shape == (NUM_CHAINS, 100), name
    np.testing.assert_allclose(stats["dilation_level"], 1.0)
    summary = az.summary(idata, var_names=["tau", "mu"])
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(summary.columns)
    assert np.all(summary["ess_bulk"] > 1000)


def test_same_key_same_draws_different_key_different_draws():
    kernel = lambda: DilationKernel(potential_fn=lambda x: 0.5 * jnp.sum(x**2))  # noqa: E731
    init = spread_init(2, 64)
    a = run(kernel(), init_params=init, num_chains=64, num_warmup=50, num_samples=10)
    b = run(kernel(), init_params=init, num_chains=64, num_warmup=50, num_samples=10)
    c = run(
        kernel(), init_params=init, num_chains=64, num_warmup=50, num_samples=10, seed=1
    )
    np.testing.assert_array_equal(a.get_samples(), b.get_samples())
    assert not np.allclose(a.get_samples(), c.get_samples())


def test_unadjusted_step_runs_and_is_reported_as_moving_always():
    mcmc = run(
        DilationKernel(potential_fn=lambda x: 0.5 * jnp.sum(x**2), step="ula"),
        init_params=spread_init(3, 128),
        num_chains=128,
        num_warmup=100,
        num_samples=20,
    )
    draws = np.asarray(mcmc.get_samples(group_by_chain=True))
    # ULA always moves: consecutive draws differ for every chain.
    assert np.all(np.any(draws[:, 1:] != draws[:, :-1], axis=-1))
    # One gradient per particle per iteration without HMC moves.
    assert int(mcmc.last_state.sampler_state.num_gradients) == 120


def test_eight_schools_matches_exact_posterior_moments():
    """Means and sds within 0.1 posterior sd of exact values, by quadrature
    (targets.EIGHT_SCHOOLS_REFERENCE, the global sites;
    targets.EIGHT_SCHOOLS_EFFECTS_REFERENCE, the school effects). With an ESS
    above 4000, the Monte Carlo error of a mean is below 0.016 sd and of an sd
    below 0.012 sd, so 0.1 sd is > 6 standard errors."""
    model = targets.eight_schools_model
    mcmc = run(DilationKernel(model), num_chains=1024, num_warmup=400, num_samples=200)
    draws = mcmc.get_samples(group_by_chain=True)
    assert np.min(effective_sample_size(np.asarray(draws["avg_effect"]))) > 4000
    samples = mcmc.get_samples()
    for site in ["avg_effect", "log_stddev"]:
        ref = targets.EIGHT_SCHOOLS_REFERENCE[site]
        assert abs(float(samples[site].mean()) - ref["mean"]) < 0.1 * ref["sd"], site
        assert abs(float(samples[site].std()) - ref["sd"]) < 0.1 * ref["sd"], site
    effects, ref = (
        samples["school_effects_std"],
        targets.EIGHT_SCHOOLS_EFFECTS_REFERENCE,
    )
    np.testing.assert_array_less(np.abs(effects.mean(0) - ref["mean"]), 0.1 * ref["sd"])
    np.testing.assert_array_less(np.abs(effects.std(0) - ref["sd"]), 0.1 * ref["sd"])


def test_hmc_step_is_exact_on_a_correlated_gaussian_and_counts_its_gradients():
    # A 6-d Gaussian with correlations up to 0.95 and scales over a factor 30:
    # every coordinate's mean and sd within Z_MAX Monte Carlo standard errors
    # (mc_error.assert_matches, ESS-based). HMC moves at l = 1 cost num_steps
    # gradients, reported per draw and counted in num_gradients. The diagonal
    # preconditioner leaves the correlations to the trajectories (a dense one,
    # the default at 256 particles in 6-d, whitens them to about one step).
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    cov = q @ np.diag(np.logspace(-1, 2, 6)) @ q.T
    mean = rng.normal(size=6)
    kernel = DilationKernel(
        potential_fn=gaussian_potential(jnp.asarray(mean), jnp.asarray(cov)),
        step="hmc",
        dense_mass=False,
    )
    mcmc = run(
        kernel,
        init_params=spread_init(6, 256),
        num_chains=256,
        extra_fields=("num_steps",),
    )
    draws = np.asarray(mcmc.get_samples(group_by_chain=True))
    for i in range(6):
        assert_matches(draws[..., i], mean[i], np.sqrt(cov[i, i]), label=f"x{i}")
    steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
    assert np.all(steps == steps[:1]) and steps.mean() > 2
    pop = mcmc.last_state.sampler_state
    assert int(pop.num_gradients) > 300 + steps[0].sum()
    with pytest.raises(ValueError, match="state=mcmc.last_state"):
        kernel.num_evaluations(400)
    # The mode fits cost what they cost with MALA moves; the moves, the count.
    mala_count = kernel.num_evaluations(
        400,
        mcmc.last_state._replace(
            sampler_state=pop._replace(num_gradients=jnp.asarray(400))
        ),
    )
    assert kernel.num_evaluations(400, mcmc.last_state) == mala_count + 256 * (
        int(pop.num_gradients) - 400
    )
    # The trajectories are at least a quarter period of the widest whitened
    # direction at the mean jitter (adaptation.length_floor): pi sqrt(lambda_max)
    # of the correlation matrix (the diagonal preconditioner whitens to it). The
    # population's lambda_max from 256 particles has relative sd about
    # sqrt(2 / 256) = 9%: three of them allowed.
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    length = float(adaptation.trajectory_length(pop.trajectory))
    assert length >= np.pi * np.sqrt(0.73 * np.linalg.eigvalsh(corr)[-1])
    assert length > 2 * float(jnp.exp(pop.step_size.log_step_size))


def test_hmc_trajectory_length_stays_within_the_longest_trajectory():
    # A curved ridge (x1 ~ N(0, 10^2), x2 | x1 ~ N(0.03 (x1^2 - 100), 1)):
    # ChEES keeps asking for longer trajectories there, past the 256 leapfrog
    # steps a move may take (before the cap on T, this run ended at T = 34.2
    # in whitened units against 256 h = 20.7). T stops at 256 h, and
    # the draws stay exact: each coordinate's mean and sd within Z_MAX Monte
    # Carlo standard errors (mc_error.assert_matches, ESS-based).
    def banana(x):
        return 0.5 * (x[0] / 10.0) ** 2 + 0.5 * (x[1] - 0.03 * (x[0] ** 2 - 100.0)) ** 2

    mcmc = run(
        DilationKernel(potential_fn=banana, step="hmc"),
        init_params=spread_init(2, 256),
        num_chains=256,
        num_warmup=500,
    )
    pop = mcmc.last_state.sampler_state
    cap = 256 * float(jnp.exp(pop.step_size.log_step_size))
    assert float(jnp.exp(pop.trajectory.log_length)) <= cap * (1 + 1e-5)
    assert float(pop.trajectory.floor) < cap
    draws = np.asarray(mcmc.get_samples(group_by_chain=True))
    assert_matches(draws[..., 0], 0.0, 10.0, label="x1")
    assert_matches(draws[..., 1], 0.0, np.sqrt(0.03**2 * 2e4 + 1), label="x2")


def test_local_step_sizes_reach_the_funnel_neck_and_count_their_gradients():
    # Neal's funnel in 4-d (x0 ~ N(0, 9), scales exp(x0 / 2)): the shared step
    # leaves the neck empty; with local steps and HMC moves the population's
    # x0 matches N(0, 9): its mean, sd and P(x0 < -3) within Z_MAX Monte Carlo
    # standard errors (mc_error.assert_matches, ESS-based). Each iteration
    # records the gradients its step searches computed, per particle.
    funnel = targets.funnel(4)
    model = targets.as_numpyro_model(funnel)
    kernel = DilationKernel(model, step="hmc", step_size_selection="local")
    mcmc = run(kernel, num_chains=256, extra_fields=("num_steps",))
    x0 = np.asarray(mcmc.get_samples(group_by_chain=True)["x"][..., 0])
    assert_matches(x0, 0.0, 3.0, {0.158655: -3.0}, label="x0")
    steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
    assert np.all(steps == steps[:1]) and steps.mean() > 2
    pop = mcmc.last_state.sampler_state
    assert int(pop.num_gradients) > 300 + steps[0].sum()
    ratio = np.asarray(pop.particles.log_step_ratio) / np.log(2.0)
    assert ratio.min() <= -2 and np.allclose(ratio, np.round(ratio), atol=1e-4)
    with pytest.raises(ValueError, match="state=mcmc.last_state"):
        kernel.num_evaluations(400)


UNIMODAL_2D = targets.gaussian_mixture(jnp.zeros((1, 2)), 1.0, jnp.ones(1))
BIMODAL_2D = targets.gaussian_mixture(
    jnp.array([[-4.0, 0.0], [4.0, 0.0]]), 1.0, jnp.array([0.5, 0.5])
)


def _loops(compiled):
    return sum("dilation_warmup" in name for name in compiled)


def test_auto_step_is_hmc_for_one_mode_and_a_dense_preconditioner_else_mala(
    warmup_programs,
):
    # step="auto", the default: where the fit that ends the annealing finds one
    # mode and the preconditioner is dense, the options of step="hmc" (same
    # compiled programs, the same draws); with a diagonal preconditioner those
    # of step="mala"; with two modes MALA moves and jumps after the annealing
    # (one gradient per particle and iteration while sampling). The annealing
    # has a warmup loop of its own (HMC moves tune, so the tuning's loop is
    # another), and the bimodal run, whose tuning is MALA's, compiles no HMC
    # move: no step outside the annealing is traced with HMC options.
    compiled, traced = warmup_programs

    def mcmc(target, **kwargs):
        compiled.clear()
        traced.clear()
        kernel = DilationKernel(
            potential_fn=lambda x: -target.logdensity_fn(x), **kwargs
        )
        return run(
            kernel,
            init_params=spread_init(2, 128),
            num_warmup=100,
            num_samples=5,
            num_chains=128,
            extra_fields=("num_steps",),
        )

    def steps(done):
        return np.asarray(done.get_extra_fields()["num_steps"])

    def tuning_moves():
        return {hmc for hmc, phase in traced if phase != sampler.ANNEAL}

    auto = mcmc(UNIMODAL_2D)
    assert _loops(compiled) == 2 and tuning_moves() == {True}
    hmc = mcmc(UNIMODAL_2D, step="hmc")
    np.testing.assert_array_equal(auto.get_samples(), hmc.get_samples())
    # No mode fit at all (what the README offers a model known to have one
    # mode): the draws of the run whose fit found one mode.
    no_fit = mcmc(UNIMODAL_2D, jump_prob=0.0, rebalance=False)
    assert int(auto.last_state.sampler_state.modes.num_modes) == 1
    assert int(no_fit.last_state.sampler_state.modes.num_modes) == 0
    np.testing.assert_array_equal(auto.get_samples(), no_fit.get_samples())
    assert np.all(steps(auto) >= 1) and np.mean(steps(auto)) > 1
    auto = mcmc(UNIMODAL_2D, dense_mass=False)
    mala = mcmc(UNIMODAL_2D, dense_mass=False, step="mala")
    np.testing.assert_array_equal(auto.get_samples(), mala.get_samples())
    two = mcmc(BIMODAL_2D)
    assert _loops(compiled) == 2 and tuning_moves() == {False}
    assert int(two.last_state.sampler_state.modes.num_modes) == 2
    assert np.all(steps(two) == 1)


def test_a_unimodal_warmup_compiles_one_loop_and_a_bimodal_one_two(warmup_programs):
    # The warmup runs in segments around the fit that ends the annealing:
    # one mode found -> the tuning segment reuses the annealing's loop (no
    # jump, fit, 1-D mixtures or rebalancing code compiled) and the run counts
    # that one fit; two modes -> a second loop with them, and every fit of the
    # calendar.
    # (MALA moves: with HMC ones the annealing has a loop of its own, above.)
    compiled, _ = warmup_programs
    fits = []
    for target in (UNIMODAL_2D, BIMODAL_2D):
        compiled.clear()
        kernel = DilationKernel(  # the fits follow from the count
            potential_fn=lambda x, t=target: -t.logdensity_fn(x), step="mala"
        )
        mcmc = run(
            kernel,
            init_params=spread_init(2, 256),
            num_warmup=200,
            num_samples=10,
            num_chains=256,
        )
        pop = mcmc.last_state.sampler_state
        fits.append(
            (
                _loops(compiled),
                int(pop.modes.num_modes),
                (kernel.num_evaluations(200) - 256 * 200)
                // modes.fit_evaluations(256, kernel._options.max_modes),
                sum("dilation_marginals" in name for name in compiled),
                bool(np.isfinite(pop.modes.marginals.log_weights).any()),
            )
        )
    # The jumps' 1-D mixtures (one program, after each fit) only with two modes.
    assert fits[0] == (1, 1, 1, 0, False)
    num_fits = len(calendar.mode_fit_iterations(kernel._calendar))
    assert fits[1] == (2, 2, num_fits, 1, True)
    assert fits[1][2] > 1
