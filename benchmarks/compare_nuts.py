"""NUTS and DilationKernel side by side on the reference targets.

Runs :func:`numpyro_dilation.compare.compare` (same seed, same warmup and
draws per chain; NUTS 4 chains, DilationKernel 1024 particles) on each target
of ``numpyro_dilation.validation.targets`` and writes

* ``benchmarks/results/compare_nuts.md``: the cost table and the accuracy
  table against the known answers (included by docs/benchmarks.md);
* ``docs/img/bench_*.png``: the figures of docs/benchmarks.md.

A run with ``--quick`` or ``--only`` writes both under ``out/benchmarks/``
instead, so that only the full run updates the documentation.

    python benchmarks/compare_nuts.py            # about 5 minutes on 2 cores
    python benchmarks/compare_nuts.py --quick    # a small budget, to try it
"""

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.infer.initialization import init_to_uniform

from numpyro_dilation import plots
from numpyro_dilation.compare import Comparison, compare
from numpyro_dilation.validation import targets

ROOT = Path(__file__).resolve().parent.parent
COST_COLUMNS = [
    "time_s",
    "compile_s",
    "gradients",
    "ess_bulk_min",
    "ess_tail_min",
    "rhat_max",
    "divergences",
    "ess_per_s",
    "ess_per_grad",
]


def _mixture(target: targets.Target, radius: float | None) -> dict:
    options = {
        "mode_means": np.asarray(target.means),
        "true_mode_weights": np.asarray(target.weights),
    }
    if radius is not None:
        options["init_strategy"] = init_to_uniform(radius=radius)
    return {"model": targets.as_numpyro_model(target), "args": (), "options": options}


def _forty_modes_accuracy(c: Comparison, name: str) -> dict:
    row = c.table.loc[name]
    return {
        "modes found (of 40)": row["modes_found"],
        "mode-weight TV (exact 0)": row["mode_weight_tv"],
    }


def _two_modes_accuracy(c: Comparison, name: str) -> dict:
    return {"heavy-mode share (exact 0.667)": c.mode_weights.loc[0, name]}


def _eight_schools_accuracy(c: Comparison, name: str) -> dict:
    params = c.parameters[name]
    return {
        f"{site} mean error in sds (exact 0)": (params.loc[site, "mean"] - ref["mean"])
        / ref["sd"]
        for site, ref in targets.EIGHT_SCHOOLS_REFERENCE.items()
    }


def _funnel_accuracy(c: Comparison, name: str) -> dict:
    x0 = c.positions(name)[:, 0]
    return {
        "sd of x0 (exact 3)": float(np.std(x0)),
        "P(x0 < -3) (exact 0.1587)": float(np.mean(x0 < -3)),
    }


def _against_nuts(c: Comparison, name: str) -> dict:
    if name == c.reference:
        return {}
    return {
        "max abs mean diff in NUTS sds": float(
            c.parameters[(name, "diff_sd")].abs().max()
        ),
        "sd ratio to NUTS, min": float(c.parameters[(name, "sd_ratio")].min()),
        "sd ratio to NUTS, max": float(c.parameters[(name, "sd_ratio")].max()),
    }


def linear_regression(x: np.ndarray, y: np.ndarray) -> None:
    """y ~ N(intercept + slope x, sigma^2) with a HalfNormal(5) noise scale."""
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 10.0))
    slope = numpyro.sample("slope", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.sample("y", dist.Normal(intercept + slope * x, sigma), obs=y)


def linear_regression_data(num_points: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """y = 1 + 2 x + N(0, 0.5^2) at num_points points of [-2, 2] (seed 0)."""
    x = np.linspace(-2.0, 2.0, num_points)
    return x, 1.0 + 2.0 * x + np.random.default_rng(0).normal(0.0, 0.5, num_points)


def benchmarks() -> dict[str, tuple[Callable[[], dict], Callable, list[str]]]:
    """name -> (inputs, accuracy metrics, figures written)."""
    return {
        "forty_modes": (
            lambda: _mixture(targets.forty_mode_mixture(), radius=40.0),
            _forty_modes_accuracy,
            ["density"],
        ),
        "two_unequal_modes_d8": (
            lambda: _mixture(targets.two_unequal_modes(8), radius=None),
            _two_modes_accuracy,
            [],
        ),
        "eight_schools": (
            lambda: {"model": targets.eight_schools_model, "args": (), "options": {}},
            _eight_schools_accuracy,
            ["forest"],
        ),
        "funnel_d10": (
            lambda: {
                "model": targets.as_numpyro_model(targets.funnel(10)),
                "args": (),
                "options": {},
            },
            _funnel_accuracy,
            ["pair"],
        ),
        "linear_regression": (
            lambda: {
                "model": linear_regression,
                "args": linear_regression_data(),
                "options": {},
            },
            _against_nuts,
            [],
        ),
        "breast_cancer_logistic": (
            lambda: {
                "model": targets.logistic_regression_model,
                "args": targets.breast_cancer_data(),
                "options": {},
            },
            _against_nuts,
            [],
        ),
    }


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style Markdown table; numbers to 4 significant digits."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def _figure(kind: str, c: Comparison, path: Path) -> Path:
    if kind == "density":
        return plots.plot_density(c, path)
    if kind == "forest":
        return plots.plot_forest(c, path)
    return plots.plot_pair(c, path, max_parameters=2)


def main(quick: bool = False, only: list[str] | None = None, seed: int = 0) -> Path:
    budget = (
        {"num_warmup": 100, "num_samples": 100, "num_particles": 256}
        if quick
        else {"num_warmup": 500, "num_samples": 500, "num_particles": 1024}
    )
    partial = quick or bool(only)
    results = (
        ROOT / "out" / "benchmarks" if partial else ROOT / "benchmarks" / "results"
    )
    img = ROOT / "out" / "benchmarks" if partial else ROOT / "docs" / "img"
    cost_rows, accuracy_rows, figures = [], [], []
    for name, (inputs, accuracy, kinds) in benchmarks().items():
        if only and name not in only:
            continue
        spec = inputs()
        print(f"== {name}", flush=True)
        c = compare(
            spec["model"],
            *spec["args"],
            seed=seed,
            progress=print,
            **budget,
            **spec["options"],
        )
        for sampler in c.idata:
            cost_rows.append(
                {"target": name, "sampler": sampler, **c.table.loc[sampler].to_dict()}
            )
            for metric, value in accuracy(c, sampler).items():
                accuracy_rows.append(
                    {
                        "target": name,
                        "sampler": sampler,
                        "metric": metric,
                        "value": value,
                    }
                )
        for kind in kinds:
            path = img / f"bench_{name}_{kind}.png"
            figures.append(_figure(kind, c, path))
    cost = pd.DataFrame(cost_rows)
    columns = ["target", "sampler", "chains", "warmup", "samples", *COST_COLUMNS]
    accuracy = pd.DataFrame(accuracy_rows)
    command = " ".join(
        ["python benchmarks/compare_nuts.py"]
        + (["--quick"] if quick else [])
        + [f"--only {name}" for name in only or []]
        + ([f"--seed {seed}"] if seed else [])
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"JAX {jax.default_backend()}, jax {jax.__version__}, commit {commit}"
    )
    text = "\n\n".join(
        [
            f"Measured by `{command}` on {time.strftime('%Y-%m-%d')} ({machine}).",
            "**Cost** (time in seconds, compilation apart; gradients include warmup)",
            _markdown(cost[columns]),
            "**Accuracy** against the known answers",
            _markdown(accuracy),
        ]
    )
    out = results / "compare_nuts.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    print("wrote", out, *figures)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small budget")
    parser.add_argument(
        "--only", action="append", choices=sorted(benchmarks()), help="one target"
    )
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    options = parser.parse_args()
    main(options.quick, options.only, options.seed)
