"""Figures of a :class:`~numpyro_dilation.compare.Comparison`, written as PNG.

Every figure is a ``matplotlib.figure.Figure`` drawn without pyplot, so nothing
here touches the global backend or leaves figures open (``arviz_compat`` hands
over ArviZ's figures detached from pyplot).

- ``forest.png``: both samplers' posterior intervals per parameter (drawn here,
  the same with either ArviZ).
- ``trace_<sampler>.png``: traces and marginals, for the first few chains.
- ``pair.png``: pairwise scatter of the first few parameters, samplers overlaid.
- ``density.png``: for a posterior of 1 or 2 dimensions, each sampler's draws
  over the true (unnormalised) density.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from numpyro.infer.util import log_density

from numpyro_dilation import arviz_compat
from numpyro_dilation.compare import Comparison, flat_draws, flat_parameters

__all__ = [
    "hdi",
    "plot_forest",
    "plot_trace",
    "plot_pair",
    "plot_density",
    "latent_sites",
    "write_figures",
]

_DPI = 110


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Each figure is laid out (tight_layout) before it comes here: a tight
    # bounding box would make matplotlib draw it once more to measure it.
    fig.savefig(path, dpi=_DPI)
    return path


def _subsample(draws: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """At most ``max_points`` rows of ``draws``, chosen uniformly without
    replacement with a fixed seed."""
    if draws.shape[0] <= max_points:
        return draws
    rows = np.random.default_rng(seed).choice(draws.shape[0], max_points, False)
    return draws[np.sort(rows)]


def hdi(draws: np.ndarray, prob: float) -> tuple[float, float]:
    """The narrowest interval holding ``ceil(prob * n)`` of the ``n`` draws (the
    highest-density interval of a unimodal marginal, as ``arviz.hdi``)."""
    values = np.sort(np.ravel(draws))
    n = values.size
    k = min(int(np.ceil(prob * n)), n) - 1
    widths = values[k:] - values[: n - k]
    start = int(np.argmin(widths))
    return float(values[start]), float(values[start + k])


def plot_forest(
    comparison: Comparison,
    path: str | Path,
    var_names: Sequence[str] | None = None,
) -> Path:
    """94% HDI (thin), 50% HDI (thick) and median of every sampler, one row per
    scalar parameter, all chains combined."""
    names = list(comparison.idata)
    columns = {n: flat_parameters(comparison.idata[n], var_names) for n in names}
    labels = list(columns[names[0]])
    fig = Figure(figsize=(7, 1.2 + 0.25 * len(names) * len(labels)))
    ax = fig.add_subplot()
    offsets = np.linspace(0.25, -0.25, len(names)) if len(names) > 1 else [0.0]
    for colour, (name, offset) in enumerate(zip(names, offsets, strict=True)):
        rows = -np.arange(len(labels)) + offset
        for row, label in zip(rows, labels, strict=True):
            draws = columns[name][label]
            ax.plot(hdi(draws, 0.94), [row, row], color=f"C{colour}", lw=1)
            ax.plot(hdi(draws, 0.5), [row, row], color=f"C{colour}", lw=3.5)
        medians = [np.median(columns[name][label]) for label in labels]
        ax.plot(medians, rows, "o", color=f"C{colour}", mfc="white", label=name)
    ax.set_yticks(-np.arange(len(labels)), labels)
    ax.legend(loc="best", fontsize="small")
    ax.set_title("Posterior intervals (94% HDI, 50% thick)")
    fig.tight_layout()
    return _save(fig, path)


def plot_trace(
    idata: arviz_compat.RunData,
    path: str | Path,
    max_chains: int = 4,
    var_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """ArviZ trace plot of the first ``max_chains`` chains (DilationKernel's
    chains are particles: a few show how single particles move)."""
    posterior = idata.posterior.isel(chain=slice(0, max_chains))
    names = list(posterior.data_vars) if var_names is None else list(var_names)
    fig = arviz_compat.trace_figure(posterior, names)
    shown = min(max_chains, idata.posterior.sizes["chain"])
    fig.suptitle(f"{title} (first {shown} of {idata.posterior.sizes['chain']} chains)")
    fig.tight_layout()
    return _save(fig, path)


def plot_pair(
    comparison: Comparison,
    path: str | Path,
    max_parameters: int = 4,
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """Scatter of every pair among the first ``max_parameters`` scalars and
    their histograms, with every sampler overlaid (``max_points`` draws each)."""
    draws, labels = {}, []
    for name, data in comparison.idata.items():
        labels = list(flat_parameters(data))[:max_parameters]
        draws[name] = _subsample(flat_draws(data)[:, :max_parameters], max_points, seed)
    k = len(labels)
    fig = Figure(figsize=(2.4 * k + 1, 2.4 * k + 0.5))
    axes = np.array(fig.subplots(k, k, squeeze=False))
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            for colour, (name, values) in enumerate(draws.items()):
                style = {"color": f"C{colour}", "label": name}
                if i == j:
                    ax.hist(
                        values[:, i],
                        bins=40,
                        density=True,
                        histtype="stepfilled",
                        alpha=0.5,
                        **style,
                    )
                else:
                    ax.scatter(values[:, j], values[:, i], s=3, alpha=0.3, **style)
            if i == k - 1:
                ax.set_xlabel(labels[j])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
    fig.suptitle(f"Pairs of the first {k} parameters (at most {max_points} draws each)")
    fig.tight_layout()
    # the empty top-right corner holds the legend (the only panel if k = 1)
    axes[0, k - 1].legend(
        *axes[0, 0].get_legend_handles_labels(), loc="upper right", markerscale=4
    )
    return _save(fig, path)


def latent_sites(comparison: Comparison) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the model's latent (unobserved) sample sites, read
    from a trace of the model at the reference sampler's first draw."""
    posterior = comparison.idata[comparison.reference].posterior
    first = {k: np.asarray(v.values[0, 0]) for k, v in posterior.data_vars.items()}
    _, trace = log_density(
        comparison.model, comparison.model_args, comparison.model_kwargs, first
    )
    return {
        name: tuple(np.shape(site["value"]))
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def _grid_bounds(
    draws: np.ndarray, extra: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    points = draws if extra is None else np.concatenate([draws, extra])
    low, high = np.quantile(points, [0.001, 0.999], axis=0)
    if extra is not None:
        low, high = np.minimum(low, extra.min(0)), np.maximum(high, extra.max(0))
    pad = 0.1 * np.maximum(high - low, 1e-6)
    return low - pad, high + pad


def plot_density(
    comparison: Comparison,
    path: str | Path,
    resolution: int = 200,
    max_points: int = 4000,
    seed: int = 0,
) -> Path:
    """Each sampler's draws over the model's density, for 1 or 2 latent scalars.

    The density ``exp(log p(x, data))`` is evaluated with NumPyro's
    ``log_density`` on a grid spanning the draws (and the mode centres when
    the comparison has them). Raises ``ValueError`` for more than 2 scalars.
    """
    sites = latent_sites(comparison)
    sizes = {n: int(np.prod(s)) for n, s in sites.items()}
    dim = sum(sizes.values())
    if dim > 2:
        raise ValueError(
            f"plot_density draws 1-D or 2-D posteriors; this one has {dim} latent "
            f"scalars ({sites}). Use plot_pair instead."
        )
    names = list(comparison.idata)
    draws = {n: flat_draws(d, list(sites)) for n, d in comparison.idata.items()}
    modes = comparison.mode_means
    if modes is not None and modes.shape[1] != dim:
        modes = None
    low, high = _grid_bounds(np.concatenate(list(draws.values())), modes)
    axes_values = [
        np.linspace(lo, hi, resolution) for lo, hi in zip(low, high, strict=True)
    ]
    mesh = np.stack([g.ravel() for g in np.meshgrid(*axes_values)], axis=-1)

    def log_p(x: jax.Array) -> jax.Array:
        params, start = {}, 0
        for name, shape in sites.items():
            params[name] = x[start : start + sizes[name]].reshape(shape)
            start += sizes[name]
        return log_density(
            comparison.model, comparison.model_args, comparison.model_kwargs, params
        )[0]

    logp = np.asarray(jax.jit(jax.vmap(log_p))(jnp.asarray(mesh)))
    density = np.exp(np.where(np.isfinite(logp), logp - np.nanmax(logp), -np.inf))
    label = list(flat_parameters(comparison.idata[names[0]], list(sites)))
    fig = Figure(figsize=(4.2 * len(names), 3.8))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for colour, (ax, name) in enumerate(zip(axes, names, strict=True)):
        shown = _subsample(draws[name], max_points, seed)
        if dim == 1:
            grid = axes_values[0]
            ax.plot(grid, density / np.trapezoid(density, grid), "k", label="density")
            ax.hist(shown[:, 0], bins=80, density=True, alpha=0.5, color=f"C{colour}")
            ax.set_xlabel(label[0])
        else:
            shape = (resolution, resolution)
            ax.contourf(
                axes_values[0], axes_values[1], density.reshape(shape), 20, cmap="Greys"
            )
            ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.4, color=f"C{colour}")
            ax.set_xlabel(label[0])
            ax.set_ylabel(label[1])
        ax.set_title(f"{name} ({len(shown)} draws)")
    fig.tight_layout()
    return _save(fig, path)


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_figures(comparison: Comparison, out_dir: str | Path) -> list[Path]:
    """All figures that apply: forest, one trace per sampler, pair, and the
    density plot when the posterior has 1 or 2 latent scalars."""
    out = Path(out_dir)
    paths = [plot_forest(comparison, out / "forest.png")]
    for name, data in comparison.idata.items():
        paths.append(
            plot_trace(data, out / f"trace_{_file_stem(name)}.png", title=name)
        )
    paths.append(plot_pair(comparison, out / "pair.png"))
    if sum(int(np.prod(s)) for s in latent_sites(comparison).values()) <= 2:
        paths.append(plot_density(comparison, out / "density.png"))
    return paths
