"""The comparison table against ArviZ's own functions, and the figures."""

import time

import arviz as az
import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import monitoring
from numpyro.infer import MCMC, NUTS

from numpyro_dilation import DilationKernel, arviz_compat
from numpyro_dilation.compare import (
    Comparison,
    Run,
    _LeapfrogCount,
    _mode_table,
    compare,
)
from numpyro_dilation.compile_timer import CompileTimer
from numpyro_dilation.core import calendar
from numpyro_dilation.core.multimodal import modes
from numpyro_dilation.plots import latent_sites, plot_density, write_figures
from numpyro_dilation.validation import targets

# One xdist worker runs all of this file's tests (pyproject.toml: --dist
# loadgroup), so its module-scoped fixture (comparison) is built once.
pytestmark = pytest.mark.xdist_group("test_compare")

Y = np.random.default_rng(0).normal(1.0, 2.0, size=20)
# Two made-up "modes" of mu: the table must report the shares of draws nearest
# to each, whatever the posterior is.
MODE_MEANS = np.array([[0.5], [1.5]])


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.fixture(scope="module")
def recorded() -> tuple[Comparison, list, list]:
    """The comparison, with JAX's compile spans (event, start, end, program)
    and compare's progress messages (time, text) recorded while it ran, both
    in ``time.time()`` seconds as JAX's spans are."""
    spans, marks = [], []

    def listen(event, start, end, **kwargs):
        spans.append((event, start, end, kwargs.get("fun_name", "")))

    monitoring.register_event_time_span_listener(listen)
    try:
        # DilationKernel with MALA moves: one gradient per particle and
        # iteration, so test_gradient_counts knows the count (the default,
        # step="auto", runs HMC trajectories of varying length on this one-mode
        # 2-d posterior).
        comparison = compare(
            normal_model,
            Y,
            kernels=[NUTS(normal_model), DilationKernel(normal_model, step="mala")],
            num_warmup=100,
            num_samples=100,
            num_chains=2,
            num_particles=64,
            seed=1,
            mode_means=MODE_MEANS,
            true_mode_weights=[0.25, 0.75],
            mode_sites=["mu"],
            progress=lambda text: marks.append((time.time(), text)),
        )
    finally:
        monitoring.unregister_event_time_span_listener(listen)
    return comparison, spans, marks


@pytest.fixture(scope="module")
def comparison(recorded) -> Comparison:
    return recorded[0]


def test_runs_and_budgets(comparison):
    assert list(comparison.idata) == ["NUTS", "DilationKernel"]
    assert comparison.reference == "NUTS"
    nuts, dil = (comparison.idata[k].posterior for k in comparison.idata)
    assert (nuts.sizes["chain"], nuts.sizes["draw"]) == (2, 100)
    assert (dil.sizes["chain"], dil.sizes["draw"]) == (64, 100)
    table = comparison.table
    assert table.loc["DilationKernel", "chains"] == 64
    assert table.loc["NUTS", "warmup"] == 100


@pytest.mark.parametrize("name", ["NUTS", "DilationKernel"])
def test_diagnostics_match_arviz_summary(comparison, name):
    idata = comparison.idata[name]
    summary = az.summary(idata, kind="diagnostics", round_to="none")
    row = comparison.table.loc[name]
    np.testing.assert_allclose(row["ess_bulk_min"], summary["ess_bulk"].min())
    np.testing.assert_allclose(row["ess_tail_min"], summary["ess_tail"].min())
    np.testing.assert_allclose(row["rhat_max"], summary["r_hat"].max())
    assert row["divergences"] == int(idata.sample_stats["diverging"].sum())
    np.testing.assert_allclose(row["ess_per_s"], row["ess_bulk_min"] / row["time_s"])
    np.testing.assert_allclose(
        row["ess_per_grad"], row["ess_bulk_min"] / row["gradients"]
    )
    assert row["time_s"] > 0 and row["compile_s"] > 0


def test_nuts_compiles_its_loop_once(recorded):
    # NUTS runs in one mcmc.run (its warmup's leapfrog steps summed in its
    # state): NumPyro's loop over the chains is compiled once, and compile_s is
    # the union of the compile spans of its run.
    comparison, spans, marks = recorded
    nuts = [t for t, text in marks if text.startswith("NUTS:")]
    inside = [s for s in spans if nuts[0] <= s[1] and s[2] <= nuts[-1]]
    loops = [
        s
        for s in inside
        if s[0].endswith("backend_compile_duration") and "_fori_collect_loop" in s[3]
    ]
    assert len(loops) == 1
    union = CompileTimer()
    for event, start, end, _ in inside:
        union.listen(event, start, end)
    compile_s = comparison.table.loc["NUTS", "compile_s"]
    assert 0 < compile_s <= union.seconds + 1e-6


def test_leapfrog_count_sums_the_steps_of_every_iteration():
    mcmc = MCMC(
        _LeapfrogCount(NUTS(normal_model)),
        num_warmup=20,
        num_samples=1,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    fields = ("num_steps", "leapfrog_steps")
    mcmc.warmup(jax.random.PRNGKey(0), Y, extra_fields=fields, collect_warmup=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    steps, counted = extra["num_steps"], extra["leapfrog_steps"]
    assert steps.shape == (2, 20) and steps.min() >= 1
    np.testing.assert_array_equal(counted, np.cumsum(steps, axis=1))


def test_gradient_counts(comparison):
    table = comparison.table
    # DilationKernel: one gradient per particle per iteration, warmup included,
    # plus those of its mode fits: six at num_warmup=100 on the calendar, one
    # when that first fit finds one mode, as here (docs/calendar.md).
    assert calendar.mode_fit_iterations(calendar.build_calendar(100)).size == 6
    expected = 64 * (100 + 100) + modes.fit_evaluations(64, 64)
    assert table.loc["DilationKernel", "gradients"] == expected
    # NUTS: its sampling leapfrog steps are in the ArviZ sample stats; the warmup
    # adds at least one step per warmup iteration and chain.
    sampling_steps = int(comparison.idata["NUTS"].sample_stats["n_steps"].sum())
    assert table.loc["NUTS", "gradients"] >= sampling_steps + 2 * 100


@pytest.mark.parametrize("name", ["NUTS", "DilationKernel"])
def test_parameters_match_arviz_summary(comparison, name):
    summary = az.summary(comparison.idata[name], kind="stats", round_to="none")
    params = comparison.parameters
    assert list(params.index) == list(summary.index) == ["mu", "sigma"]
    np.testing.assert_allclose(params[(name, "mean")], summary["mean"])
    np.testing.assert_allclose(params[(name, "sd")], summary["sd"])


def test_differences_in_reference_sds(comparison):
    params = comparison.parameters
    ref_mean, ref_sd = params[("NUTS", "mean")], params[("NUTS", "sd")]
    np.testing.assert_allclose(
        params[("DilationKernel", "diff_sd")],
        (params[("DilationKernel", "mean")] - ref_mean) / ref_sd,
    )
    np.testing.assert_allclose(
        params[("DilationKernel", "sd_ratio")],
        params[("DilationKernel", "sd")] / ref_sd,
    )


@pytest.mark.parametrize("name", ["NUTS", "DilationKernel"])
def test_mode_weights(comparison, name):
    mu = comparison.idata[name].posterior["mu"].values.ravel()
    nearest = np.where(mu < 1.0, 0, 1)
    shares = np.bincount(nearest, minlength=2) / len(mu)
    np.testing.assert_allclose(comparison.mode_weights[name], shares, atol=1e-6)
    np.testing.assert_allclose(comparison.mode_weights["target"], [0.25, 0.75])
    row = comparison.table.loc[name]
    assert row["modes_found"] == np.sum(shares > targets.MIN_MODE_SHARE)
    tv = 0.5 * np.abs(shares - [0.25, 0.75]).sum()
    np.testing.assert_allclose(row["mode_weight_tv"], tv, atol=1e-6)


def test_text_and_csv(comparison, tmp_path):
    text = comparison.to_string()
    for word in ["ess_bulk_min", "gradients", "diff_sd", "mode shares", "sigma"]:
        assert word in text
    paths = comparison.save_tables(tmp_path)
    assert {p.name for p in paths} == {
        "table.csv",
        "parameters.csv",
        "mode_weights.csv",
    }


def test_figures(comparison, tmp_path):
    paths = write_figures(comparison, tmp_path)
    names = {p.name for p in paths}
    assert names == {
        "forest.png",
        "trace_NUTS.png",
        "trace_DilationKernel.png",
        "pair.png",
        "density.png",
    }
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def three_normals():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([3]))


def test_density_plot_refuses_more_than_two_dimensions(tmp_path):
    idata = arviz_compat.from_posterior({"x": np.zeros((1, 5, 3))})
    fake = Comparison(
        idata={"a": idata},
        table=None,
        parameters=None,
        mode_weights=None,
        model=three_normals,
        model_args=(),
        model_kwargs={},
    )
    assert latent_sites(fake) == {"x": (3,)}
    with pytest.raises(ValueError, match="3 latent scalars"):
        plot_density(fake, tmp_path / "d.png")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unique"):
        compare(normal_model, Y, kernels=[NUTS(normal_model), NUTS(normal_model)])
    nuts = NUTS(normal_model)
    with pytest.raises(ValueError, match="fresh kernel"):
        compare(normal_model, Y, kernels={"a": nuts, "b": nuts})
    with pytest.raises(TypeError, match="NumPyro MCMC kernels"):
        compare(normal_model, Y, kernels=[normal_model])
    with pytest.raises(ValueError, match="num_samples"):
        compare(normal_model, Y, num_samples=0)
    with pytest.raises(ValueError, match="mode_means"):
        compare(normal_model, Y, mode_means=[1.0, 2.0])
    with pytest.raises(ValueError, match="true_mode_weights"):
        compare(normal_model, Y, mode_means=MODE_MEANS, true_mode_weights=[1.0])
    with pytest.raises(ValueError, match="vectorized"):
        compare(
            normal_model,
            Y,
            kernels=[Run(DilationKernel(normal_model), chain_method="sequential")],
        )


def test_mode_means_of_the_wrong_dimension_are_named(comparison):
    with pytest.raises(ValueError, match="mode_sites"):
        _mode_table(comparison.idata, np.zeros((2, 3)), None, None)


def test_hdi_is_the_narrowest_interval_with_the_share_of_draws():
    from numpyro_dilation.plots import hdi

    # 0..99 shuffled: any 50 consecutive integers are narrowest (width 49); the
    # first such window starts at 0.
    draws = np.random.default_rng(0).permutation(100).astype(float)
    assert hdi(draws, 0.5) == (0.0, 49.0)
    # a skewed sample: the interval hugs the mode at 0 rather than the centre
    skewed = np.concatenate([np.zeros(60), np.arange(1.0, 41.0)])
    assert hdi(skewed, 0.6) == (0.0, 0.0)
    # normal draws: the 94% HDI is close to +-1.881 sd (n = 200,000: the
    # endpoints' sampling sd is about 0.01)
    normal = np.random.default_rng(1).normal(size=200_000)
    low, high = hdi(normal, 0.94)
    assert abs(low + 1.881) < 0.05 and abs(high - 1.881) < 0.05
