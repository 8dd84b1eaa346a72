"""Simulation-based calibration, quick version (the thorough one is benchmarks/sbc.py).

Each case runs R replications stacked in one model
(numpyro_dilation.validation.sbc) with
127 particles, so ranks lie in {0..127}: 8 bins of 16 rank values, uniform if the
draws are exact. Pearson's chi-square (7 dof) per scalar parameter, rejected
below p = 1e-4: 5 tests here, a false-alarm probability under 5e-4 for the
whole file (Bonferroni), with fixed seeds.
"""

import jax
import numpy as np
import pytest

from numpyro_dilation.validation import sbc

NUM_PARTICLES, NUM_BINS, P_MIN = 127, 8, 1e-4


@pytest.mark.parametrize(
    ("name", "num_replications"), [("normal_normal", 100), ("logistic_regression", 50)]
)
def test_ranks_are_uniform(name, num_replications):
    ranks = sbc.simulate_ranks(
        sbc.CASES[name], jax.random.PRNGKey(0), num_replications, NUM_PARTICLES, 200
    )
    for site, r in ranks.items():
        assert r.shape[0] == num_replications
        assert r.min() >= 0 and r.max() <= NUM_PARTICLES
        for j in range(r.shape[1]):
            stat, p = sbc.chi_square(r[:, j], NUM_PARTICLES, NUM_BINS)
            counts = sbc.rank_counts(r[:, j], NUM_PARTICLES, NUM_BINS)
            assert p > P_MIN, f"{site}[{j}]: chi2 {stat:.1f}, p {p:.2g}, {counts}"


def exact_normal_normal_ranks(sd_factor: float, num_replications: int = 200):
    """Ranks with draws from the conjugate posterior N(sum y / (1 + n), 1 / (1 + n)),
    its sd multiplied by ``sd_factor``."""
    truth, (y,) = sbc.CASES["normal_normal"].simulate(
        jax.random.PRNGKey(3), num_replications
    )
    n = y.shape[1]
    mean = np.asarray(y.sum(1)) / (1 + n)
    sd = sd_factor / np.sqrt(1 + n)
    rng = np.random.default_rng(0)
    draws = mean + sd * rng.normal(size=(NUM_PARTICLES, num_replications))
    return np.sum(draws < np.asarray(truth["mu"]), axis=0)


def test_chi_square_accepts_exact_draws_and_rejects_wrong_spread():
    # The test has power: draws with the right mean but 0.6 or 1.6 times the
    # posterior sd give U- or hump-shaped rank histograms over 200 replications.
    assert (
        sbc.chi_square(exact_normal_normal_ranks(1.0), NUM_PARTICLES, NUM_BINS)[1]
        > P_MIN
    )
    for factor in (0.6, 1.6):
        ranks = exact_normal_normal_ranks(factor)
        assert sbc.chi_square(ranks, NUM_PARTICLES, NUM_BINS)[1] < P_MIN, factor


def test_rank_bins_must_split_the_ranks_evenly():
    with pytest.raises(ValueError, match="divisible by num_bins"):
        sbc.rank_counts(np.arange(10), 99, 8)
    np.testing.assert_array_equal(
        sbc.rank_counts(np.arange(128), 127, 8), np.full(8, 16)
    )
