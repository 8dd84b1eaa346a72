"""The pure-JAX population sampler: no NumPyro, only arrays and a log density.

``dilation_path`` (the path and its score), ``level_schedule`` (its levels),
``langevin`` (MALA/ULA steps), ``preconditioner``, ``adaptation`` (step size,
population preconditioner), ``stragglers``, ``sampler`` (one iteration of the
population), ``sharding`` (the particle axis over devices), ``cpu_lapack``
(jaxlib < 0.11 CPU workaround) and ``multimodal`` (modes, jumps, rebalancing).
"""
