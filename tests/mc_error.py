"""Errors of MCMC estimates in units of their Monte Carlo standard error.

``draws`` has shape ``(chains, draws)`` (one coordinate; chains are particles).
Standard errors use the effective sample size of the quantity averaged
(``numpyro.diagnostics.effective_sample_size``, Geyer's initial monotone
sequence over all chains):

* mean:      se = sd / sqrt(ESS(x))
* sd:        ``s^2 = mean((x - mu)^2)`` with the exact mean ``mu``; by the delta
             method se(s) = sd((x - mu)^2) / (2 s sqrt(ESS((x - mu)^2)))
* quantile:  the exact ``q``-quantile ``x_q`` is checked through the estimated
             ``F(x_q) = mean(x <= x_q)``, se = sqrt(q (1 - q) / ESS(1[x <= x_q]))

A correct sampler gives z-scores that are approximately standard normal; the
tests allow ``Z_MAX = 5`` (two-sided false-alarm probability 5.7e-7 per z-score,
below 1e-4 over the few hundred z-scores of the suite).
"""

import numpy as np
from numpyro.diagnostics import effective_sample_size

Z_MAX = 5.0


def ess(x: np.ndarray) -> float:
    """ESS of the mean of ``x`` (chains, draws); a constant has ESS = size."""
    x = np.asarray(x, float)
    if np.ptp(x) == 0:
        return float(x.size)
    return float(effective_sample_size(x))


def z_scores(
    draws: np.ndarray,
    mean: float,
    sd: float,
    quantiles: dict[float, float] | None = None,
) -> dict[str, float]:
    """z-scores of the mean, sd and ``F(x_q)`` for each exact quantile ``x_q``."""
    x = np.asarray(draws, float)
    z = {"mean": (x.mean() - mean) / (x.std() / np.sqrt(ess(x)))}
    sq = (x - mean) ** 2
    s = np.sqrt(sq.mean())
    z["sd"] = (s - sd) / (sq.std() / (2 * s * np.sqrt(ess(sq))))
    for q, x_q in (quantiles or {}).items():
        below = (x <= x_q).astype(float)
        se = np.sqrt(q * (1 - q) / ess(below))
        z[f"q{q:g}"] = (below.mean() - q) / se
    return z


def assert_matches(draws, mean, sd, quantiles=None, label=""):
    """Every z-score within ``Z_MAX``."""
    z = z_scores(draws, mean, sd, quantiles)
    bad = {k: round(v, 2) for k, v in z.items() if not abs(v) <= Z_MAX}
    assert not bad, f"{label}: z-scores beyond {Z_MAX}: {bad} (all: {z})"
