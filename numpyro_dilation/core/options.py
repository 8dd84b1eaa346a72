"""The sampler's static options (Python values: they decide what is compiled)."""

from typing import NamedTuple

__all__ = ["SamplerOptions", "DEFAULT_OPTIONS"]


class SamplerOptions(NamedTuple):
    """Static options. ``adjusted=False`` runs the paper's ULA (biased at l = 1).

    ``rebalance``: correct the mode masses at the last warmup iteration;
    ``jump_prob``: probability of a jump iteration from ``t = A`` on (0: none);
    ``max_modes``: clusters fitted (``K``); ``min_mode_ess``: the effective
    sample size under which a mode's mass estimate is not used.
    """

    adjusted: bool = True
    target_accept_prob: float = 0.574
    adaptation_gain: float = 1.0
    adapt_step_size: bool = True
    adapt_inv_mass: bool = True
    dense_mass: bool = False
    rebalance: bool = True
    jump_prob: float = 0.5
    max_modes: int = 64
    min_mode_ess: float = 20.0


DEFAULT_OPTIONS = SamplerOptions()
