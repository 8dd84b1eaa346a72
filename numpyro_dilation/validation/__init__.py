"""Checks of the sampler against known answers: reference targets
(``targets``), exact moments and quantiles within Monte Carlo error
(``reference``) and simulation-based calibration (``sbc``)."""
