"""The one place that knows which ArviZ is installed.

ArviZ 0.x (Python 3.10+) holds a run in an ``InferenceData`` and draws with
``arviz.plot_*(..., ax=...)``; ArviZ 1.x (Python 3.12+) holds it in an
``xarray.DataTree`` and draws with arviz-plots, which makes its own figure and
returns a ``PlotCollection``. Everything else the package uses (``.posterior``,
``.sample_stats``, ``arviz.ess``, ``arviz.rhat``, ``arviz.summary``) reads the
same on both; the forest plot is drawn with matplotlib alone
(``plots.plot_forest``), as arviz-plots cannot put runs with different numbers
of chains side by side. The functions below are what differs; the rest of the package
calls them and never tests the version itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import arviz as az
from matplotlib.figure import Figure

__all__ = [
    "ARVIZ_1",
    "RunData",
    "from_numpyro",
    "from_posterior",
    "groups",
    "trace_figure",
]

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
"""Whether the installed ArviZ is 1.x or later."""

RunData = Any
"""One converted run: ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree``
(1.x)."""


def from_numpyro(mcmc: Any, log_likelihood: bool = False) -> Any:
    """``arviz.from_numpyro`` with the same default on both versions (ArviZ 0.x
    adds the log likelihood unless told not to, 1.x only when asked)."""
    return az.from_numpyro(mcmc, log_likelihood=log_likelihood)


def from_posterior(posterior: Mapping[str, Any]) -> Any:
    """A run holding only a posterior group, ``{name: array (chain, draw, ...)}``."""
    if ARVIZ_1:
        return az.from_dict({"posterior": dict(posterior)})
    return az.from_dict(posterior=dict(posterior))


def groups(data: Any) -> list[str]:
    """The names of the groups of a run (``posterior``, ``sample_stats``, ...)."""
    if ARVIZ_1:
        return list(data.children)
    return list(data.groups())


def _collection_figure(collection: Any) -> Figure:
    """The figure arviz-plots drew; pyplot lets go of it (it stays drawable)."""
    import matplotlib.pyplot as plt

    fig = collection.viz["figure"].item()
    plt.close(fig)
    return fig


def trace_figure(posterior: Any, var_names: Sequence[str]) -> Figure:
    """Traces and marginals of ``var_names``, one row per variable."""
    if ARVIZ_1:
        collection = az.plot_trace_dist(
            posterior,
            kind="kde",
            var_names=list(var_names),
            backend="matplotlib",
            figure_kwargs={"figsize": (10, 1.8 * len(var_names) + 0.6)},
        )
        return _collection_figure(collection)
    fig = Figure(figsize=(10, 1.8 * len(var_names) + 0.6))
    axes = fig.subplots(len(var_names), 2, squeeze=False)
    az.plot_trace(posterior, var_names=list(var_names), axes=axes, show=False)
    return fig
