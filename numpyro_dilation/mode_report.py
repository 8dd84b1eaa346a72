"""What a run found: its modes and their weights, read off the final state
(host-side, after ``MCMC.run``)."""

from typing import Any, NamedTuple

import numpy as np

from numpyro_dilation.core import dilation_path
from numpyro_dilation.core.multimodal.modes import assign

__all__ = ["ModeSummary", "mode_summary"]


class ModeSummary(NamedTuple):
    """What a run found: modes ordered by weight, heaviest first.

    - **num_modes**: number of modes (``>= max_modes`` clusters means at least
      that many: raise ``max_modes``).
    - **weights**: share of the final particles in each mode.
    - **estimated_weights**: importance estimate of each mode's mass at the end
      of warmup (the particle shares if the correction was not applied).
    - **locations**: ``(num_modes, d)`` each mode's highest peak, in
      unconstrained (flat) coordinates.
    - **ess**: effective sample size of the importance draws in each mode (0
      when no correction was made: with one mode found at the end of
      annealing there is nothing to correct, see docs/calendar.md).
    """

    num_modes: int
    weights: np.ndarray
    estimated_weights: np.ndarray
    locations: np.ndarray
    ess: np.ndarray

    def __str__(self) -> str:
        lines = [f"{self.num_modes} mode(s)", "  mode  weight  estimated    ess"]
        for i in range(self.num_modes):
            lines.append(
                f"  {i:4d}  {self.weights[i]:6.3f}  {self.estimated_weights[i]:9.3f}"
                f"  {self.ess[i]:5.0f}"
            )
        return "\n".join(lines)


def mode_summary(run: Any) -> ModeSummary:
    """Number of modes and their weights after a run (host-side).

    ``run`` is a NumPyro ``MCMC`` that ran ``DilationKernel``, its
    ``last_state``, or a ``SamplerState``; the modes are those fitted at the
    end of warmup, the weights the shares of the final particles.
    """
    state = getattr(run, "last_state", run)
    state = getattr(state, "sampler_state", state)
    modes = state.modes
    if int(modes.num_modes) == 0:
        raise ValueError(
            "No modes were fitted in this run: they are found while tuning when "
            "DilationKernel has rebalance=True or jump_prob > 0 (the defaults) "
            "and num_warmup leaves a tuning phase."
        )
    x = dilation_path.to_target(
        state.particles.position, state.particles.center, state.lam
    )
    labels = np.asarray(assign(modes, x))
    mode_of = np.asarray(modes.mode_of)
    log_mass = np.asarray(modes.log_mass)
    ids = np.flatnonzero(np.isfinite(log_mass))
    weights = np.array([np.mean(labels == m) for m in ids])
    estimated = np.exp(log_mass[ids] - np.logaddexp.reduce(log_mass[ids]))
    peaks = np.asarray(modes.peaks)
    height = np.asarray(modes.peak_logdensity)
    locations = np.stack(
        [
            peaks[np.flatnonzero(mode_of == m)[np.argmax(height[mode_of == m])]]
            for m in ids
        ]
    )
    order = np.argsort(-weights, kind="stable")
    return ModeSummary(
        num_modes=len(ids),
        weights=weights[order],
        estimated_weights=estimated[order],
        locations=locations[order],
        ess=np.asarray(modes.ess)[ids][order],
    )
