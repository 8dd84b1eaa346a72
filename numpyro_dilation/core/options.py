"""The sampler's static options (Python values: they decide what is compiled)."""

from typing import NamedTuple

__all__ = ["SamplerOptions", "DEFAULT_OPTIONS"]


class SamplerOptions(NamedTuple):
    """Static options. ``adjusted=False`` runs the paper's ULA (biased at l = 1).

    ``rebalance``: correct the mode masses at the last warmup iteration;
    ``jump_prob``: probability of a jump iteration from ``t = A`` on (0: none);
    ``max_modes``: clusters fitted (``K``); ``min_mode_ess``: the effective
    sample size under which a mode's mass estimate is not used;
    ``hmc``: at ``l = 1`` (tuning and sampling) each move is an HMC trajectory
    (``core.hmc``) of ChEES-tuned length, at most ``max_leapfrog_steps``
    gradients, instead of one MALA step; ``trajectory_learning_rate`` is
    ChEES's Adam rate on ``log T``; ``local_step_size``: at ``l = 1`` each
    move (MALA or HMC) chooses its particle's step from the shared one by at
    most ``max_step_doublings`` halvings or doublings (``core.autostep``);
    ``low_rank``: a diagonal preconditioner also whitens the population's
    ``low_rank`` widest directions (``core.adaptation``; ignored when dense).
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
    hmc: bool = False
    max_leapfrog_steps: int = 256
    trajectory_learning_rate: float = 0.05
    local_step_size: bool = False
    max_step_doublings: int = 8
    low_rank: int = 0


DEFAULT_OPTIONS = SamplerOptions()
