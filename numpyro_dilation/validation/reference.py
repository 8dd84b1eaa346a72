"""Reference posteriors with exact answers, and errors in units of Monte Carlo error.

``estimates`` checks draws of one scalar, shape ``(chains, draws)`` (chains are
particles), against its exact mean, sd and quantiles. Standard errors use the
effective sample size of the quantity averaged
(``numpyro.diagnostics.effective_sample_size``: Geyer's initial monotone
sequence over all chains):

* mean:      ``se = sd / sqrt(ESS(x))``;
* sd:        ``s^2 = mean((x - mu)^2)`` with the exact mean ``mu``; by the delta
             method ``se(s) = sd((x - mu)^2) / (2 s sqrt(ESS((x - mu)^2)))``
             (needs a finite fourth moment: heavy-tailed marginals skip it);
* quantile:  the exact ``q``-quantile ``x_q`` is checked through the estimated
             ``F(x_q) = mean(x <= x_q)``, ``se = sqrt(q (1 - q) / ESS(1[x <= x_q]))``.

For a correct sampler the z-scores are approximately standard normal; ``Z_MAX``
is 5 (two-sided false-alarm probability 5.7e-7 per z-score).

``reference_cases()`` are the targets of the validation page (docs/validation.md),
run by tests/validation/test_reference.py and benchmarks/reference.py.
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.linalg
import scipy.stats
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC
from scipy import integrate, optimize

from numpyro_dilation.kernel import DilationKernel
from numpyro_dilation.validation import targets

__all__ = [
    "Z_MAX",
    "ess",
    "Estimate",
    "estimates",
    "z_scores",
    "ula_stationary_covariance",
    "ULAGaussianRun",
    "run_ula_gaussian",
    "Marginal",
    "ReferenceCase",
    "reference_cases",
    "run_case",
]

Z_MAX = 5.0
"""Largest accepted ``|z|`` (two-sided false-alarm probability 5.7e-7)."""


def ess(x: np.ndarray) -> float:
    """ESS of the mean of ``x`` (chains, draws); a constant has ESS = size."""
    x = np.asarray(x, float)
    if np.ptp(x) == 0:
        return float(x.size)
    return float(effective_sample_size(x))


class Estimate(NamedTuple):
    """An estimate, its exact value and its Monte Carlo standard error."""

    estimate: float
    exact: float
    se: float

    @property
    def z(self) -> float:
        return (self.estimate - self.exact) / self.se


def estimates(
    draws: np.ndarray,
    mean: float,
    sd: float | None,
    quantiles: dict[float, float] | None = None,
) -> dict[str, Estimate]:
    """The mean, the sd (unless ``None``) and ``F(x_q)`` per exact quantile ``x_q``
    (keys ``"mean"``, ``"sd"``, ``"F(q0.05)"``...), each with its standard error."""
    x = np.asarray(draws, float)
    out = {"mean": Estimate(x.mean(), mean, x.std() / math.sqrt(ess(x)))}
    if sd is not None:
        sq = (x - mean) ** 2
        s = math.sqrt(sq.mean())
        out["sd"] = Estimate(s, sd, sq.std() / (2 * s * math.sqrt(ess(sq))))
    for q, x_q in (quantiles or {}).items():
        below = (x <= x_q).astype(float)
        se = math.sqrt(q * (1 - q) / ess(below))
        out[f"F(q{q:g})"] = Estimate(below.mean(), q, se)
    return out


def z_scores(
    draws: np.ndarray,
    mean: float,
    sd: float | None,
    quantiles: dict[float, float] | None = None,
) -> dict[str, float]:
    """The z-scores of ``estimates``."""
    return {k: c.z for k, c in estimates(draws, mean, sd, quantiles).items()}


def ula_stationary_covariance(
    cov: np.ndarray, step_size: float, inv_mass: np.ndarray
) -> np.ndarray:
    """Stationary covariance of ULA on ``N(mu, cov)`` with preconditioner ``M``
    (a vector: diagonal; or a matrix) and step ``h``: ``x' - mu = A (x - mu) +
    sqrt(2h) M^{1/2} z`` with ``A = I - h M cov^{-1}``, so ``V = A V A^T + 2h M``
    (discrete Lyapunov)."""
    inv_mass = np.diag(inv_mass) if np.ndim(inv_mass) == 1 else np.asarray(inv_mass)
    a = np.eye(len(cov)) - step_size * inv_mass @ np.linalg.inv(cov)
    return scipy.linalg.solve_discrete_lyapunov(a, 2 * step_size * inv_mass)


class ULAGaussianRun(NamedTuple):
    """ULA draws ``(chains, draws, 3)`` of ``N(mean, cov)``, the frozen step size
    and preconditioner, and the exact stationary covariance they imply."""

    mean: np.ndarray
    cov: np.ndarray
    draws: np.ndarray
    step_size: float
    inv_mass: np.ndarray
    stationary_cov: np.ndarray


def run_ula_gaussian(
    num_chains: int, num_warmup: int, num_samples: int, seed: int = 0
) -> ULAGaussianRun:
    """DilationKernel(step="ula") on a fixed correlated 3-d Gaussian."""
    rng = np.random.default_rng(0)
    b = rng.normal(size=(3, 3))
    cov = b @ b.T / 3 + 0.5 * np.eye(3)
    mean = rng.normal(size=3)
    precision = jnp.asarray(np.linalg.inv(cov))

    def potential(x):
        return 0.5 * (x - mean) @ precision @ (x - mean)

    mcmc = MCMC(
        DilationKernel(potential_fn=potential, step="ula"),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), init_params=_spread_init(3)(num_chains))
    step_size = float(mcmc.get_extra_fields()["adapt_state.step_size"][-1])
    inv_mass = np.asarray(mcmc.last_state.sampler_state.inv_mass, float)
    return ULAGaussianRun(
        mean,
        cov,
        np.asarray(mcmc.get_samples(group_by_chain=True)),
        step_size,
        inv_mass,
        ula_stationary_covariance(cov, step_size, inv_mass),
    )


class Marginal(NamedTuple):
    """One checked scalar: ``select(samples)`` gives its draws ``(chains, draws)``."""

    label: str
    select: Callable[[Any], np.ndarray]
    mean: float
    sd: float | None
    quantiles: dict[float, float]


class ReferenceCase(NamedTuple):
    """``kernel(step)`` builds the DilationKernel; ``init(num_chains)`` the
    ``init_params`` (``None`` for NumPyro's default initialisation);
    ``marginals()`` the checked scalars (a function: some need quadrature)."""

    name: str
    kernel: Callable[[str], DilationKernel]
    init: Callable[[int], Any]
    marginals: Callable[[], list[Marginal]]


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _from_scipy(label, select, law, with_sd=True) -> Marginal:
    return Marginal(
        label,
        select,
        float(law.mean()),
        float(law.std()) if with_sd else None,
        {q: float(law.ppf(q)) for q in QUANTILES},
    )


def _coordinate(j: int, site: str | None = None) -> Callable:
    def select(samples):
        return np.asarray(samples if site is None else samples[site])[..., j]

    return select


def _site(site: str) -> Callable:
    return lambda samples: np.asarray(samples[site])


def _spread_init(dim: int) -> Callable[[int], Any]:
    return lambda n: jax.random.uniform(
        jax.random.PRNGKey(1), (n, dim), minval=-2.0, maxval=2.0
    )


STUDENT_DF = 10.0


def _student_t(x):
    """``-log p`` of two independent Student-t coordinates with 10 dof."""
    return -jnp.sum(jax.scipy.stats.t.logpdf(x, STUDENT_DF))


def _gammas():
    """Two Gamma sites, sampled in log space, checked in constrained space."""
    numpyro.sample("skewed", dist.Gamma(0.8, 1.0))
    numpyro.sample("peaked", dist.Gamma(20.0, 4.0))


@functools.cache
def _funnel_quantiles() -> dict[float, float]:
    return {q: _funnel_quantile(q) for q in QUANTILES}


def _funnel_quantile(q: float) -> float:
    """Quantile of a funnel coordinate ``x_i | x0 ~ N(0, exp(x0))``, ``x0 ~ N(0, 9)``:
    ``F(x) = E[Phi(x exp(-x0/2))]`` by quadrature, inverted by root finding."""

    def cdf(x):
        def integrand(v):
            return scipy.stats.norm.pdf(v, 0, 3) * scipy.stats.norm.cdf(
                x * math.exp(-v / 2)
            )

        return integrate.quad(integrand, -40, 40, limit=200)[0]

    return optimize.brentq(lambda x: cdf(x) - q, -1e4, 1e4, xtol=1e-10)


_FUNNEL = targets.funnel(10)


def _funnel_potential(x):
    return -_FUNNEL.logdensity_fn(x)


def reference_cases() -> tuple[ReferenceCase, ...]:
    """Student-t, Gamma (constrained), Neal's funnel and eight schools."""
    return (
        ReferenceCase(
            "student_t",
            lambda step: DilationKernel(potential_fn=_student_t, step=step),
            _spread_init(2),
            lambda: [
                _from_scipy(f"x{j}", _coordinate(j), scipy.stats.t(STUDENT_DF))
                for j in range(2)
            ],
        ),
        ReferenceCase(
            "gamma",
            lambda step: DilationKernel(_gammas, step=step),
            lambda n: None,
            lambda: [
                _from_scipy("Gamma(0.8, 1)", _site("skewed"), scipy.stats.gamma(0.8)),
                _from_scipy(
                    "Gamma(20, 4)", _site("peaked"), scipy.stats.gamma(20.0, scale=0.25)
                ),
            ],
        ),
        ReferenceCase(
            "funnel",
            lambda step: DilationKernel(potential_fn=_funnel_potential, step=step),
            _spread_init(10),
            lambda: [
                _from_scipy("x0", _coordinate(0), scipy.stats.norm(0.0, 3.0)),
                Marginal(
                    "x1",
                    _coordinate(1),
                    0.0,
                    None,
                    _funnel_quantiles(),
                ),
            ],
        ),
        ReferenceCase(
            "eight_schools",
            lambda step: DilationKernel(targets.eight_schools_model, step=step),
            lambda n: None,
            lambda: [
                Marginal(site, _site(site), ref["mean"], ref["sd"], {})
                for site, ref in targets.EIGHT_SCHOOLS_REFERENCE.items()
            ],
        ),
    )


def run_case(
    case: ReferenceCase,
    step: str,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    seed: int = 0,
) -> tuple[MCMC, dict[str, dict[str, Estimate]]]:
    """Run ``case``; return the MCMC object and the comparisons per marginal."""
    mcmc = MCMC(
        case.kernel(step),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(seed), init_params=case.init(num_chains))
    samples = mcmc.get_samples(group_by_chain=True)
    return mcmc, {
        m.label: estimates(m.select(samples), m.mean, m.sd, m.quantiles)
        for m in case.marginals()
    }
