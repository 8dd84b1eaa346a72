"""numpyro-dilation: the dilation-path Langevin sampler as a NumPyro MCMC kernel."""

from numpyro_dilation.kernel import DilationKernel, DilationState
from numpyro_dilation.modes import ModeSummary, mode_summary

__all__ = ["DilationKernel", "DilationState", "ModeSummary", "mode_summary"]
__version__ = "0.1.0"
