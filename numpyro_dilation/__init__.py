"""numpyro-dilation: the dilation-path Langevin sampler as a NumPyro MCMC kernel."""

from numpyro_dilation.diagnostics import DilationWarning, check_run
from numpyro_dilation.kernel import DilationKernel, DilationState
from numpyro_dilation.mode_report import ModeSummary, mode_summary

__all__ = [
    "DilationKernel",
    "DilationState",
    "DilationWarning",
    "ModeSummary",
    "check_run",
    "mode_summary",
]
__version__ = "0.1.0"
