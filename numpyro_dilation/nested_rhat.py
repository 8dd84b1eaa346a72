"""Nested R-hat for many short chains, and a summary of a run that shows it.

Split R-hat compares each chain's draws with the others'; a population of 1024
particles with 8 draws each has chains far too short for that, and a correct
run shows R-hat of 1.5. Nested R-hat (Margossian, Hoffman, Sountsov,
Riou-Durand, Vehtari, Gelman 2024, "Nested R-hat: assessing the convergence of
Markov chain Monte Carlo when running many short chains"; the posterior R
package's ``rhat_nested``) groups the ``C`` chains into ``K`` superchains of
``M = C / K`` chains and compares superchain means instead. With draws
``x[n, m, k]`` (draw ``n`` of chain ``m`` of superchain ``k``, ``N`` draws):

    B   = var_k(mean_{n,m} x[., ., k])                      (K - 1 in the denominator)
    W_k = var_m(mean_n x[., m, k]) + mean_m var_n(x[., m, k])   (M - 1, N - 1; 0 if 1)
    R   = sqrt(1 + B / mean_k W_k)

The superchains must differ in where their chains started, so that a run that
has not forgotten its start shows between-superchain variance. A DilationKernel
particle's lineage starts at its Dirac centre (resampling and straggler
replacement copy the centre with the particle), so the particles are grouped by
their centres: ranked along the centres' first principal axis and cut into
``K`` groups of equal size, neighbouring starts together. NUTS's chains, each
started on its own, are superchains of one chain each (``M = 1``: nested R-hat
is then close to the non-split R-hat).
"""

from typing import Any

import jax
import numpy as np
from numpyro.diagnostics import summary as numpyro_summary

__all__ = [
    "rhat_nested",
    "superchains",
    "summary",
    "print_summary",
    "max_rhat_nested",
]

DEFAULT_SUPERCHAINS = 16


def rhat_nested(x: np.ndarray, superchain_ids: np.ndarray) -> np.ndarray:
    """Nested R-hat of draws ``x`` of shape ``(chains, draws, ...)``, one value
    per trailing coordinate; ``superchain_ids`` ``(chains,)`` labels every chain
    with its superchain, all superchains of the same size (at least two)."""
    x = np.asarray(x, float)
    ids = np.asarray(superchain_ids)
    labels, counts = np.unique(ids, return_counts=True)
    if labels.size < 2 or np.any(counts != counts[0]):
        raise ValueError(
            "superchain_ids must give at least two superchains of equal size; "
            f"got sizes {counts.tolist()}."
        )
    grouped = np.stack([x[ids == label] for label in labels])  # (K, M, N, ...)
    num_chains, num_draws = grouped.shape[1], grouped.shape[2]
    chain_mean = grouped.mean(axis=2)
    within_chain = grouped.var(axis=2, ddof=1) if num_draws > 1 else 0 * chain_mean
    super_mean = chain_mean.mean(axis=1)
    between_chains = (
        chain_mean.var(axis=1, ddof=1) if num_chains > 1 else 0 * super_mean
    )
    within = np.mean(between_chains + np.mean(within_chain, axis=1), axis=0)
    between = super_mean.var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(1.0 + between / within)


def superchains(run: Any, num_superchains: int = DEFAULT_SUPERCHAINS) -> np.ndarray:
    """Superchain labels of a finished ``MCMC`` run's chains (see above).

    DilationKernel: particles ranked by their centre's projection on the
    centres' first principal axis, cut into ``num_superchains`` equal groups
    (their number divides the particles). Any other kernel: one superchain per
    chain.
    """
    state = getattr(run.last_state, "sampler_state", None)
    if state is None:
        return np.arange(run.num_chains)
    centers = np.asarray(state.particles.center, float)
    n = centers.shape[0]
    if num_superchains < 2 or n % num_superchains:
        raise ValueError(
            f"num_superchains={num_superchains} must be at least 2 and divide "
            f"num_chains={n}."
        )
    centered = centers - centers.mean(axis=0)
    if centered.shape[1] and np.any(centered):
        axis = np.linalg.svd(centered, full_matrices=False)[2][0]
        order = np.argsort(centered @ axis, kind="stable")
    else:  # one shared centre: nothing tells the particles' starts apart
        order = np.arange(n)
    ids = np.empty(n, int)
    ids[order] = np.arange(n) // (n // num_superchains)
    return ids


def summary(
    run: Any,
    num_superchains: int = DEFAULT_SUPERCHAINS,
    prob: float = 0.9,
) -> dict[str, dict[str, np.ndarray]]:
    """``numpyro.diagnostics.summary`` of the run's draws, each site's entry
    with ``"rhat_nested"`` added (``superchains`` groups the chains)."""
    samples = run.get_samples(group_by_chain=True)
    out = numpyro_summary(samples, prob=prob, group_by_chain=True)
    ids = superchains(run, num_superchains)
    for name, stats in out.items():
        stats["rhat_nested"] = rhat_nested(samples[name], ids)
    return out


def print_summary(
    run: Any, num_superchains: int = DEFAULT_SUPERCHAINS, prob: float = 0.9
) -> None:
    """``MCMC.print_summary``'s table with a nested R-hat column (``summary``)."""
    stats = summary(run, num_superchains, prob)
    columns = list(next(iter(stats.values())))
    print(" " * 20 + "".join(f"{c:>12}" for c in columns))
    for name, entry in stats.items():
        values = [np.reshape(np.asarray(entry[c], float), -1) for c in columns]
        for j in range(values[0].size):
            label = name if values[0].size == 1 else f"{name}[{j}]"
            print(f"{label:>20}" + "".join(f"{v[j]:>12.2f}" for v in values))


def max_rhat_nested(run: Any, num_superchains: int = DEFAULT_SUPERCHAINS) -> float:
    """The largest nested R-hat over every scalar of the posterior (NaN where
    it is not defined: a single chain, constant draws)."""
    if run.num_chains < 2 or num_superchains < 2:
        return float("nan")
    leaves = jax.tree.leaves(run.get_samples(group_by_chain=True))
    flat = np.concatenate(
        [np.reshape(np.asarray(x, float), np.shape(x)[:2] + (-1,)) for x in leaves],
        axis=-1,
    )
    values = rhat_nested(flat, superchains(run, num_superchains))
    return float(np.nanmax(values)) if np.any(np.isfinite(values)) else float("nan")
