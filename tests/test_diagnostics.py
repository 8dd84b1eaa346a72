"""The run warnings: the pure checks on synthetic populations, and the automatic
end-of-warmup hook and ``check_run`` on real runs."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer import MCMC
from runs import run_vectorized

from numpyro_dilation import DilationKernel
from numpyro_dilation.diagnostics import (
    DilationWarning,
    Move,
    check_run,
    population_warnings,
)
from numpyro_dilation.validation import targets

N, D, K = 512, 3, 50


def healthy(seed: int, memory: float = 0.1):
    """A stationary reversible population: x(t - k) and x(t) are exchangeable,
    correlated ``memory`` across the particles (at most MEMORY_BOUND: it has
    mixed over the window)."""
    rng = np.random.default_rng(seed)
    before = rng.normal(size=(N, D))
    after = memory * before + np.sqrt(1 - memory**2) * rng.normal(size=(N, D))
    return rng.uniform(0.3, 0.9, size=N), np.zeros(N, bool), before, after


def flow_warnings(*args):
    """The messages other than the slow-mixing check's (which fires too on
    these strongly paired populations)."""
    return [m for m in population_warnings(*args, K, "here") if "mix slowly" not in m]


def test_healthy_populations_raise_nothing():
    # 200 stationary populations whose memory is at the slow-mixing check's
    # bound: each threshold is set for a false-alarm probability of 1e-6 per
    # population, so none may fire.
    for seed in range(200):
        assert population_warnings(*healthy(seed), K, "here") == []


def test_slow_mixing_is_flagged():
    # Correlation 0.5 between x(t - k) and x(t), means and spreads unchanged:
    # Fisher's z against the bound 0.1 is (atanh 0.5 - atanh 0.1) sqrt(509) =
    # 10.1 on average, sd 1; the threshold (1e-6, Bonferroni over 3
    # coordinates) is 5.0, so a miss is a 5-sd event.
    fired = [
        any("mix slowly" in m for m in population_warnings(*healthy(s, 0.5), K, "x"))
        for s in range(20)
    ]
    assert all(fired)
    (message,) = population_warnings(*healthy(0, 0.5), K, "here")
    assert "mix slowly here" in message and "50 iterations apart" in message
    assert "step='hmc'" in message


def test_each_check_fires_on_its_fault():
    accept, diverging, before, after = healthy(0)
    assert (
        "acceptance"
        in population_warnings(np.full(N, 0.05), diverging, before, after, K, "here")[0]
    )
    assert (
        "divergent"
        in population_warnings(
            accept, np.arange(N) < N // 10, before, after, K, "here"
        )[0]
    )
    sticky = accept.copy()
    sticky[: N // 50] = 1e-3  # 2% of the particles reject almost everything
    assert (
        "accepted fewer than 1% of their proposals"
        in population_warnings(sticky, diverging, before, after, K, "here")[0]
    )
    # Two sticky particles of 64 (3%) are not judged a region: at least 3.
    few = slice(0, 64)
    two = np.where(np.arange(64) < 2, 1e-3, accept[few])
    small = (diverging[few], before[few], after[few], K, "here")
    assert population_warnings(two, *small) == []
    stuck = after.copy()
    stuck[: N // 5] = before[: N // 5]
    assert (
        "did not move"
        in population_warnings(accept, diverging, before, stuck, K, "here")[0]
    )
    # 8% of the particles jump from the mode at -2 to the mode at +2 in the
    # window: mass flowing between modes shifts the mean by 0.32, about 8
    # standard errors of the paired differences (sd ~ 1.2, n = 512).
    rng = np.random.default_rng(1)
    before = np.where(rng.uniform(size=(N, 1)) < 0.5, -2.0, 2.0) + 0.5 * rng.normal(
        size=(N, 1)
    )
    after = before + 0.3 * rng.normal(size=(N, 1))
    jumpers = (before[:, 0] < 0) & (np.arange(N) < 0.16 * N)
    after[jumpers] += 4.0
    (message,) = flow_warnings(accept, diverging, before, after)
    assert "still moving here" in message and "coordinate 0" in message
    # Coordinate 2 widens by 10% in the window, its mean unchanged: the paired
    # absolute deviations grow by 0.08 (sd 0.12 for this strongly paired
    # population, n = 512), about 15 standard errors (threshold 5.3); the mean
    # test stays quiet.
    before = rng.normal(size=(N, D))
    after = before + 0.1 * rng.normal(size=(N, D))
    after[:, 2] *= 1.1
    (message,) = flow_warnings(accept, diverging, before, after)
    assert "still changing here" in message and "spread" in message
    assert "coordinate 2" in message


LOCAL = "step_size_selection='local'"


@pytest.mark.parametrize(
    "move, advised, not_advised",
    [
        (None, ["step='hmc'", "dense_mass=True"], [LOCAL]),
        (Move(hmc=False, dense=False, local=False), ["step='hmc'", "dense_mass"], []),
        (Move(hmc=False, dense=True, local=False), ["step='hmc'"], ["dense_mass"]),
        (Move(hmc=True, dense=True, local=False), [LOCAL], ["step='hmc'", "dense"]),
        (Move(hmc=True, dense=True, local=True), ["Raise num_warmup."], ["Use "]),
    ],
)
def test_the_advice_names_the_settings_the_run_did_not_use(move, advised, not_advised):
    # The slow-mixing message of a population with memory 0.5 (it fires: see
    # above), for each move that ran.
    (message,) = population_warnings(*healthy(0, 0.5), K, "here", move)
    assert all(a in message for a in advised), message
    assert not any(a in message for a in not_advised), message


def test_a_sticky_region_under_local_steps_is_advised_a_reparametrisation():
    accept, diverging, before, after = healthy(0)
    accept[: N // 50] = 1e-3  # 2% of the particles reject almost everything
    args = (accept, diverging, before, after, K, "here")
    (shared,) = population_warnings(*args, Move(True, True, False))
    assert "shared step size is too large" in shared and LOCAL in shared
    (local,) = population_warnings(*args, Move(True, True, True))
    assert "even the step chosen per particle" in local and "Reparametrise" in local
    assert "step='hmc'" not in local
    (local_mala,) = population_warnings(*args, Move(False, True, True))
    assert "move with step='hmc'" in local_mala


def test_small_populations_and_windows_are_not_judged():
    accept, diverging, before, after = healthy(0)
    few = slice(0, 31)
    args = (np.zeros(31), diverging[few], before[few], before[few])
    assert population_warnings(*args, K, "here") == []
    assert population_warnings(accept * 0, diverging, before, before, 9, "here") == []


def run(potential, init, num_warmup=200, num_samples=100, **kernel_kwargs):
    return run_vectorized(
        DilationKernel(potential_fn=potential, **kernel_kwargs),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=init.shape[0],
        init_params=init,
    )


def standard_normal(x):
    return 0.5 * jnp.sum(x**2)


def test_healthy_run_raises_nothing():
    init = jax.random.normal(jax.random.PRNGKey(1), (256, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DilationWarning)
        mcmc = run(standard_normal, init)
        assert check_run(mcmc) == []


def test_collapsed_acceptance_warns_at_end_of_warmup_and_after_the_run():
    # A fixed step of 5 on N(0, I_10): every proposal overshoots.
    init = jax.random.normal(jax.random.PRNGKey(1), (256, 10))
    with pytest.warns(DilationWarning, match="acceptance probability at the end of"):
        mcmc = run(standard_normal, init, step_size=5.0, adapt_step_size=False)
    messages = check_run(mcmc, warn=False)
    assert any("acceptance probability during sampling" in m for m in messages)


@pytest.mark.parametrize(
    "step, advice",
    [("mala", "Use step='hmc' (longer moves), or"), ("hmc", f"Use {LOCAL} where")],
)
def test_the_advice_follows_the_move_that_ran(step, advice):
    # A fixed step of 5 on N(0, I_10): every proposal is rejected, so the
    # particles' positions 50 iterations apart (at the end of warmup) and 99
    # apart (the sampling phase, check_run) correlate 1 and the slow-mixing
    # check fires; with 256 particles (at least 10 per dimension) the
    # preconditioner is dense for either move, so the advice is what the move
    # did not use, which the kernel's move tells check_run.
    init = jax.random.normal(jax.random.PRNGKey(1), (256, 10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc = run(
            standard_normal, init, step_size=5.0, adapt_step_size=False, step=step
        )
    (message,) = [str(w.message) for w in caught if "mix slowly" in str(w.message)]
    assert advice in message and "dense_mass" not in message, message
    assert mcmc.sampler.move == Move(hmc=step == "hmc", dense=True, local=False)
    (after,) = [m for m in check_run(mcmc, warn=False) if "mix slowly" in m]
    assert "during sampling" in after
    assert advice in after and "dense_mass" not in after, after


def test_end_of_warmup_warning_is_the_users_under_warnings_as_errors():
    # NumPyro's tests run with -W error: the warning must then be raised as a
    # DilationWarning out of mcmc.run (not an XLA callback error), attributed to
    # the caller's line, and shown again by a run from another line.
    init = jax.random.normal(jax.random.PRNGKey(1), (256, 10))
    kernel = DilationKernel(
        potential_fn=standard_normal, step_size=5.0, adapt_step_size=False
    )
    mcmc = MCMC(
        kernel,
        num_warmup=200,
        num_samples=10,
        num_chains=256,
        chain_method="vectorized",
        progress_bar=False,
    )
    key = jax.random.PRNGKey(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DilationWarning, match="acceptance probability at the"):
            mcmc.run(key, init_params=init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        mcmc.run(key, init_params=init)
        mcmc.run(key, init_params=init)
    ours = [w for w in caught if issubclass(w.category, DilationWarning)]
    messages = [str(w.message) for w in ours]
    half = len(messages) // 2
    assert half >= 1 and messages[:half] == messages[half:], messages
    assert {w.filename for w in ours} == {__file__}


def test_funnel_neck_warns_at_end_of_warmup_and_after_the_run():
    # Neal's funnel, d = 10, MALA moves: the shared step size is far too large
    # in the neck (x0 < -3, scale < 0.2), whose particles reject nearly every
    # proposal. Measured: 9.5% of 1024 particles with a mean acceptance below
    # 1% over 200 draws (threshold 1%), and the sd of x0 1.7 instead of 3. (The
    # default, step="auto", runs HMC here, whose step adapts to the harmonic
    # mean acceptance, which the neck drives down: docs/when-to-use.md.)
    def funnel(x):
        return -targets.funnel(10).logdensity_fn(x)

    init = jax.random.uniform(jax.random.PRNGKey(1), (512, 10), minval=-2, maxval=2)
    with pytest.warns(DilationWarning, match="accepted fewer than 1%"):
        mcmc = run(funnel, init, num_warmup=300, step="mala")
    messages = check_run(mcmc, warn=False)
    assert any("during sampling" in m and "funnel" in m for m in messages)


def test_the_defaults_on_a_20d_funnel_are_right_or_warn():
    # Neal's funnel, d = 20, the defaults (HMC moves, dense preconditioner,
    # shared step), 512 particles, 500 warmup iterations. With the
    # preconditioner re-estimated to the last warmup iteration the population
    # drifted out of the mouth and came back wrong with no warning: P(x0 > 3)
    # 0.013 to 0.033 for an exact 0.159 at the end of warmup (seeds 0-2, both
    # stacks). Kept through the second half of tuning, the spread check fires
    # (sd of x0 2.70 to 2.77). "Right": both tails' shares within 4 binomial
    # standard errors of 512 particles (sqrt(0.159 * 0.841 / 512) = 0.016).
    model = targets.as_numpyro_model(targets.funnel(20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc = run_vectorized(
            DilationKernel(model), num_warmup=500, num_samples=1, num_chains=512
        )
    warned = any(issubclass(w.category, DilationWarning) for w in caught)
    x0 = np.asarray(mcmc.get_samples()["x"])[:, 0]
    p, se = 0.1587, np.sqrt(0.1587 * 0.8413 / 512)
    right = all(abs(np.mean(tail) - p) < 4 * se for tail in (x0 > 3, x0 < -3))
    assert warned or right, (np.mean(x0 > 3), np.mean(x0 < -3))


def test_population_still_moving_between_modes_warns():
    # Modes at -1.7 and +1.7 (sd 0.6), every particle started and centred in the
    # left one: during the tuning phase particles keep crossing the barrier to
    # the right (about 10% of the population in the last 50 warmup
    # iterations). The mean test's z grows as sqrt(n): with 4096 particles it
    # measured 8.7 to 10.2 over seeds 0-5 against its threshold 5.0; with 1024,
    # 3.4 to 6.1 (a coin flip; the slow-mixing check fired in every run).
    def two_modes(x):
        lp = jax.scipy.stats.norm.logpdf(x[0], jnp.array([-1.7, 1.7]), 0.6)
        return -jax.scipy.special.logsumexp(lp)

    # The plain path: with its default inter-mode jumps the kernel equilibrates
    # the two modes during tuning and nothing is left moving.
    # MALA moves (step="auto" would run HMC with jumps and fits off, whose
    # trajectories cross the barrier within the tuning phase).
    init = -1.7 + 0.6 * jax.random.normal(jax.random.PRNGKey(1), (4096, 1))
    with pytest.warns(DilationWarning, match="still moving at the end of warmup"):
        run(
            two_modes,
            init,
            num_samples=1,
            center=jnp.array([-1.7]),
            rebalance=False,
            jump_prob=0.0,
            step="mala",
        )


def test_slow_mixing_warns_at_end_of_warmup():
    # The stochastic-volatility model (100 days, d = 103) with MALA (and, as
    # step="mala" makes it, a diagonal preconditioner): the
    # log-volatilities' positions 125 iterations apart correlate 0.41 across
    # 1024 particles at the end of warmup, z = 10.6 against the threshold 5.6
    # (1e-6, Bonferroni over 103 coordinates), while the mean and spread tests
    # stay quiet; its draws are measurably off (docs/known-issues.md). Runs
    # that are right measure r <= 0.09 (docs/validation.md).
    returns = targets.stochastic_volatility_data()
    with pytest.warns(DilationWarning, match="mix slowly at the end of warmup"):
        run_vectorized(
            DilationKernel(targets.stochastic_volatility_model, step="mala"),
            returns,
            num_warmup=500,
            num_samples=1,
            num_chains=1024,
        )
