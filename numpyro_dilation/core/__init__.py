"""The pure-JAX population sampler: no NumPyro, only arrays and a log density.

The whole run in BlackJAX's manner, a calendar, an ``init`` and a ``step``::

    from numpyro_dilation import core

    options = core.SamplerOptions()
    calendar = core.build_calendar(num_warmup, options)
    state = core.init(centers, jax.value_and_grad(logdensity), calendar, options)
    for key in keys:  # or jax.lax.scan
        state, info = core.step(key, state, jax.value_and_grad(logdensity), options)
    draws = core.target_position(state)

Modules: ``dilation_path`` (the path and its score), ``level_schedule`` (its
levels), ``calendar`` (every warmup phase and event), ``options``,
``langevin`` (MALA/ULA steps), ``hmc`` (HMC trajectories), ``autostep``
(per-particle step sizes), ``preconditioner``, ``adaptation`` (step size,
population preconditioner), ``stragglers``, ``draws`` (population-sized random
draws), ``sampler`` (one iteration of the population), ``sharding`` (the
particle axis over devices), ``cpu_lapack`` (jaxlib < 0.11 CPU workaround)
and ``multimodal`` (modes, jumps, rebalancing).
"""

from numpyro_dilation.core.calendar import Calendar, build_calendar
from numpyro_dilation.core.options import DEFAULT_OPTIONS, SamplerOptions
from numpyro_dilation.core.sampler import (
    Particles,
    SamplerInfo,
    SamplerState,
    init,
    step,
    target_position,
    target_potential,
)

__all__ = [
    "Calendar",
    "DEFAULT_OPTIONS",
    "Particles",
    "SamplerInfo",
    "SamplerOptions",
    "SamplerState",
    "build_calendar",
    "init",
    "step",
    "target_position",
    "target_potential",
]
