"""The NumPyro contract of DilationKernel and its error messages."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

from numpyro_dilation import DilationKernel, DilationWarning


def normal_mean_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def mcmc_for(kernel, num_chains=64, chain_method="vectorized", **kwargs):
    kwargs = {"num_warmup": 60, "num_samples": 20, "progress_bar": False, **kwargs}
    return MCMC(kernel, num_chains=num_chains, chain_method=chain_method, **kwargs)


def posterior_mean(y):
    # Normal(0, 10^2) prior, unit noise: conjugate posterior mean.
    n = y.shape[0]
    return float(jnp.sum(y) / (n + 1 / 100))


def test_jit_model_args_and_new_data_are_used():
    # Rebuilding the potential from model_args inside `sample` means a second run
    # with new data (same compiled function) targets the new posterior.
    # Posterior sd is 1/sqrt(4) = 0.5; 64 x 20 draws: mean se < 0.05, 0.25 = 5 se.
    mcmc = mcmc_for(DilationKernel(normal_mean_model), jit_model_args=True)
    for y in (jnp.array([1.0, 2.0, 0.5, 1.5]), jnp.array([-3.0, -4.0, -2.5, -3.5])):
        mcmc.run(jax.random.PRNGKey(0), y)
        assert abs(float(mcmc.get_samples()["mu"].mean()) - posterior_mean(y)) < 0.25


def test_continuation_thinning_and_last_state():
    y = jnp.array([1.0, 2.0, 0.5, 1.5])
    mcmc = mcmc_for(DilationKernel(normal_mean_model), thinning=2)
    mcmc.run(jax.random.PRNGKey(0), y)
    assert mcmc.get_samples(group_by_chain=True)["mu"].shape == (64, 10)
    assert int(mcmc.last_state.i[0]) == 80
    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.post_warmup_state.rng_key, y)
    assert int(mcmc.last_state.i[0]) == 100
    draws = mcmc.get_samples()["mu"]
    assert draws.shape == (640,)
    assert abs(float(draws.mean()) - posterior_mean(y)) < 0.25
    # Warmup is over: the dilation level stays at 1 and the step size is frozen.
    fields = mcmc.get_extra_fields()
    np.testing.assert_array_equal(fields["dilation_level"], 1.0)
    assert np.unique(np.asarray(fields["adapt_state.step_size"])).size == 1


def test_extra_fields_have_chain_axis():
    mcmc = mcmc_for(DilationKernel(normal_mean_model))
    mcmc.run(jax.random.PRNGKey(0), jnp.ones(3), extra_fields=("i",))
    fields = mcmc.get_extra_fields(group_by_chain=True)
    for name in [
        "i",
        "potential_energy",
        "accept_prob",
        "diverging",
        "adapt_state.step_size",
        "dilation_level",
    ]:
        assert fields[name].shape == (64, 20), name


def test_potential_fn_with_pytree_init_params():
    def pe(params):
        return 0.5 * jnp.sum(params["a"] ** 2) + 0.5 * params["b"] ** 2

    init = {"a": jnp.zeros((32, 2)), "b": jnp.ones(32)}
    mcmc = mcmc_for(DilationKernel(potential_fn=pe), num_chains=32)
    mcmc.run(jax.random.PRNGKey(0), init_params=init)
    s = mcmc.get_samples()
    assert s["a"].shape == (32 * 20, 2) and s["b"].shape == (32 * 20,)


def test_single_chain_is_refused():
    mcmc = mcmc_for(DilationKernel(normal_mean_model), num_chains=1)
    with pytest.raises(ValueError, match="num_chains=1"):
        mcmc.run(jax.random.PRNGKey(0), jnp.ones(3))


def test_progress_bar_shows_acceptance_and_level(monkeypatch, capsys):
    # NumPyro turns the bar off when CI is set; CI runs with CI=true.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    mcmc = mcmc_for(DilationKernel(normal_mean_model), progress_bar=True)
    mcmc.run(jax.random.PRNGKey(0), jnp.ones(3))
    err = capsys.readouterr().err
    assert "acc. prob=" in err and "l=" in err


def test_nan_region_is_divergent_and_run_goes_on():
    # log p is NaN for x0 > 1: proposals there are rejected and flagged divergent;
    # every draw stays finite and in the region where the density is defined.
    def pe(x):
        return jnp.where(x[0] > 1.0, jnp.nan, 0.5 * jnp.sum(x**2))

    init = jax.random.uniform(jax.random.PRNGKey(1), (128, 2), minval=-1, maxval=1)
    mcmc = mcmc_for(DilationKernel(potential_fn=pe), num_chains=128)
    mcmc.run(jax.random.PRNGKey(0), init_params=init)
    draws = mcmc.get_samples()
    assert np.all(np.isfinite(draws)) and np.all(draws[:, 0] <= 1.0)
    assert np.any(mcmc.get_extra_fields()["diverging"])


@pytest.mark.parametrize("method", ["parallel", "sequential"])
def test_chain_method_other_than_vectorized_is_refused(method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not enough devices" from NumPyro
        mcmc = mcmc_for(
            DilationKernel(normal_mean_model), num_chains=2, chain_method=method
        )
        with pytest.raises(ValueError, match="chain_method='vectorized'"):
            mcmc.run(jax.random.PRNGKey(0), jnp.ones(3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of `model` or `potential_fn`"),
        (
            {"model": normal_mean_model, "potential_fn": jnp.sum},
            "exactly one of `model` or `potential_fn`",
        ),
        (
            {"model": normal_mean_model, "step_size": 0.0},
            "step_size must be a positive",
        ),
        (
            {"model": normal_mean_model, "step_size": -1.0},
            "step_size must be a positive",
        ),
        (
            {"model": normal_mean_model, "step": "nuts"},
            "step must be one of 'auto', 'mala', 'hmc', 'ula'",
        ),
        (
            {"model": normal_mean_model, "step_size_selection": "per_particle"},
            "step_size_selection must be 'shared' or 'local'",
        ),
        (
            {"model": normal_mean_model, "step": "ula", "step_size_selection": "local"},
            "needs an exact move",
        ),
        ({"model": normal_mean_model, "target_accept_prob": 1.5}, "target_accept_prob"),
        ({"model": normal_mean_model, "anneal_fraction": 2.0}, "anneal_fraction"),
        ({"model": normal_mean_model, "num_levels": 0}, "num_levels"),
        ({"model": normal_mean_model, "center": "origin"}, "center='origin'"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DilationKernel(**kwargs)


@pytest.mark.parametrize(
    "schedule, match",
    [
        ("linear", "schedule='linear' is not known"),
        ([0.1, 0.5], "must end at l = 1"),
        ([0.5, 0.1, 1.0], "non-decreasing"),
        ([0.0, 1.0], r"in \(0, 1\]"),
    ],
)
def test_bad_schedule(schedule, match):
    mcmc = mcmc_for(DilationKernel(normal_mean_model, schedule=schedule))
    with pytest.raises(ValueError, match=match):
        mcmc.run(jax.random.PRNGKey(0), jnp.ones(3))


def test_models_without_latent_dimensions_run_as_with_nuts():
    # As NUTS: no latent site gives no draws (with a warning that says so), only
    # deterministic sites gives their values, a site whose unconstrained space
    # is empty (a Dirichlet of one category) gives its one value.
    def observed_only(y):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    def deterministic_only():
        numpyro.deterministic("c", jnp.arange(2.0))

    def empty_site():
        numpyro.sample("x", dist.Dirichlet(jnp.ones(1)))

    mcmc = mcmc_for(DilationKernel(observed_only))
    with pytest.warns(DilationWarning, match="no latent sample site"):
        mcmc.run(jax.random.PRNGKey(0), jnp.ones(3))
    assert mcmc.get_samples() == {}
    mcmc = mcmc_for(DilationKernel(deterministic_only))
    with pytest.warns(DilationWarning, match="no latent sample site"):
        mcmc.run(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(
        mcmc.get_samples()["c"], np.tile([0.0, 1.0], (1280, 1))
    )
    mcmc = mcmc_for(DilationKernel(empty_site), num_warmup=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DilationWarning)
        mcmc.run(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(mcmc.get_samples()["x"], 1.0)
    mcmc.print_summary()


def test_structured_dense_mass_is_refused():
    with pytest.raises(ValueError, match="structured form"):
        DilationKernel(normal_mean_model, dense_mass=[("mu",)])


def test_low_rank_mass_is_checked():
    with pytest.raises(ValueError, match="low_rank_mass must be a non-negative"):
        DilationKernel(normal_mean_model, low_rank_mass=-1)
    with pytest.raises(ValueError, match="low_rank_mass must be a non-negative"):
        DilationKernel(normal_mean_model, low_rank_mass=1.5)
    # A bool is not a count of directions (True would silently mean 1).
    with pytest.raises(ValueError, match="got True"):
        DilationKernel(normal_mean_model, low_rank_mass=True)
    with pytest.raises(ValueError, match="pass one of them"):
        DilationKernel(normal_mean_model, dense_mass=True, low_rank_mass=2)


UNIMODAL = {"rebalance": False, "jump_prob": 0.0}


def test_run_under_jit_matches_the_eager_run():
    # The same program but for float rounding across compilations: draws of
    # N(1.25, 0.5^2) agree to 1e-3 unless an accept/reject decision flips,
    # which needs a uniform within ~1e-6 of an acceptance ratio. Resampling
    # between modes (rebalancing, jumps) would turn rounding into other
    # choices of particles: off here (the model has one mode).
    y = jnp.array([1.0, 2.0, 0.5, 1.5])

    def draws(key, y, step_size):
        kernel = DilationKernel(normal_mean_model, step_size=step_size, **UNIMODAL)
        mcmc = mcmc_for(kernel)
        mcmc.run(key, y)
        return mcmc.get_samples()["mu"]

    eager = draws(jax.random.PRNGKey(0), y, 0.1)
    jitted = jax.jit(draws)(jax.random.PRNGKey(0), y, 0.1)  # step_size traced
    np.testing.assert_allclose(jitted, eager, atol=1e-3)


def test_auto_step_under_jit_moves_with_mala_when_modes_are_fitted(warmup_programs):
    # step="auto" reads on the host how many modes the fit that ends the
    # annealing found; under a JAX transformation of the run (jax.jit; here
    # jax.eval_shape, which traces it the same way without compiling it) it
    # cannot, so with the mode fits on (the defaults) every warmup step and
    # the sampling move are MALA's. Run eagerly, this model (one mode, d = 1,
    # 64 particles: a dense preconditioner) moves with HMC from the end of
    # the annealing.
    _, traced = warmup_programs  # (options.hmc, phase) of every step traced

    def warmup_moves():
        return [hmc for hmc, _ in traced]

    y = jnp.array([1.0, 2.0, 0.5, 1.5])
    kernel = DilationKernel(normal_mean_model)

    def run(key, y):
        mcmc = mcmc_for(kernel)
        mcmc.run(key, y)
        return mcmc.get_samples()["mu"]

    jax.eval_shape(run, jax.random.PRNGKey(0), y)
    assert warmup_moves() and not any(warmup_moves())
    assert not kernel._sampling_options.hmc
    traced.clear()
    run(jax.random.PRNGKey(0), y)
    assert any(warmup_moves()) and kernel._sampling_options.hmc


def test_init_under_vmap_matches_init():
    y = jnp.ones(3)
    keys = jax.random.split(jax.random.PRNGKey(0), 128).reshape(2, 64, 2)

    def init(keys):  # as above: unimodal, so rounding does not pick particles
        kernel = DilationKernel(normal_mean_model, **UNIMODAL)
        return kernel.init(keys, 60, model_args=(y,)).z

    batched = jax.vmap(init)(keys)["mu"]
    assert batched.shape == (2, 64)
    np.testing.assert_allclose(batched[1], init(keys[1])["mu"], atol=1e-3)


@pytest.mark.parametrize("collect", ["post_warmup_state", "last_state"])
def test_warmup_then_run_gives_the_one_shot_draws(collect):
    # NumPyro's contract: run(k) == warmup(k) then run(state.rng_key); MCMC
    # hands an ensemble kernel rng_key[0] of the state's keys to continue.
    y = jnp.array([1.0, 2.0, 0.5, 1.5])
    one_shot = mcmc_for(DilationKernel(normal_mean_model))
    one_shot.run(jax.random.PRNGKey(0), y)
    split = mcmc_for(DilationKernel(normal_mean_model))
    split.warmup(jax.random.PRNGKey(0), y)
    split.run(getattr(split, collect).rng_key, y)
    np.testing.assert_allclose(
        split.get_samples()["mu"], one_shot.get_samples()["mu"], atol=1e-5
    )


def test_potential_fn_needs_init_params_with_chain_axis():
    kernel = DilationKernel(potential_fn=lambda x: jnp.sum(x**2))
    with pytest.raises(ValueError, match="pass init_params"):
        mcmc_for(kernel).run(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="leading axis of size num_chains=64"):
        # NumPyro checks the first leaf; ours names every mismatching one.
        kernel.init(
            jax.random.split(jax.random.PRNGKey(0), 64),
            10,
            init_params=jnp.zeros((32, 2)),
        )


def test_bad_center_shape_and_non_finite_start():
    kernel = DilationKernel(potential_fn=lambda x: jnp.sum(x**2), center=jnp.zeros(5))
    with pytest.raises(ValueError, match=r"center must have shape \(2,\)"):
        mcmc_for(kernel).run(jax.random.PRNGKey(0), init_params=jnp.zeros((64, 2)))
    kernel = DilationKernel(potential_fn=lambda x: jnp.log(x[0]) + x[1] ** 2)
    with pytest.raises(ValueError, match="not finite at the initial centres"):
        mcmc_for(kernel).run(jax.random.PRNGKey(0), init_params=-jnp.ones((64, 2)))


@pytest.mark.parametrize(
    "options",
    [
        {"schedule": lambda u: 1e-3 ** (1 - u) * u + 1e-3 * (1 - u)},
        {"schedule": [0.01, 0.1, 0.5, 1.0]},
        {"center": "shared"},
        {"center": jnp.array([3.0])},
    ],
)
def test_schedules_and_centres(options):
    # The run's levels are in order, from the first one to 1 (the sampler
    # visits them in the calendar's order: tests/core/test_calendar.py), and
    # every option still samples the posterior: mean within 0.25 (5 se, above).
    y = jnp.array([1.0, 2.0, 0.5, 1.5])
    mcmc = mcmc_for(DilationKernel(normal_mean_model, **options), num_warmup=100)
    mcmc.warmup(jax.random.PRNGKey(0), y)
    levels = np.asarray(mcmc.post_warmup_state.sampler_state.calendar.levels)
    assert np.all(np.diff(levels) >= 0) and levels[-1] == 1.0 and levels[0] < 0.05
    assert np.all(np.asarray(mcmc.post_warmup_state.dilation_level) == 1.0)
    mcmc.run(jax.random.PRNGKey(1), y)
    assert abs(float(mcmc.get_samples()["mu"].mean()) - posterior_mean(y)) < 0.25


def test_particles_start_at_their_centres():
    # Every particle starts at its Dirac centre; with center="shared" that is
    # one point, the mean of the initial points. After one warmup step at
    # l_min = 1e-6 the path positions y = c + sqrt(l) (x - c) are still within
    # sqrt(l_min) |x - c| ~ 1e-3 of it.
    kernel = DilationKernel(
        normal_mean_model,
        center="shared",
        lambda_min=1e-6,
        anneal_fraction=1.0,
        num_levels=2,
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    y = jnp.ones(3)
    state = kernel.init(keys, 1, model_args=(y,))
    center = np.asarray(state.sampler_state.particles.center)
    np.testing.assert_allclose(center, center.mean(), atol=1e-6)
    assert float(state.dilation_level[0]) == pytest.approx(1e-6)
    path = np.asarray(state.sampler_state.particles.position)
    assert np.ptp(path) < 1e-2 < np.ptp(np.asarray(state.z["mu"]))
