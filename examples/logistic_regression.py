"""Bayesian logistic regression on scikit-learn's bundled breast-cancer data
(569 tumours, 30 standardised features and an intercept: d = 31; the data ship
with scikit-learn, nothing is downloaded).

    python examples/logistic_regression.py
    python examples/logistic_regression.py --compare-nuts
"""

import numpy as np
from common import DEFAULT_BUDGET, Budget, parse_budget, run_dilation, side_by_side
from scipy.special import expit

from numpyro_dilation.validation import targets


def main(budget: Budget = DEFAULT_BUDGET) -> dict[str, float]:
    """Returns the training accuracy of the posterior mean predictive
    probability, thresholded at 1/2."""
    X, y = targets.breast_cancer_data()
    mcmc = run_dilation(targets.logistic_regression_model, X, y, budget=budget)
    samples = mcmc.get_samples()
    logits = np.asarray(X) @ np.asarray(samples["weights"]).T
    logits += np.asarray(samples["intercept"])
    probability = np.mean(expit(logits), axis=1)
    accuracy = float(np.mean((probability > 0.5) == np.asarray(y)))
    print(f"\ntraining accuracy of the posterior predictive: {accuracy:.3f}")
    side_by_side(targets.logistic_regression_model, X, y, budget=budget)
    return {"accuracy": accuracy}


if __name__ == "__main__":
    main(parse_budget(__doc__))
