"""numpyro-dilation: the dilation-path Langevin sampler as a NumPyro MCMC kernel."""

from numpyro_dilation.diagnostics import DilationWarning, check_run
from numpyro_dilation.kernel import DilationKernel, DilationState

__all__ = ["DilationKernel", "DilationState", "DilationWarning", "check_run"]
__version__ = "0.1.0"
