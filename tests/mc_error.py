"""Assert that draws match exact answers within ``validation.Z_MAX`` Monte Carlo
standard errors (derivation in ``numpyro_dilation.validation.reference``)."""

from numpyro_dilation.validation.reference import Z_MAX, z_scores


def assert_matches(draws, mean, sd, quantiles=None, label=""):
    """Every z-score (mean, sd, quantiles) within ``Z_MAX``."""
    z = z_scores(draws, mean, sd, quantiles)
    bad = {k: round(v, 2) for k, v in z.items() if not abs(v) <= Z_MAX}
    assert not bad, f"{label}: z-scores beyond {Z_MAX}: {bad} (all: {z})"
