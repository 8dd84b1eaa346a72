"""Nested R-hat: near 1 for converged many-short-chain draws where split R-hat
is not, above 1 when superchains disagree; the run summary shows it."""

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from runs import run_vectorized

from numpyro_dilation import DilationKernel
from numpyro_dilation.nested_rhat import (
    max_rhat_nested,
    print_summary,
    rhat_nested,
    summary,
    superchains,
)


def test_iid_draws_give_one_and_shifted_superchains_do_not():
    # 16 superchains of 64 chains of 8 iid N(0, 1) draws: B estimates
    # 1 / (64 * 8) with 15 degrees of freedom and W is 1, so R = sqrt(1 + B / W)
    # exceeds 1.01 only if B is 10x its mean (chi2_15 > 150: never).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 8, 3))
    ids = np.arange(1024) // 64
    assert np.all(rhat_nested(x, ids) < 1.01)
    # Every other superchain 1 sd off (a run that has not forgotten its
    # starts): B is about 0.27, so R is about sqrt(1.27) = 1.13.
    shifted = x + 1.0 * (ids % 2)[:, None, None]
    assert np.all(rhat_nested(shifted, ids) > 1.1)


def test_unequal_superchains_are_refused():
    with pytest.raises(ValueError, match="equal size"):
        rhat_nested(np.zeros((6, 4)), np.array([0, 0, 0, 1, 1, 2]))


def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_a_correct_population_run_has_nested_rhat_near_one(capsys):
    # 1024 particles, 8 draws each, of a conjugate normal posterior: the draws
    # are right (checked elsewhere) and nested R-hat says so.
    y = jnp.array([1.0, 2.0, 0.5, 1.5])
    mcmc = run_vectorized(
        DilationKernel(model),
        y,
        num_warmup=300,
        num_samples=8,
        num_chains=1024,
    )
    ids = superchains(mcmc)
    assert np.bincount(ids).tolist() == [64] * 16
    # Neighbouring centres share a superchain: labels sorted along the centres.
    centers = np.asarray(mcmc.last_state.sampler_state.particles.center)[:, 0]
    assert np.all(np.diff(ids[np.argsort(centers)]) >= 0)
    stats = summary(mcmc)["mu"]
    assert float(stats["rhat_nested"]) < 1.01
    assert max_rhat_nested(mcmc) == pytest.approx(float(stats["rhat_nested"]))
    print_summary(mcmc)
    out = capsys.readouterr().out
    assert "rhat_nested" in out and "mu" in out


def test_other_kernels_have_one_superchain_per_chain():
    nuts_like = SimpleNamespace(num_chains=4, last_state=SimpleNamespace(z=0.0))
    assert superchains(nuts_like).tolist() == [0, 1, 2, 3]
