"""``numpyro-dilation``: NUTS and DilationKernel side by side, from the shell.

    numpyro-dilation demo                      # the built-in models
    numpyro-dilation compare my_model.py:model --data load_data

Each comparison prints its tables (see :mod:`numpyro_dilation.compare`) and
writes them as CSV, with the figures of :mod:`numpyro_dilation.plots` as PNG,
under ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "build_parser", "load_object", "DEMOS"]

QUICK = {"num_warmup": 100, "num_samples": 100, "num_chains": 2, "num_particles": 256}
DEFAULTS = {
    "num_warmup": 500,
    "num_samples": 500,
    "num_chains": 4,
    "num_particles": 1024,
}


def _forty_modes() -> tuple[Callable, tuple, dict[str, Any]]:
    """The 2-D mixture of 40 Gaussians (FAB), means in [-40, 40]^2; both
    samplers start uniformly in the same box."""
    from numpyro.infer.initialization import init_to_uniform

    from numpyro_dilation.validation import targets

    target = targets.forty_mode_mixture()
    options = {
        "init_strategy": init_to_uniform(radius=40.0),
        "mode_means": np.asarray(target.means),
        "true_mode_weights": np.asarray(target.weights),
    }
    return targets.as_numpyro_model(target), (), options


def _eight_schools() -> tuple[Callable, tuple, dict[str, Any]]:
    """Non-centred eight schools (Rubin 1981), a standard hierarchical model."""
    from numpyro_dilation.validation import targets

    return targets.eight_schools_model, (), {}


DEMOS: dict[str, Callable[[], tuple[Callable, tuple, dict[str, Any]]]] = {
    "forty_modes": _forty_modes,
    "eight_schools": _eight_schools,
}
"""The models of ``numpyro-dilation demo``: name -> function returning the model,
its positional arguments and the extra options of ``compare``."""


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_object(spec: str, module: Any = None) -> Any:
    """The object named by ``MODULE:NAME``, where MODULE is a ``.py`` file or an
    importable module; a bare ``NAME`` is looked up in ``module``."""
    if ":" in spec:
        module_spec, name = spec.rsplit(":", 1)
        module = _load_module(module_spec)
    elif module is None:
        raise ValueError(f"{spec!r} must read MODULE:NAME, e.g. my_model.py:model.")
    else:
        name = spec
    if not hasattr(module, name):
        raise ValueError(f"{module.__name__} has no attribute {name!r}.")
    return getattr(module, name)


def _load_module(module_spec: str) -> Any:
    path = Path(module_spec)
    if path.suffix == ".py":
        if not path.is_file():
            raise ValueError(f"No such model file: {module_spec}.")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
        return module
    sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module_spec)
    except ModuleNotFoundError as err:
        raise ValueError(
            f"Cannot import {module_spec!r} ({err}); give a path to a .py file "
            "or a module importable from the current directory."
        ) from err
    finally:
        sys.path.pop(0)


def _model_inputs(value: Any) -> tuple[tuple, dict]:
    """``--data`` gives a tuple of positional or a dict of keyword arguments."""
    value = value() if callable(value) else value
    if isinstance(value, dict):
        return (), value
    if isinstance(value, tuple | list):
        return tuple(value), {}
    raise ValueError(
        "--data must name a tuple of positional arguments or a dict of keyword "
        f"arguments of the model (or a function returning one), got {type(value)}."
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_budget_options(parser: argparse.ArgumentParser) -> None:
    budget = parser.add_argument_group("budget (every run gets the same seed)")
    budget.add_argument(
        "--num-warmup",
        type=_positive_int,
        help=f"warmup iterations of each sampler (default {DEFAULTS['num_warmup']})",
    )
    budget.add_argument(
        "--num-samples",
        type=_positive_int,
        help=f"draws per chain after warmup (default {DEFAULTS['num_samples']})",
    )
    budget.add_argument(
        "--num-chains",
        type=_positive_int,
        help=f"NUTS chains (default {DEFAULTS['num_chains']})",
    )
    budget.add_argument(
        "--num-particles",
        type=_positive_int,
        help="DilationKernel particles, one chain each (default "
        f"{DEFAULTS['num_particles']})",
    )
    budget.add_argument(
        "--quick",
        action="store_true",
        help="a small budget for a first look or CI: "
        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())
        + " (explicit options win)",
    )
    budget.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        help="folder for the CSV tables and PNG figures (default ./out)",
    )
    output.add_argument(
        "--no-figures", action="store_true", help="write the tables only"
    )
    output.add_argument(
        "--compile-cache",
        type=Path,
        metavar="DIR",
        help="JAX's persistent compilation cache, so that a run repeated in a "
        "new process skips compilation (default $NUMPYRO_DILATION_CACHE_DIR, "
        "else $XDG_CACHE_HOME/numpyro-dilation/xla; "
        "numpyro_dilation.compile_cache)",
    )
    output.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not turn the cache on (JAX's own jax_compilation_cache_dir "
        "setting then applies; unset, everything compiles in this process)",
    )
    output.add_argument(
        "--progress-bar",
        action="store_true",
        help="show NumPyro's per-iteration progress bars; they slow the runs, "
        "so the timings too (a line per phase is always printed on stderr)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``numpyro-dilation`` and its commands ``demo`` and ``compare``."""
    parser = argparse.ArgumentParser(
        prog="numpyro-dilation",
        description="Run NUTS and DilationKernel side by side on the same model, "
        "data and seed; print the comparison tables (time with compilation "
        "apart, gradient evaluations, ESS, R-hat, divergences, posterior "
        "means and sds, mode weights) and write them with PNG figures.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="compare on the built-in models",
        description="Compare NUTS and DilationKernel on the built-in models: "
        "forty_modes, a 2-D mixture of 40 Gaussians with means in [-40, 40]^2 "
        "(both samplers start uniformly in that box), and eight_schools, the "
        "non-centred hierarchical model of Rubin (1981).",
    )
    demo.add_argument(
        "--model",
        choices=sorted(DEMOS),
        action="append",
        help="run only this built-in model (repeatable; default: all)",
    )
    _add_budget_options(demo)
    compare = commands.add_parser(
        "compare",
        help="compare on your own model",
        description="Compare NUTS and DilationKernel on a NumPyro model defined "
        "in a Python file or module.",
    )
    compare.add_argument(
        "target",
        metavar="MODULE:MODEL",
        help="the model function, e.g. my_model.py:model or my_package.models:model",
    )
    compare.add_argument(
        "--data",
        metavar="NAME",
        help="the model's inputs: NAME (in MODULE) or MODULE:NAME, a tuple of "
        "positional arguments, a dict of keyword arguments, or a function of no "
        "argument returning one (default: the model takes no argument)",
    )
    compare.add_argument(
        "--modes",
        metavar="NAME",
        help="mode centres of a multimodal posterior, an array (K, d) over the "
        "flattened latent sites (or a function returning it): adds the mode "
        "weights each sampler found",
    )
    compare.add_argument(
        "--mode-weights",
        metavar="NAME",
        help="the true weights (K,) of those modes: adds their total variation",
    )
    compare.add_argument(
        "--init-radius",
        type=float,
        help="start both samplers uniformly in (-R, R) on every unconstrained "
        "coordinate (default: NumPyro's init_to_uniform, R = 2)",
    )
    _add_budget_options(compare)
    return parser


def _budget(options: argparse.Namespace) -> dict[str, int]:
    base = QUICK if options.quick else DEFAULTS
    return {k: getattr(options, k) or base[k] for k in DEFAULTS}


def _value(spec: str | None, module: Any) -> Any:
    if spec is None:
        return None
    value = load_object(spec, module)
    return np.asarray(value() if callable(value) else value)


def _run(
    name: str,
    model: Callable,
    args: tuple,
    options: dict[str, Any],
    cli: argparse.Namespace,
) -> None:
    from numpyro_dilation.compare import compare

    _log(f"{name}: comparing NUTS and DilationKernel")
    comparison = compare(
        model,
        *args,
        seed=cli.seed,
        progress=_log,
        progress_bar=cli.progress_bar,
        **_budget(cli),
        **options,
    )
    out = cli.out / name
    written = comparison.save_tables(out)
    if not cli.no_figures:
        from numpyro_dilation.plots import write_figures

        _log(f"{name}: drawing figures")
        written += write_figures(comparison, out)
    print(f"\n=== {name} ===\n")
    print(comparison.to_string())
    print("\nwritten: " + " ".join(str(p) for p in written), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``numpyro-dilation``; returns the exit status."""
    parser = build_parser()
    cli = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    if not cli.no_compile_cache:
        from numpyro_dilation import compile_cache

        compile_cache.enable(cli.compile_cache)
    start = time.perf_counter()
    if cli.command == "demo":
        for name in cli.model or list(DEMOS):
            model, args, options = DEMOS[name]()
            _run(name, model, args, options, cli)
    else:
        try:
            name, model, args, options = _user_model(cli)
        except ValueError as err:
            parser.exit(2, f"numpyro-dilation compare: error: {err}\n")
        _run(name, model, args, options, cli)
    _log(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def _user_model(cli: argparse.Namespace) -> tuple[str, Callable, tuple, dict]:
    """The model, its positional inputs and compare's options from the command."""
    if ":" not in cli.target:
        raise ValueError(
            f"{cli.target!r} must read MODULE:MODEL, e.g. my_model.py:model."
        )
    module_spec, model_name = cli.target.rsplit(":", 1)
    module = _load_module(module_spec)
    model = load_object(model_name, module)
    if not callable(model):
        raise ValueError(f"{cli.target} is not a function (a NumPyro model).")
    args, kwargs = (
        ((), {}) if cli.data is None else _model_inputs(load_object(cli.data, module))
    )
    options = {
        "mode_means": _value(cli.modes, module),
        "true_mode_weights": _value(cli.mode_weights, module),
        **kwargs,
    }
    if cli.init_radius is not None:
        from numpyro.infer.initialization import init_to_uniform

        options["init_strategy"] = init_to_uniform(radius=cli.init_radius)
    return Path(module_spec).stem.split(".")[-1], model, args, options


if __name__ == "__main__":
    sys.exit(main())
