"""Benchmark runner: DilationKernel (MALA moves), NumPyro NUTS and the raw-JAX
MALA ceiling.

    python benchmarks/run.py --device cpu --json cpu.json   # all four targets
    python benchmarks/run.py --device gpu --json gpu.json   # one H100
    python benchmarks/run.py --targets funnel,eight_schools --size small --repeats 1

Every (target, method) cell runs in its own process, so that its peak memory
is its own; the processes run one after the other. Each cell runs warmup and
sampling ``--repeats`` times. NumPyro compiles its loops again on every run, so
a persistent compilation cache (a fresh folder per benchmark) serves the
repeats, and the time spent tracing, lowering and compiling, as JAX reports it
(the union of its ``/jax/core/compile/*`` spans,
``numpyro_dilation.compile_timer``), is subtracted from each wall time: the
"after compilation" times. ``compile`` is that time in the first repeat
(NUTS: its warmup call's only; the sampling call compiles NumPyro's loop over
the chains a second time, which one ``mcmc.run`` does not).

Columns: ``warmup`` and ``sample`` seconds after compilation (medians over
repeats), gradients (one per particle per iteration for DilationKernel and the
ceiling, leapfrog steps for NUTS) per second over warmup and sampling,
``min ESS`` (numpyro.diagnostics.effective_sample_size over every coordinate,
minimum), ESS per second (warmup included) and per gradient, the error against
the known answer (max over coordinates of |mean - true mean| / true sd and of
|sd / true sd - 1|; the mixture adds the mode-weight total variation and modes
found), and peak memory: GPU peak bytes in use, or on CPU the growth of the
process's peak resident memory from just before the first run, which also
counts XLA compiling.

The ceiling (benchmarks/ceiling.py) starts from DilationKernel's tuned state
(positions, step size, diagonal inverse mass), so its draws have the same law
as DilationKernel's sampling phase; ``sample/ceiling`` and ``warmup/ceiling``
compare the times of the same number of iterations: DilationKernel's sampling
phase with plain MALA collecting its draws, its warmup with plain MALA steps.

The logistic regression's reference is self-normalised importance sampling from
its Laplace approximation (Newton's method; proposal covariance inflated 1.2^2),
computed in its own process; its Monte Carlo error is reported in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("nuts", "dilation", "ceiling")
TARGETS = ("logistic", "eight_schools", "forty_mode", "funnel")

# Particles, DilationKernel (and ceiling) warmup and samples, NUTS (chains,
# warmup, samples). The logistic regression's gradient is ~1000x the others':
# it samples 200 iterations (as in docs/design.md section 6), the others 1000.
PROFILES = {
    "cpu": dict(particles=1024, warmup=400, samples=1000, nuts=(4, 500, 1000)),
    "gpu": dict(particles=8192, warmup=400, samples=1000, nuts=(4, 500, 1000)),
    "small": dict(particles=128, warmup=60, samples=30, nuts=(2, 60, 60)),
}
LOGISTIC_SAMPLES = {"cpu": 200, "gpu": 200, "small": 30}


# ---------------------------------------------------------------- targets
def _problem(name: str, small: bool):
    """(model, model_args, initial points sampler or None, DilationKernel options).

    The logistic regression's posterior is correlated (its Hessian is X^T W X):
    DilationKernel estimates a dense preconditioner from its population there,
    as a NumPyro user would ask NUTS for ``dense_mass``; NUTS keeps its default
    (diagonal), the setting of docs/design.md section 6.
    """
    from numpyro_dilation.validation import targets

    if name == "logistic":
        data = targets.logistic_regression_data(
            2000 if small else 20000, 10 if small else 50
        )
        return targets.logistic_regression_model, data, None, {"dense_mass": True}
    if name == "eight_schools":
        return targets.eight_schools_model, (), None, {}
    if name == "forty_mode":
        target = targets.forty_mode_mixture()
        return targets.as_numpyro_model(target), (), _box_init(target, 40.0), {}
    if name == "funnel":
        return targets.as_numpyro_model(targets.funnel(10)), (), None, {}
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def _box_init(target, half_width):
    """Initial points uniform in [-half_width, half_width]^d (the mixture's box)."""
    import jax

    def init(key, num):
        return {
            "x": jax.random.uniform(
                key, (num, target.dim), minval=-half_width, maxval=half_width
            )
        }

    return init


def _reference(name: str, small: bool) -> dict:
    """Known answer per site: mean and sd per coordinate (lists)."""
    from numpyro_dilation.validation import targets

    if name == "eight_schools":
        return {
            site: {"mean": [v["mean"]], "sd": [v["sd"]]}
            for site, v in targets.EIGHT_SCHOOLS_REFERENCE.items()
        }
    if name in ("forty_mode", "funnel"):
        target = targets.forty_mode_mixture() if name == "forty_mode" else None
        target = target or targets.funnel(10)
        ref = target.reference
        sd = ref["sd"] if "sd" in ref else np.sqrt(np.asarray(ref["var"]))
        return {
            "x": {
                "mean": np.asarray(ref["mean"]).tolist(),
                "sd": np.asarray(sd).tolist(),
            }
        }
    return _logistic_reference(small)


def _logistic_reference(small: bool, num_draws: int = 200_000) -> dict:
    """Importance sampling from the Laplace approximation (see module docstring)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    model, args, _, _ = _problem("logistic", small)
    info = initialize_model(jax.random.PRNGKey(0), model, model_args=args)
    flat, unravel = ravel_pytree(info.param_info.z)
    potential = jax.jit(lambda x: info.potential_fn(unravel(x)))
    grad, hess = jax.jit(jax.grad(potential)), jax.jit(jax.hessian(potential))
    x = jnp.zeros_like(flat)
    for _ in range(50):
        x = x - jnp.linalg.solve(hess(x), grad(x))
    chol = 1.2 * jnp.linalg.cholesky(jnp.linalg.inv(hess(x)))
    batched = jax.jit(jax.vmap(potential))
    key = jax.random.PRNGKey(1)
    log_w, draws = [], []
    for k in jax.random.split(key, num_draws // 10_000):
        z = jax.random.normal(k, (10_000, x.shape[0]))
        y = x + z @ chol.T
        log_w.append(-batched(y) + 0.5 * jnp.sum(z**2, -1))
        draws.append(y)
    log_w, draws = np.concatenate(log_w), np.concatenate(draws)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = w @ draws
    sd = np.sqrt(w @ (draws - mean) ** 2)
    ess = 1.0 / np.sum(w**2)
    out = {}
    for site, value in unravel(jnp.arange(x.shape[0])).items():
        idx = np.atleast_1d(np.asarray(value))
        out[site] = {"mean": mean[idx].tolist(), "sd": sd[idx].tolist()}
    out["_importance_ess"] = float(ess)
    return out


# ---------------------------------------------------------------- one cell
def _peak_memory(baseline_rss: int) -> tuple[int, str]:
    import resource

    import jax

    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak bytes in use"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak - baseline_rss, "peak RSS growth (incl. compiling)"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _summaries(samples: dict, name: str) -> dict:
    """ESS and per-site moments of draws grouped by chain: (chains, draws, ...)."""
    from numpyro.diagnostics import effective_sample_size

    from numpyro_dilation.validation import targets

    flat = {
        k: np.asarray(v).reshape(v.shape[0], v.shape[1], -1) for k, v in samples.items()
    }
    stacked = np.concatenate([flat[k] for k in sorted(flat)], axis=-1)
    ess = np.asarray(effective_sample_size(stacked))
    out = {
        "ess_min": float(np.nanmin(ess)),
        "moments": {
            k: {
                "mean": v.reshape(-1, v.shape[-1]).mean(0).tolist(),
                "sd": v.reshape(-1, v.shape[-1]).std(0).tolist(),
            }
            for k, v in flat.items()
        },
    }
    if name == "forty_mode":
        target = targets.forty_mode_mixture()
        x = stacked.reshape(-1, stacked.shape[-1])
        out["tv"] = float(targets.mode_weight_tv(x, target.means, target.weights))
        out["modes"] = int(targets.modes_found(x, target.means))
    return out


def _mcmc_run(mcmc, key_warmup, key_sample, model_args, init, extra):
    """Warmup then sampling, timed; NUTS also counts its leapfrog steps."""
    from numpyro_dilation.compile_timer import timed

    _, warmup_s, compile_w = timed(
        lambda: (
            mcmc.warmup(
                key_warmup,
                *model_args,
                init_params=init,
                extra_fields=extra,
                collect_warmup=bool(extra),
            )
            or mcmc.post_warmup_state
        )
    )
    steps = int(np.sum(mcmc.get_extra_fields()["num_steps"])) if extra else 0
    _, sample_s, compile_s = timed(
        lambda: (
            mcmc.run(key_sample, *model_args, extra_fields=extra)
            or mcmc.get_samples(group_by_chain=True)
        )
    )
    if extra:
        steps += int(np.sum(mcmc.get_extra_fields()["num_steps"]))
        # NUTS's sampling call compiles NumPyro's loop over the chains again
        # (its warmup ran apart, collected, for the per-phase times), which
        # one mcmc.run does not: its compile time is the warmup call's
        # (numpyro_dilation.compare runs NUTS in one mcmc.run instead).
        compile_s = 0.0
    return warmup_s, sample_s, compile_w + compile_s, steps


def _ceiling(model, model_args, key, tuned, num_warmup, num_samples):
    """The ceiling's two loops, compiled ahead, from DilationKernel's tuned state."""
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    sys.path.insert(0, str(Path(__file__).parent))
    from ceiling import mala

    from numpyro_dilation.core.sampler import target_position

    pop = tuned.sampler_state
    x0, inv_mass = target_position(pop), pop.inv_mass
    step_size = jax.numpy.exp(pop.step_size.log_step_size)
    info = initialize_model(key, model, model_args=model_args)
    unravel = ravel_pytree(info.param_info.z)[1]

    def logdensity(x):
        return -info.potential_fn(unravel(x))

    args = (key, x0, step_size, inv_mass)
    start = time.perf_counter()
    loop = jax.jit(mala, static_argnums=(0, 5, 6))
    warm = loop.lower(logdensity, *args, num_warmup, False).compile()
    sample = loop.lower(logdensity, *args, num_samples, True).compile()
    compile_s = time.perf_counter() - start
    memory = sample.memory_analysis()
    peak = sum(
        getattr(memory, f, 0) or 0
        for f in (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "temp_size_in_bytes",
        )
    )
    return (lambda: warm(*args)), (lambda: sample(*args)), compile_s, peak, unravel


def run_cell(args) -> dict:
    import jax

    cache = Path(args.cache)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # Full float32 matrix products (no TF32 on GPUs): a Metropolis ratio of a
    # 20000-term likelihood needs them, for every method alike.
    jax.config.update("jax_default_matmul_precision", "highest")
    if args.device == "gpu" and jax.default_backend() != "gpu":
        raise RuntimeError(f"--device gpu, but JAX runs on {jax.devices()}")
    if args.method == "reference":
        return {"reference": _reference(args.target, args.size == "small")}

    from numpyro.infer import MCMC, NUTS

    from numpyro_dilation import DilationKernel
    from numpyro_dilation.compile_timer import timed

    size = args.size if args.size == "small" else args.device
    profile = dict(PROFILES[size])
    if args.target == "logistic":
        profile["samples"] = LOGISTIC_SAMPLES[size]
    model, model_args, init_fn, options = _problem(args.target, args.size == "small")
    key_init, key_warmup, key_sample = jax.random.split(
        jax.random.PRNGKey(args.seed), 3
    )
    baseline = _rss()
    device = jax.devices()[0].device_kind
    if args.method == "nuts":
        chains, num_warmup, num_samples = profile["nuts"]
        kernel, extra = NUTS(model), ("num_steps",)
    else:
        chains = args.particles or profile["particles"]
        num_warmup = args.warmup or profile["warmup"]
        num_samples = args.samples or profile["samples"]
        # MALA moves: the ceiling is a raw-JAX MALA loop from this kernel's
        # tuned state (step="auto", the default, runs HMC on one mode).
        kernel, extra = DilationKernel(model, step="mala", **options), ()
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    init = init_fn(key_init, chains) if init_fn else None
    times, ceiling_times, peak = [], [], None
    for _ in range(args.repeats):
        times.append(_mcmc_run(mcmc, key_warmup, key_sample, model_args, init, extra))
        if peak is None:
            peak, peak_kind = _peak_memory(baseline)
            draws = mcmc.get_samples(group_by_chain=True)
            if args.with_ceiling:
                warm, sample, ceiling_compile, ceiling_peak, unravel = _ceiling(
                    model,
                    model_args,
                    key_sample,
                    mcmc.post_warmup_state,
                    num_warmup,
                    num_samples,
                )
        if args.with_ceiling:
            ceiling_times.append((timed(warm)[1], timed(sample)[1], ceiling_compile, 0))
    grads = times[0][3] if extra else chains * (num_warmup + num_samples)
    cells = [
        _cell(
            args.target,
            args.method,
            device,
            chains,
            num_warmup,
            num_samples,
            times,
            grads,
            peak,
            peak_kind,
            draws,
        )
    ]
    if args.with_ceiling:
        flat = sample()
        ceiling_draws = jax.vmap(jax.vmap(unravel))(flat)
        cells.append(
            _cell(
                args.target,
                "ceiling",
                device,
                chains,
                num_warmup,
                num_samples,
                ceiling_times,
                grads,
                ceiling_peak,
                "XLA memory analysis",
                ceiling_draws,
            )
        )
        # Median over repeats of the ratio within each repeat: the two ran
        # back to back, under the same load.
        ratios = np.asarray(times)[:, :2] / np.asarray(ceiling_times)[:, :2]
        cells[0]["ratios"] = {
            "warmup": float(np.median(ratios[:, 0])),
            "sample": float(np.median(ratios[:, 1])),
        }
    return {"cells": cells}


def _cell(
    target,
    method,
    device,
    chains,
    num_warmup,
    num_samples,
    times,
    grads,
    peak,
    peak_kind,
    draws,
) -> dict:
    warmups, samples, compiles, _ = zip(*times, strict=True)
    return dict(
        target=target,
        method=method,
        device=device,
        chains=chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        warmup_s=float(np.median(warmups)),
        sample_s=float(np.median(samples)),
        warmup_s_all=list(warmups),
        sample_s_all=list(samples),
        compile_s=compiles[0],
        grads=int(grads),
        peak_bytes=int(peak),
        peak_kind=peak_kind,
        draws_bytes=int(sum(np.asarray(v).nbytes for v in draws.values())),
        **_summaries(draws, target),
    )


# ---------------------------------------------------------------- orchestration
def _spawn(argv: list[str], device: str) -> dict:
    env = dict(os.environ)
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        # jaxlib's CPU LAPACK calls (the dense preconditioner's Cholesky and
        # triangular solves) run on OpenBLAS threads that keep spinning after
        # each call and steal the cores XLA computes on.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, env=env
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"cell {argv} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _errors(cell: dict, reference: dict) -> dict:
    mean_err, sd_err = [], []
    for site, ref in reference.items():
        if site.startswith("_"):
            continue
        got = cell["moments"][site]
        ref_mean, ref_sd = np.asarray(ref["mean"]), np.asarray(ref["sd"])
        mean_err.append(np.abs(np.asarray(got["mean"]) - ref_mean) / ref_sd)
        sd_err.append(np.abs(np.asarray(got["sd"]) / ref_sd - 1))
    return {
        "mean_err": float(np.max(np.concatenate(mean_err))),
        "sd_err": float(np.max(np.concatenate(sd_err))),
    }


def _derive(cell: dict, reference: dict) -> dict:
    total = cell["warmup_s"] + cell["sample_s"]
    cell.update(_errors(cell, reference))
    cell.update(
        total_s=total,
        grads_per_s=cell["grads"] / total,
        ess_per_s=cell["ess_min"] / total,
        ess_per_grad=cell["ess_min"] / cell["grads"],
    )
    return cell


def _progress(c: dict) -> str:
    return (
        f"{c['target']:14s} {c['method']:9s} warmup {c['warmup_s']:.3f}s "
        f"sample {c['sample_s']:.3f}s min ESS {c['ess_min']:.0f} "
        f"mean err {c['mean_err']:.3f}"
    )


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def table(cells: list[dict]) -> str:
    """The results as a Markdown table, then the ratios."""
    head = (
        "| target | method | chains | compile s | warmup s | sample s | grad/s "
        "| min ESS | ESS/s | ESS/grad | mean err | sd err | peak mem |"
    )
    rows = [head, "|" + "---|" * 13]
    for c in cells:
        acc = f"{c['mean_err']:.3f}"
        if "tv" in c:
            acc += f" (TV {c['tv']:.2f}, {c['modes']}/40 modes)"
        rows.append(
            f"| {c['target']} | {c['method']} | {c['chains']} | {c['compile_s']:.1f} "
            f"| {c['warmup_s']:.3f} | {c['sample_s']:.3f} | {c['grads_per_s']:.3g} "
            f"| {c['ess_min']:.0f} | {c['ess_per_s']:.3g} | {c['ess_per_grad']:.3g} "
            f"| {acc} | {c['sd_err']:.3f} | {_fmt_bytes(c['peak_bytes'])} |"
        )
    by = {(c["target"], c["method"]): c for c in cells}
    lines = [
        "",
        "| target | sample / ceiling | warmup / ceiling | ESS/s vs NUTS |",
        "|---|---|---|---|",
    ]
    for target in dict.fromkeys(c["target"] for c in cells):
        dil, ceil, nuts = (by.get((target, m)) for m in ("dilation", "ceiling", "nuts"))
        if dil is None:
            continue
        ratios = dil.get("ratios")
        ratio_s = f"{ratios['sample']:.2f}" if ratios else "-"
        ratio_w = f"{ratios['warmup']:.2f}" if ratios else "-"
        speed = f"{dil['ess_per_s'] / nuts['ess_per_s']:.0f}x" if nuts else "-"
        lines.append(f"| {target} | {ratio_s} | {ratio_w} | {speed} |")
    return "\n".join(rows + lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument("--particles", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--cell", nargs=2, metavar=("TARGET", "METHOD"))
    parser.add_argument("--cache", default=None)
    parser.add_argument("--with-ceiling", action="store_true")
    args = parser.parse_args(argv)

    if args.cell:
        args.target, args.method = args.cell
        print("RESULT " + json.dumps(run_cell(args)), flush=True)
        return

    methods = [m for m in METHODS if m in args.methods.split(",")]
    common = ["--device", args.device, "--size", args.size, "--seed", str(args.seed)]
    for flag in ("particles", "warmup", "samples"):
        if getattr(args, flag):
            common += [f"--{flag}", str(getattr(args, flag))]
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets.split(","):
            cache = ["--cache", os.path.join(tmp, "cache")]
            ref = _spawn(["--cell", target, "reference", *common, *cache], args.device)
            for method in [m for m in methods if m != "ceiling"]:
                with_ceiling = method == "dilation" and "ceiling" in methods
                ceiling = ["--with-ceiling"] if with_ceiling else []
                out = _spawn(
                    ["--cell", target, method, *common, *cache, *ceiling]
                    + ["--repeats", str(args.repeats)],
                    args.device,
                )
                for cell in out["cells"]:
                    cells.append(_derive(cell, ref["reference"]))
                    print(_progress(cell), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(cells, indent=1))
    print(table(cells))


if __name__ == "__main__":
    main()
