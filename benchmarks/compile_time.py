"""Time to a first answer on a demo model (eight schools by default):
compilation and run of ``mcmc.run``, DilationKernel (1024 particles, 500 +
200) against NUTS (4 chains, 500 + 500) in the same process, as a ratio.

    python benchmarks/compile_time.py [--model forty_modes] [--repeats 3]
        [--breakdown] [--kernels [--sources]] [--cache] [--no-mode-fit]
    python benchmarks/compile_time.py --rerun [--model forty_modes]

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
kernel is logged, and it says so. ``--sources`` also dumps XLA's optimised
programs (``--xla_dump_to``) and names, for the largest programs, the Python
functions their kernels come from: the innermost frame JAX recorded for each
kernel's root operation (its fused computation's root), by file and function,
each compilation read in its own dump (a program compiled twice has two).
``--rerun`` runs each sampler's ``MCMC`` three times in one fresh process
(seeds 0, 1, 2: what a notebook that runs its cell again does), without and
with the persistent cache in an empty folder, and prints each run's
compilation and wall seconds (nothing else: it returns after).
``--no-mode-fit`` builds every DilationKernel with ``jump_prob=0.0,
rebalance=False`` (no mode fit, no jumps, no rebalancing: what a model known
to have one mode needs), NUTS as before.
``--cache`` adds the persistent compilation cache
(``numpyro_dilation.compile_cache``): each sampler runs in two fresh processes
sharing an empty cache folder, and the second process's times are printed
against the first's.
"""

import argparse
import collections
import glob
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
compiled_programs: collections.Counter = collections.Counter()
"""XLA's compile seconds by program name, from ``record_compile``."""
NO_MODE_FIT = {"jump_prob": 0.0, "rebalance": False}
dilation_options: dict = {}
"""Every DilationKernel's options here (``--no-mode-fit``: ``NO_MODE_FIT``),
passed on to the fresh processes."""


def record_compile(event: str, seconds: float, **kwargs) -> None:
    """A ``jax.monitoring`` duration listener: adds each XLA compilation to
    ``compiled_programs``."""
    if event == BACKEND_COMPILE:
        compiled_programs[kwargs.get("fun_name", "?")] += seconds


def _kernel(name: str, model_name: str):
    model, _, options = DEMOS[model_name]()
    init = {k: v for k, v in options.items() if k == "init_strategy"}
    if name == "NUTS":
        return NUTS(model, **init)
    return DilationKernel(model, **init, **dilation_options)


def _mcmc(name: str, model_name: str) -> MCMC:
    """``MCMC`` over a fresh kernel ``name`` with its budget."""
    num_chains, num_warmup, num_samples = BUDGETS[name]
    return MCMC(
        _kernel(name, model_name),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )


def timed_run(mcmc: MCMC, seed: int = 0) -> tuple[float, float]:
    """(compile seconds, seconds after compilation) of one ``mcmc.run``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with CompileTimer() as timer:
            start = time.perf_counter()
            mcmc.run(jax.random.PRNGKey(seed))
            jax.block_until_ready(mcmc.get_samples())
            wall = time.perf_counter() - start
    return timer.seconds, wall - timer.seconds


def one_run(name: str, model_name: str) -> tuple[float, float, dict]:
    """(compile seconds, seconds after compilation, XLA seconds per program) of
    one ``mcmc.run`` with fresh kernels."""
    compiled_programs.clear()
    compile_s, run_s = timed_run(_mcmc(name, model_name))
    return compile_s, run_s, dict(compiled_programs)


def _breakdown(name: str, programs: dict, top: int = 5) -> None:
    ranked = sorted(programs.items(), key=lambda kv: -kv[1])
    total = sum(programs.values())
    print(f"{name}: XLA compilation {total:.1f} s over {len(programs)} programs")
    for fun_name, seconds in ranked[:top]:
        print(f"    {seconds:6.2f} s  {fun_name}")
    rest = ranked[top:]
    print(f"    {sum(s for _, s in rest):6.2f} s  {len(rest)} other programs")


def _in_fresh_process(
    name: str,
    model_name: str,
    cache_dir: str | None = None,
    env: dict | None = None,
    runs: int = 1,
) -> subprocess.CompletedProcess:
    command = [sys.executable, __file__, "--child", name, "--model", model_name]
    command += ["--child-runs", str(runs)]
    if cache_dir:
        command += ["--cache-dir", cache_dir]
    if dilation_options:
        command.append("--no-mode-fit")
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env)


def _times(name: str, model_name: str, cache_dir: str) -> tuple[float, float]:
    """(compile, run) seconds of one run in a fresh process using the cache."""
    out = _in_fresh_process(name, model_name, cache_dir).stdout
    return tuple(json.loads(out.splitlines()[-1])[0])


XLA_LOG = {
    "TF_CPP_MIN_LOG_LEVEL": "0",
    "TF_CPP_VMODULE": "hlo_pass_pipeline=1,fusion_compiler=1,ir_compiler=1",
}


def kernels(
    name: str, model_name: str, dump_dir: str | None = None
) -> tuple[dict[str, tuple[int, float]], list[tuple[str, list[str]]]]:
    """Per program of one run (fresh process): XLA's CPU kernels and their
    compile seconds (MLIR then LLVM), from XLA's log; and each compilation's
    program name and kernel names, in the log's order (a program compiled
    twice, such as a warmup loop before and after a mode fit, is two entries);
    with ``dump_dir``, XLA writes its optimised programs there."""
    env = {**os.environ, **XLA_LOG}
    if dump_dir:
        dump = f"--xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {dump}".strip()
    log = _in_fresh_process(name, model_name, env=env).stderr
    seconds = collections.Counter()
    compilations = [("?", [])]  # what XLA logs before naming a module
    for line in log.splitlines():
        started = re.search(r"Running HLO pass pipeline on module (\S+):", line)
        if started:
            program, names = compilations[-1]
            # Several pipelines run on one module before its kernels compile.
            if program != started.group(1) or names:
                compilations.append((started.group(1), []))
            continue
        done = re.search(r"Compiled (MLIR|LLVM) module: (\S+) time: ([\d.]+) ms", line)
        if done:
            program, names = compilations[-1]
            seconds[program] += float(done.group(3)) / 1e3
            if done.group(1) == "MLIR":
                # "<kernel>_kernel_module" or "__compute_module_<kernel>"
                kernel = done.group(2).removeprefix("__compute_module_")
                names.append(kernel.removesuffix("_kernel_module"))
    count = collections.Counter()
    for program, names in compilations:
        count[program] += len(names)
    return {p: (count[p], seconds[p]) for p in seconds}, compilations


def _source_tables(text: str) -> dict[int, str]:
    """jax >= 0.11's location tables in an HLO dump: stack frame id ->
    "file:function" of the frame's own location (the innermost one)."""

    def table(title: str) -> dict[int, str]:
        found = re.search(title + r"\n((?:\d+ .*\n)+)", text)
        rows = found.group(1).splitlines() if found else []
        return dict((int(i), rest) for i, rest in (r.split(" ", 1) for r in rows))

    def ids(row: str) -> dict[str, int]:
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", row)}

    files, functions = table("FileNames"), table("FunctionNames")
    places = {}
    for i, row in table("FileLocations").items():
        where = ids(row)
        file = os.path.basename(files[where["file_name_id"]].strip('"'))
        function = functions[where["function_name_id"]].strip('"')
        places[i] = f"{file}:{function}"
    frames = table("StackFrames")
    return {i: places[ids(row)["file_location_id"]] for i, row in frames.items()}


def _kernel_source(text: str, bodies: dict, frames: dict, kernel: str) -> str | None:
    """The place of ``kernel``'s root operation, "file:function" (jax >= 0.11's
    location tables ``frames``) or "file:line" (jax 0.10's
    ``source_file``/``source_line``), in one optimised program ``text`` (``bodies``: its
    computations by name); None where the kernel is not in it."""
    line = re.search(rf"^\s*(?:ROOT )?%{re.escape(kernel)} = .*$", text, re.M)
    if not line:
        return None
    called = re.search(r"calls=%([^,\s]+)", line.group(0))
    body = bodies.get(called.group(1), "") if called else ""
    roots = [r for r in body.splitlines() if "ROOT" in r]
    where = " ".join(roots[:1] + [line.group(0), body])
    frame = re.search(r"stack_frame_id=(\d+)", where)
    old = re.search(r'source_file="([^"]+)" source_line=(\d+)', where)
    if old:
        return f"{os.path.basename(old.group(1))}:{old.group(2)}"
    if frame and int(frame.group(1)) in frames:
        return frames[int(frame.group(1))]
    return "(no location)"


def kernel_sources(dump_dir: str, compilations: list[tuple[str, list[str]]]) -> dict:
    """Per program: a Counter of the Python places (``_kernel_source``) of its
    kernels, over all its compilations. Each compilation is read in its own
    optimised dump (its own kernel names and location tables): of that
    program's dumps not yet used, the one holding most of its kernels (the
    first in XLA's module order on a tie); a kernel the log names but the dump
    does not hold counts as "(not in the dump)"."""
    wanted = {program for program, _ in compilations}
    dumps = collections.defaultdict(list)  # program -> its parsed dumps, in order
    for path in sorted(glob.glob(f"{dump_dir}/*.cpu_after_optimizations.txt")):
        program = os.path.basename(path).split(".", 1)[1].rsplit(".cpu_after", 1)[0]
        if program in wanted:
            with open(path) as dumped:
                text = dumped.read()
            bodies = dict(re.findall(r"^%(\S+) \(.*?\{\n(.*?)\n\}", text, re.M | re.S))
            dumps[program].append((text, bodies, _source_tables(text)))
    sources = collections.defaultdict(collections.Counter)
    for program, names in compilations:
        candidates = [
            [_kernel_source(*dump, kernel) for kernel in names]
            for dump in dumps[program]
        ]
        if not candidates:
            sources[program]["(not in the dump)"] += len(names)
            continue
        found = [sum(p is not None for p in places) for places in candidates]
        best = found.index(max(found))  # the first in module order on a tie
        del dumps[program][best]
        sources[program].update(p or "(not in the dump)" for p in candidates[best])
    return sources


def _print_kernels(
    name: str,
    table: dict[str, tuple[int, float]],
    compilations: list[tuple[str, list[str]]],
    top: int = 6,
):
    """The programs with the most kernels; a program compiled more than once
    with its kernels per compilation, in order (``67 + 225``)."""
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
        each = [len(names) for p, names in compilations if p == program and names]
        apart = f" ({' + '.join(map(str, each))})" if len(each) > 1 else ""
        print(f"    {n:5d} kernels {seconds:6.2f} s  {program}{apart}")


def _print_sources(table: dict, sources: dict, programs: int = 4, top: int = 8):
    for program, _ in sorted(table.items(), key=lambda kv: -kv[1][0])[:programs]:
        counter = sources.get(program, collections.Counter())
        print(f"    {program}, by source:")
        for where, n in counter.most_common(top):
            print(f"        {n:4d} {where}")
        rest = counter.most_common()[top:]
        print(f"        {sum(n for _, n in rest):4d} elsewhere ({len(rest)} places)")


def _rerun(model_name: str, runs: int = 3) -> None:
    """Each sampler's ``MCMC`` run ``runs`` times in one fresh process (seeds
    0, 1, ...), without and with the persistent cache (an empty folder)."""
    for name in BUDGETS:
        for cached in (False, True):
            with tempfile.TemporaryDirectory() as cache_dir:
                out = _in_fresh_process(
                    name, model_name, cache_dir if cached else None, runs=runs
                ).stdout
            times = json.loads(out.splitlines()[-1])
            compiles = ", ".join(f"{c:.1f}" for c, _ in times)
            walls = ", ".join(f"{c + r:.1f}" for c, r in times)
            label = "with the cache" if cached else "no cache"
            print(
                f"{name:>15}, one MCMC run {runs} times, {label}: compile "
                f"{compiles} s; compile + run {walls} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEMOS), default="eight_schools")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--kernels", action="store_true")
    parser.add_argument("--sources", action="store_true")
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--no-mode-fit", action="store_true")
    parser.add_argument("--child", choices=sorted(BUDGETS), help=argparse.SUPPRESS)
    parser.add_argument("--child-runs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_mode_fit:
        dilation_options.update(NO_MODE_FIT)
    if args.child:
        if args.cache_dir:
            compile_cache.enable(args.cache_dir)
        # One MCMC, run --child-runs times (seeds 0, 1, ...): (compile, run) each.
        mcmc = _mcmc(args.child, args.model)
        print(json.dumps([timed_run(mcmc, seed) for seed in range(args.child_runs)]))
        return
    if args.rerun:
        _rerun(args.model)
        return
    monitoring.register_event_duration_secs_listener(record_compile)
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
            with tempfile.TemporaryDirectory() as dump_dir:
                dump = dump_dir if args.sources else None
                table, compilations = kernels(name, args.model, dump)
                _print_kernels(name, table, compilations)
                if args.sources:
                    _print_sources(table, kernel_sources(dump_dir, compilations))
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
