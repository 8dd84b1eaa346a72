"""Time to a first answer on a demo model (eight schools by default):
compilation and run of ``mcmc.run``, DilationKernel (1024 particles, 500 +
200) against NUTS (4 chains, 500 + 500) in the same process, as a ratio.

    python benchmarks/compile_time.py [--model forty_modes] [--repeats 3]
        [--breakdown] [--kernels] [--cache]

``--model``: one of ``numpyro_dilation.cli.DEMOS`` (``eight_schools``, unimodal;
``forty_modes``, the 40-mode mixture, both samplers started uniformly in its
box), with the demo's initialisation.

Each repeat builds fresh kernels (so everything compiles again) and times one
``mcmc.run`` inside ``numpyro_dilation.compile_timer.CompileTimer``; the
medians are printed with the ratio DilationKernel / NUTS.

``--breakdown`` adds, for the first repeat of each sampler, XLA's compile
seconds per compiled program (JAX's ``backend_compile_duration`` events by
function name; the rest of the compile time is tracing and lowering).
``--kernels`` adds, per compiled program of one run of each sampler in a
fresh process, the number of kernels XLA's CPU backend generated (its fused
computations, each compiled on its own through MLIR and LLVM) and the seconds
that took, read from XLA's own log (``TF_CPP_VMODULE``): what its MLIR fusion
emitters log, the default on jaxlib 0.10 and the only ones on 0.11+; with
jaxlib 0.10's older emitters (``--xla_cpu_use_fusion_emitters=false``) no
kernel is logged, and it says so.
``--cache`` adds the persistent compilation cache
(``numpyro_dilation.compile_cache``): each sampler runs in two fresh processes
sharing an empty cache folder, and the second process's times are printed
against the first's.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

import jax
import numpy as np
from jax import monitoring
from numpyro.infer import MCMC, NUTS

from numpyro_dilation import DilationKernel, compile_cache
from numpyro_dilation.cli import DEMOS
from numpyro_dilation.compile_timer import CompileTimer

BUDGETS = {"NUTS": (4, 500, 500), "DilationKernel": (1024, 500, 200)}
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_programs: collections.Counter = collections.Counter()


def _record(event: str, seconds: float, **kwargs) -> None:
    if event == BACKEND_COMPILE:
        _programs[kwargs.get("fun_name", "?")] += seconds


def _kernel(name: str, model_name: str):
    model, _, options = DEMOS[model_name]()
    init = {k: v for k, v in options.items() if k == "init_strategy"}
    return NUTS(model, **init) if name == "NUTS" else DilationKernel(model, **init)


def one_run(name: str, model_name: str) -> tuple[float, float, dict]:
    """(compile seconds, seconds after compilation, XLA seconds per program) of
    one ``mcmc.run`` with fresh kernels."""
    num_chains, num_warmup, num_samples = BUDGETS[name]
    mcmc = MCMC(
        _kernel(name, model_name),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    _programs.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with CompileTimer() as timer:
            start = time.perf_counter()
            mcmc.run(jax.random.PRNGKey(0))
            jax.block_until_ready(mcmc.get_samples())
            wall = time.perf_counter() - start
    return timer.seconds, wall - timer.seconds, dict(_programs)


def _breakdown(name: str, programs: dict, top: int = 5) -> None:
    ranked = sorted(programs.items(), key=lambda kv: -kv[1])
    total = sum(programs.values())
    print(f"{name}: XLA compilation {total:.1f} s over {len(programs)} programs")
    for fun_name, seconds in ranked[:top]:
        print(f"    {seconds:6.2f} s  {fun_name}")
    rest = ranked[top:]
    print(f"    {sum(s for _, s in rest):6.2f} s  {len(rest)} other programs")


def _in_fresh_process(
    name: str, model_name: str, cache_dir: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    command = [sys.executable, __file__, "--child", name, "--model", model_name]
    if cache_dir:
        command += ["--cache-dir", cache_dir]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env)


def _times(name: str, model_name: str, cache_dir: str) -> tuple[float, float]:
    """(compile, run) seconds of one run in a fresh process using the cache."""
    out = _in_fresh_process(name, model_name, cache_dir).stdout
    return tuple(json.loads(out.splitlines()[-1]))


XLA_LOG = {
    "TF_CPP_MIN_LOG_LEVEL": "0",
    "TF_CPP_VMODULE": "hlo_pass_pipeline=1,fusion_compiler=1,ir_compiler=1",
}


def kernels(name: str, model_name: str) -> dict[str, tuple[int, float]]:
    """Per program of one run (fresh process): XLA's CPU kernels and their
    compile seconds (MLIR then LLVM), from XLA's log."""
    log = _in_fresh_process(name, model_name, env={**os.environ, **XLA_LOG}).stderr
    count, seconds = collections.Counter(), collections.Counter()
    program = "?"
    for line in log.splitlines():
        started = re.search(r"Running HLO pass pipeline on module (\S+):", line)
        if started:
            program = started.group(1)
            continue
        done = re.search(r"Compiled (MLIR|LLVM) module: .* time: ([\d.]+) ms", line)
        if done:
            count[program] += done.group(1) == "MLIR"
            seconds[program] += float(done.group(2)) / 1e3
    return {p: (count[p], seconds[p]) for p in count}


def _print_kernels(name: str, table: dict[str, tuple[int, float]], top: int = 6):
    ranked = sorted(table.items(), key=lambda kv: -kv[1][0])
    total = sum(n for n, _ in table.values())
    if total == 0:
        print(
            f"{name}: XLA logged no kernel (not its MLIR fusion emitters: "
            "XLA_FLAGS=--xla_cpu_use_fusion_emitters=false?)"
        )
        return
    print(f"{name}: {total} XLA kernels over {len(table)} programs")
    for program, (n, seconds) in ranked[:top]:
        print(f"    {n:5d} kernels {seconds:6.2f} s  {program}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEMOS), default="eight_schools")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--kernels", action="store_true")
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--child", choices=sorted(BUDGETS), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.cache_dir:
            compile_cache.enable(args.cache_dir)
        print(json.dumps(one_run(args.child, args.model)[:2]))
        return
    monitoring.register_event_duration_secs_listener(_record)
    runs = {name: [] for name in BUDGETS}
    first_programs = {}
    for _ in range(args.repeats):
        for name in BUDGETS:
            compile_s, run_s, programs = one_run(name, args.model)
            runs[name].append((compile_s, run_s))
            first_programs.setdefault(name, programs)
    medians = {name: np.median(np.asarray(r), axis=0) for name, r in runs.items()}
    for name, (compile_s, run_s) in medians.items():
        print(f"{name:>15}: compile {compile_s:6.1f} s, run {run_s:6.2f} s")
    ratio = medians["DilationKernel"] / medians["NUTS"]
    print(f"DilationKernel / NUTS: compile {ratio[0]:.2f}x, run {ratio[1]:.2f}x")
    if args.breakdown:
        for name, programs in first_programs.items():
            _breakdown(name, programs)
    if args.kernels:
        for name in BUDGETS:
            _print_kernels(name, kernels(name, args.model))
    if args.cache:
        for name in BUDGETS:
            with tempfile.TemporaryDirectory() as cache_dir:
                first = _times(name, args.model, cache_dir)
                second = _times(name, args.model, cache_dir)
            print(
                f"{name:>15}, fresh processes sharing a cache: compile "
                f"{first[0]:.1f} s then {second[0]:.1f} s "
                f"({second[0] / first[0]:.2f}x), run {first[1]:.2f} s then "
                f"{second[1]:.2f} s"
            )


if __name__ == "__main__":
    main()
