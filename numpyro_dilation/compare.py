"""Side by side with NUTS: run several NumPyro kernels on one model and compare.

:func:`compare` runs each kernel (by default NUTS and :class:`DilationKernel`) on
the same model, data and seed, converts each run to ArviZ and returns a
:class:`Comparison` with one row per sampler:

* ``time_s``: warmup plus sampling, in seconds of wall time, **compilation
  excluded**; ``compile_s``: the time JAX spent tracing, lowering and compiling
  during the run (the union of its ``/jax/core/compile/*`` monitoring spans,
  :mod:`numpyro_dilation.compile_timer`), which is reported apart.
  ``time_s = wall - compile_s``. Every kernel runs in one ``MCMC.run``, so
  NumPyro compiles its loop over the chains once.
* ``gradients``: gradient evaluations, warmup included. HMC and NUTS: the sum of
  ``num_steps`` (leapfrog steps) over every warmup and sampling iteration of
  every chain, summed in each chain's state as it runs (the few gradients of
  the initial step-size search are not counted).
  DilationKernel: one per particle per iteration (an HMC move's leapfrog steps)
  plus those of its mode fits (``DilationKernel.num_evaluations``). Other kernels: NaN.
* ``ess_bulk_min``, ``ess_tail_min``, ``rhat_max``: the smallest bulk and tail
  ESS and the largest R-hat over every scalar of the posterior
  (``arviz.ess(method="bulk"/"tail")``, ``arviz.rhat``; NaN entries, e.g. of a
  constant, are skipped). DilationKernel's chains are its particles.
* ``rhat_nested_max``: the largest nested R-hat (``numpyro_dilation.nested_rhat``:
  particles grouped into up to 16 superchains by where they started; NUTS's
  chains one superchain each). With many short chains, read this one.
* ``ess_per_s = ess_bulk_min / time_s``, ``ess_per_grad = ess_bulk_min / gradients``.
* ``divergences``: divergent transitions among the post-warmup draws.
* with ``mode_means``: ``modes_found`` and, with ``mode_weights`` too,
  ``mode_weight_tv`` (see :mod:`numpyro_dilation.validation.targets`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import arviz as az
import jax
import numpy as np
import pandas as pd
from numpyro.infer import HMC, MCMC, NUTS
from numpyro.infer.hmc import HMCState
from numpyro.infer.mcmc import MCMCKernel

from numpyro_dilation import arviz_compat, nested_rhat
from numpyro_dilation.compile_timer import CompileTimer
from numpyro_dilation.kernel import DilationKernel
from numpyro_dilation.validation import targets

__all__ = [
    "Run",
    "Comparison",
    "compare",
    "default_kernels",
    "flat_parameters",
    "flat_draws",
]

_HMC_FIELDS = (
    "num_steps",
    "potential_energy",
    "energy",
    "accept_prob",
    "adapt_state.step_size",
)


class _CountedState(NamedTuple):
    """An HMC state and the leapfrog steps its chain has taken since ``init``."""

    hmc: HMCState
    leapfrog_steps: Any

    def __getattr__(self, name: str) -> Any:
        # MCMC reads the sample field and the extra fields off the state.
        return getattr(self.hmc, name)


class _LeapfrogCount(MCMCKernel):
    """``kernel`` (HMC or NUTS) with each chain's leapfrog steps summed in its
    state, so that one ``MCMC.run`` counts the warmup's gradients too (its
    collected ``num_steps`` are the sampling iterations' only)."""

    def __init__(self, kernel: HMC) -> None:
        self.kernel = kernel

    @property
    def model(self) -> Callable | None:
        return self.kernel.model

    @property
    def sample_field(self) -> str:
        return self.kernel.sample_field

    @property
    def default_fields(self) -> tuple[str, ...]:
        return self.kernel.default_fields

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        state = self.kernel.init(
            rng_key, num_warmup, init_params, model_args, model_kwargs
        )
        return _CountedState(state, jax.numpy.zeros_like(state.num_steps))

    def sample(self, state, model_args, model_kwargs):
        hmc = self.kernel.sample(state.hmc, model_args, model_kwargs)
        return _CountedState(hmc, state.leapfrog_steps + hmc.num_steps)

    def postprocess_fn(self, args, kwargs):
        return self.kernel.postprocess_fn(args, kwargs)

    def get_diagnostics_str(self, state) -> str:
        return self.kernel.get_diagnostics_str(state.hmc)


@dataclass(frozen=True)
class Run:
    """One sampler of a comparison: a kernel and, optionally, its own budget.

    Fields left ``None`` take :func:`compare`'s ``num_warmup`` and
    ``num_samples``, and ``num_chains`` (``num_particles`` for ensemble kernels
    such as DilationKernel). ``name`` defaults to the kernel's class name.
    """

    kernel: MCMCKernel
    name: str | None = None
    num_chains: int | None = None
    num_warmup: int | None = None
    num_samples: int | None = None
    chain_method: str = "vectorized"


@dataclass
class Comparison:
    """What :func:`compare` returns.

    - **idata**: ``{sampler name: run}``, in run order; a run is an
      ``arviz.InferenceData`` with ArviZ 0.x, an ``xarray.DataTree`` with 1.x.
    - **table**: one row per sampler (the columns are listed in the module doc).
    - **parameters**: one row per scalar parameter; columns ``(sampler, stat)``
      with ``mean`` and ``sd`` for each sampler and, for every sampler after the
      first (the reference), ``diff_sd = (mean - mean_ref) / sd_ref`` and
      ``sd_ratio = sd / sd_ref``.
    - **mode_weights**: share of each sampler's draws nearest to each of
      ``mode_means`` (and the ``target`` weights when given); else ``None``.
    - **model**, **model_args**, **model_kwargs**, **mode_means**,
      **mode_sites**: what the comparison ran on (the plots use them).
    """

    idata: dict[str, arviz_compat.RunData]
    table: pd.DataFrame
    parameters: pd.DataFrame
    mode_weights: pd.DataFrame | None
    model: Callable
    model_args: tuple
    model_kwargs: dict
    mode_means: np.ndarray | None = None
    mode_sites: tuple[str, ...] | None = None

    @property
    def reference(self) -> str:
        """The first sampler, against which ``parameters`` measures differences."""
        return next(iter(self.idata))

    def positions(self, name: str) -> np.ndarray:
        """Draws of sampler ``name`` as ``(chain * draw, d)``, over ``mode_sites``."""
        return flat_draws(self.idata[name], self.mode_sites)

    def to_string(self, max_rows: int = 20) -> str:
        """The tables as text: the summary (one column per sampler), at most
        ``max_rows`` parameters, and at most ``max_rows`` modes (those whose
        share is farthest from the target weight, or the reference's heaviest)."""
        parts = [self.table.T.to_string(float_format=_fmt)]
        params = self.parameters
        if len(params) > max_rows:
            parts.append(f"(first {max_rows} of {len(params)} parameters)")
            params = params.head(max_rows)
        parts.append(params.to_string(float_format=_fmt))
        if self.mode_weights is not None:
            weights = self.mode_weights
            if "target" in weights:
                order = weights.sub(weights["target"], axis=0).abs().max(axis=1)
                how = "largest error first"
            else:
                order, how = weights[self.reference], "heaviest first"
            weights = weights.loc[order.sort_values(ascending=False).index]
            if len(weights) > max_rows:
                weights = weights.head(max_rows)
            parts.append(
                f"mode shares ({len(weights)} of {len(self.mode_weights)} modes, "
                f"{how})\n" + weights.to_string(float_format=_fmt)
            )
        return "\n\n".join(parts)

    def save_tables(self, out_dir: str | Path) -> list[Path]:
        """Write ``table.csv``, ``parameters.csv`` (and ``mode_weights.csv``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        frames = {"table": self.table, "parameters": self.parameters}
        if self.mode_weights is not None:
            frames["mode_weights"] = self.mode_weights
        paths = []
        for stem, frame in frames.items():
            path = out / f"{stem}.csv"
            frame.to_csv(path)
            paths.append(path)
        return paths


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def default_kernels(
    model: Callable, init_strategy: Callable | None = None
) -> dict[str, MCMCKernel]:
    """``{"NUTS": NUTS(model), "DilationKernel": DilationKernel(model)}``, both
    with ``init_strategy`` when given (NumPyro's ``init_to_uniform`` if not)."""
    options = {} if init_strategy is None else {"init_strategy": init_strategy}
    return {
        "NUTS": NUTS(model, **options),
        "DilationKernel": DilationKernel(model, **options),
    }


def _as_runs(
    kernels: Sequence[MCMCKernel | Run] | Mapping[str, MCMCKernel | Run],
) -> list[Run]:
    items = (
        list(kernels.items())
        if isinstance(kernels, Mapping)
        else [(None, k) for k in kernels]
    )
    runs = []
    for name, item in items:
        run = item if isinstance(item, Run) else Run(item)
        if not isinstance(run.kernel, MCMCKernel):
            raise TypeError(
                "kernels must hold NumPyro MCMC kernels (e.g. NUTS(model)) or "
                f"compare.Run entries; got {type(run.kernel).__name__}."
            )
        name = name or run.name or type(run.kernel).__name__
        runs.append(replace(run, name=name))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"Sampler names must be unique, got {names}: pass kernels as a dict "
            "{name: kernel} or give each Run a name."
        )
    if not runs:
        raise ValueError("kernels is empty: pass at least one kernel.")
    if len({id(r.kernel) for r in runs}) != len(runs):
        raise ValueError(
            "The same kernel object appears twice in kernels: a kernel keeps the "
            "state of its run, so pass a fresh kernel for each entry."
        )
    return runs


def _num_superchains(num_chains: int) -> int:
    """The most superchains, up to ``nested_rhat.DEFAULT_SUPERCHAINS``, that
    divide ``num_chains`` (1 when only 1 does: nested R-hat is then NaN)."""
    return max(
        k for k in range(1, nested_rhat.DEFAULT_SUPERCHAINS + 1) if num_chains % k == 0
    )


def _check_count(name: str, value: int, minimum: int) -> None:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _run_one(
    run: Run,
    seed: int,
    model_args: tuple,
    model_kwargs: dict,
    progress: Callable[[str], None],
    progress_bar: bool,
) -> tuple[arviz_compat.RunData, dict[str, float]]:
    """Warmup then sampling; returns the InferenceData and the cost figures."""
    counts_steps = isinstance(run.kernel, HMC)
    mcmc = MCMC(
        _LeapfrogCount(run.kernel) if counts_steps else run.kernel,
        num_warmup=run.num_warmup,
        num_samples=run.num_samples,
        num_chains=run.num_chains,
        chain_method=run.chain_method,
        progress_bar=progress_bar,
    )
    progress(
        f"{run.name}: {run.num_chains} chains x ({run.num_warmup} warmup + "
        f"{run.num_samples} samples)"
    )
    with CompileTimer() as timer:
        start = time.perf_counter()
        mcmc.run(
            jax.random.PRNGKey(seed),
            *model_args,
            extra_fields=_HMC_FIELDS if counts_steps else (),
            **model_kwargs,
        )
        jax.block_until_ready(mcmc.last_state)
        wall = time.perf_counter() - start
    if counts_steps:
        gradients = float(np.sum(mcmc.last_state.leapfrog_steps))
    elif isinstance(run.kernel, DilationKernel):
        num_iterations = run.num_warmup + run.num_samples
        gradients = float(run.kernel.num_evaluations(num_iterations, mcmc.last_state))
    else:
        gradients = float("nan")
    time_s = wall - timer.seconds
    progress(f"{run.name}: {time_s:.1f} s + {timer.seconds:.1f} s compilation")
    with warnings.catch_warnings():
        # A population of particles has more chains than draws by design.
        warnings.filterwarnings("ignore", "More chains", UserWarning)
        warnings.filterwarnings("ignore", "Found chain dimension", UserWarning)
        idata = arviz_compat.from_numpyro(mcmc)
    return idata, {
        "chains": run.num_chains,
        "warmup": run.num_warmup,
        "samples": run.num_samples,
        "time_s": time_s,
        "compile_s": timer.seconds,
        "gradients": gradients,
        "rhat_nested_max": nested_rhat.max_rhat_nested(
            mcmc, _num_superchains(run.num_chains)
        ),
    }


def _all_values(dataset: Any) -> np.ndarray:
    return np.concatenate(
        [np.ravel(np.asarray(v, float)) for v in dataset.data_vars.values()]
    )


def _nan_extreme(values: np.ndarray, fn: Callable) -> float:
    finite = values[~np.isnan(values)]
    return float(fn(finite)) if finite.size else float("nan")


def _diagnostics(idata: arviz_compat.RunData) -> dict[str, float]:
    # ArviZ's three diagnostics run side by side: most of their time is NumPy's
    # sorts (the rank normalisation) and FFTs, which release the GIL. The demo's
    # eight schools, 1024 x 500 DilationKernel draws: 3.4-4.1 s instead of
    # 6.1-6.7 s on 2 cores, ArviZ 0.x and 1.x alike (docs/benchmarks.md).
    with ThreadPoolExecutor(3) as pool:
        bulk = pool.submit(az.ess, idata, method="bulk")
        tail = pool.submit(az.ess, idata, method="tail")
        rhats = pool.submit(az.rhat, idata)
        ess_bulk = _nan_extreme(_all_values(bulk.result()), np.min)
        ess_tail = _nan_extreme(_all_values(tail.result()), np.min)
        rhat = _nan_extreme(_all_values(rhats.result()), np.max)
    stats = getattr(idata, "sample_stats", None)
    divergences = (
        float(np.sum(stats["diverging"].values))
        if stats is not None and "diverging" in stats
        else float("nan")
    )
    return {
        "ess_bulk_min": ess_bulk,
        "ess_tail_min": ess_tail,
        "rhat_max": rhat,
        "divergences": divergences,
    }


def flat_parameters(
    idata: arviz_compat.RunData, var_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """``{ArviZ-style scalar name: draws (chain, draw)}`` for every scalar of the
    posterior variables ``var_names`` (all by default), in order; names read
    ``x`` or ``x[i, j]`` as in ``arviz.summary``."""
    posterior = idata.posterior
    names = list(posterior.data_vars) if var_names is None else list(var_names)
    missing = [n for n in names if n not in posterior]
    if missing:
        raise ValueError(
            f"{missing} are not posterior variables; choose among "
            f"{list(posterior.data_vars)}."
        )
    out = {}
    for name in names:
        values = np.asarray(posterior[name].values)
        event_shape = values.shape[2:]
        for index in np.ndindex(*event_shape):
            label = f"{name}[{', '.join(map(str, index))}]" if index else name
            out[label] = values[(slice(None), slice(None), *index)]
    return out


def flat_draws(
    idata: arviz_compat.RunData, var_names: Sequence[str] | None = None
) -> np.ndarray:
    """The scalars of :func:`flat_parameters` as columns: ``(chain * draw, d)``."""
    columns = flat_parameters(idata, var_names)
    return np.stack([np.ravel(v) for v in columns.values()], axis=-1)


def _parameter_table(idata: dict[str, arviz_compat.RunData]) -> pd.DataFrame:
    """Mean and sd (ddof=1, as arviz.summary) per sampler, with differences in
    units of the reference sampler's posterior sd."""
    columns = {}
    reference = None
    for name, data in idata.items():
        flat = flat_parameters(data)
        mean = pd.Series({k: np.mean(v) for k, v in flat.items()})
        sd = pd.Series({k: np.std(v, ddof=1) for k, v in flat.items()})
        columns[(name, "mean")] = mean
        columns[(name, "sd")] = sd
        if reference is None:
            reference = (mean, sd)
        else:
            columns[(name, "diff_sd")] = (mean - reference[0]) / reference[1]
            columns[(name, "sd_ratio")] = sd / reference[1]
    table = pd.DataFrame(columns)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["sampler", ""])
    return table


def _mode_table(
    idata: dict[str, arviz_compat.RunData],
    means: np.ndarray,
    weights: np.ndarray | None,
    sites: Sequence[str] | None,
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    shares = {}
    summary = {}
    for name, data in idata.items():
        draws = flat_draws(data, sites)
        if draws.shape[1] != means.shape[1]:
            raise ValueError(
                f"mode_means has {means.shape[1]} coordinates per mode but the "
                f"posterior of {sorted(sites or data.posterior.data_vars)} has "
                f"{draws.shape[1]}: pass mode_sites naming the sites the modes "
                "live on, in the order of their coordinates."
            )
        shares[name] = np.asarray(targets.mode_shares(draws, means))
        summary[name] = {"modes_found": float(targets.modes_found(draws, means))}
        if weights is not None:
            summary[name]["mode_weight_tv"] = float(
                targets.mode_weight_tv(draws, means, weights)
            )
    table = pd.DataFrame(shares)
    if weights is not None:
        table.insert(0, "target", weights / np.sum(weights))
    table.index.name = "mode"
    return table, summary


def compare(
    model: Callable,
    *args: Any,
    kernels: Sequence[MCMCKernel | Run] | Mapping[str, MCMCKernel | Run] | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    num_particles: int = 1024,
    seed: int = 0,
    init_strategy: Callable | None = None,
    mode_means: Any = None,
    true_mode_weights: Any = None,
    mode_sites: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    progress_bar: bool = False,
    **kwargs: Any,
) -> Comparison:
    """Run each kernel on ``model(*args, **kwargs)`` with the same seed; compare.

    :param model: a NumPyro model.
    :param args: positional arguments of the model (its data).
    :param kernels: NumPyro kernels or :class:`Run` entries, as a list (named
        after their class) or a dict ``{name: kernel}``; default
        :func:`default_kernels` (NUTS, then DilationKernel). Each kernel object
        is used for one run: pass fresh ones. The first is the reference of
        ``Comparison.parameters``.
    :param num_warmup: warmup iterations of every run that sets none.
    :param num_samples: post-warmup draws per chain of every run that sets none.
    :param num_chains: chains of every non-ensemble kernel (NUTS).
    :param num_particles: chains of every ensemble kernel (DilationKernel: its
        particles).
    :param seed: every run starts from ``jax.random.PRNGKey(seed)``.
    :param init_strategy: NumPyro init strategy for the default kernels.
    :param mode_means: ``(K, d)`` mode centres of a multimodal posterior, in
        the flattened coordinates of ``mode_sites``; adds ``mode_weights`` and
        the ``modes_found`` column.
    :param true_mode_weights: ``(K,)`` true mode weights; adds ``mode_weight_tv``.
    :param mode_sites: posterior sites the modes live on (default: all).
    :param progress: called with a line of text before and after each run.
    :param progress_bar: show NumPyro's progress bars (their per-iteration
        updates slow the runs down, and so the timings).
    :param kwargs: keyword arguments of the model (other than the names of
        the parameters above).
    """
    for name, value, minimum in [
        ("num_warmup", num_warmup, 1),
        ("num_samples", num_samples, 4),
        ("num_chains", num_chains, 1),
        ("num_particles", num_particles, 2),
    ]:
        _check_count(name, value, minimum)
    if kernels is None:
        kernels = default_kernels(model, init_strategy)
    runs = []
    for run in _as_runs(kernels):
        default_chains = num_particles if run.kernel.is_ensemble_kernel else num_chains
        run = replace(
            run,
            num_chains=run.num_chains or default_chains,
            num_warmup=run.num_warmup or num_warmup,
            num_samples=run.num_samples or num_samples,
        )
        if run.kernel.is_ensemble_kernel and run.chain_method != "vectorized":
            raise ValueError(
                f"{run.name} is an ensemble kernel: its chains run as one "
                "population, so its Run needs chain_method='vectorized'."
            )
        runs.append(run)
    means = None if mode_means is None else np.asarray(mode_means, float)
    if means is not None and means.ndim != 2:
        raise ValueError(
            f"mode_means must have shape (num_modes, d), got {means.shape}."
        )
    weights = (
        None if true_mode_weights is None else np.asarray(true_mode_weights, float)
    )
    if weights is not None and (means is None or weights.shape != means.shape[:1]):
        raise ValueError(
            "true_mode_weights needs mode_means and one weight per mode: got "
            f"{None if weights is None else weights.shape} weights for "
            f"{None if means is None else means.shape[0]} modes."
        )
    report = progress or (lambda _: None)
    idata, rows = {}, {}
    for run in runs:
        idata[run.name], rows[run.name] = _run_one(
            run, seed, args, kwargs, report, progress_bar
        )
        rows[run.name].update(_diagnostics(idata[run.name]))
    table = pd.DataFrame(rows).T
    table.index.name = "sampler"
    table["ess_per_s"] = table["ess_bulk_min"] / table["time_s"]
    table["ess_per_grad"] = table["ess_bulk_min"] / table["gradients"]
    mode_table = None
    if means is not None:
        mode_table, mode_summary = _mode_table(idata, means, weights, mode_sites)
        table = table.join(pd.DataFrame(mode_summary).T)
    return Comparison(
        idata=idata,
        table=table.astype(float),
        parameters=_parameter_table(idata),
        mode_weights=mode_table,
        model=model,
        model_args=args,
        model_kwargs=kwargs,
        mode_means=means,
        mode_sites=None if mode_sites is None else tuple(mode_sites),
    )
