"""Where the test suite's time goes: per test, its wall time and JAX's
compilation (XLA backend compilation, tracing, lowering to MLIR, persistent
cache hits and misses), summed over the xdist workers.

    python benchmarks/suite_profile.py [--top 25] [-- PYTEST_ARGS ...]

Runs the README's test command (``python -m pytest``, with ``CI=true``) with
this file loaded as a pytest plugin (``-p suite_profile``, found through
``PYTHONPATH``). Each worker appends one JSON line per test to a temporary
folder (``jax.monitoring``'s duration and event listeners, reset at every
test); then the totals, the files, XLA's compile seconds by program name
(the function JAX compiled, e.g. ``jit(dilation_warmup)``; the small ones,
eager operations and lone random draws, summed on one line) and the slowest
tests are printed. Tests that compile in subprocesses (sharding,
distributed, the CLI's) count as wall time only. The suite's wall time is
pytest's last line, printed above.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ENVIRONMENT_VARIABLE = "SUITE_PROFILE_DIR"
PHASES = {
    "backend_compile_duration": "compile",
    "jaxpr_trace_duration": "trace",
    "jaxpr_to_mlir_module_duration": "lower",
}
EVENTS = {"cache_hits": "hits", "cache_misses": "misses"}
# A compiled program this small is an eager operation or a lone random draw.
SMALL_PROGRAM_S = 0.05
_current: collections.Counter = collections.Counter()
_programs: dict[str, list[float]] = {}


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    name = PHASES.get(event.rsplit("/", 1)[-1])
    if name:
        _current[name] += seconds
    if name == "compile":
        tally = _programs.setdefault(kwargs.get("fun_name", "?"), [0.0, 0])
        tally[0] += seconds
        tally[1] += 1


def _on_event(event: str, **kwargs) -> None:
    name = EVENTS.get(event.rsplit("/", 1)[-1])
    if name and "compilation_cache" in event:
        _current[name] += 1


def pytest_configure(config) -> None:
    if os.environ.get(ENVIRONMENT_VARIABLE):
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(_on_duration)
        monitoring.register_event_listener(_on_event)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    folder = os.environ.get(ENVIRONMENT_VARIABLE)
    _current.clear()
    _programs.clear()
    start = time.perf_counter()
    yield
    if folder:
        record = {"test": item.nodeid, "wall": time.perf_counter() - start}
        record.update(_current)
        record["programs"] = _programs
        with open(Path(folder) / f"{os.getpid()}.jsonl", "a") as out:
            out.write(json.dumps(record) + "\n")


def summarize(records: list[dict], top: int) -> str:
    """The totals, the files and the ``top`` slowest tests, as text."""
    columns = ["wall", *PHASES.values(), *EVENTS.values()]
    totals = {c: sum(r.get(c, 0) for r in records) for c in columns}
    lines = [
        f"{len(records)} tests, worker seconds: "
        + ", ".join(f"{c} {totals[c]:.0f}" for c in columns[:4])
        + f"; cache hits {totals['hits']:.0f}, misses {totals['misses']:.0f}"
    ]
    by_file: dict[str, collections.Counter] = collections.defaultdict(
        collections.Counter
    )
    for record in records:
        counter = by_file[record["test"].split("::")[0]]
        for c in columns[:2]:
            counter[c] += record.get(c, 0)
    lines.append("\nseconds  compile  file")
    for path, counter in sorted(by_file.items(), key=lambda kv: -kv[1]["wall"]):
        lines.append(f"{counter['wall']:7.1f}  {counter['compile']:7.1f}  {path}")
    lines.append("\n" + _programs_table(records, top))
    lines.append(f"\nseconds  compile  trace  lower  misses  test ({top} slowest)")
    for r in sorted(records, key=lambda r: -r["wall"])[:top]:
        lines.append(
            f"{r['wall']:7.1f}  {r.get('compile', 0):7.1f}  {r.get('trace', 0):5.1f}"
            f"  {r.get('lower', 0):5.1f}  {r.get('misses', 0):6.0f}  {r['test']}"
        )
    return "\n".join(lines)


def _programs_table(records: list[dict], top: int) -> str:
    """XLA's compile seconds by program name over the suite, the ``top``
    costliest first, the small ones summed on one line."""
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for record in records:
        for name, (seconds, count) in record.get("programs", {}).items():
            totals[name][0] += seconds
            totals[name][1] += count
    small = [t for t in totals.values() if t[0] < SMALL_PROGRAM_S * t[1]]
    large = [(n, t) for n, t in totals.items() if t[0] >= SMALL_PROGRAM_S * t[1]]
    lines = ["compile  programs  each  program (XLA compilations by name)"]
    for name, (seconds, count) in sorted(large, key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{seconds:7.1f}  {count:8d}  {seconds / count:4.2f}  {name}")
    lines.append(
        f"{sum(t[0] for t in small):7.1f}  {sum(t[1] for t in small):8d}"
        f"        programs under {SMALL_PROGRAM_S} s each"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=25, help="slowest tests listed")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="suite-profile-") as folder:
        path = os.pathsep.join(
            p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
        )
        env = {**os.environ, "CI": "true", ENVIRONMENT_VARIABLE: folder}
        env["PYTHONPATH"] = path
        command = [sys.executable, "-m", "pytest", "-q", "-p", "suite_profile"]
        code = subprocess.run(command + args.pytest_args, env=env).returncode
        records = [
            json.loads(line)
            for file in sorted(Path(folder).glob("*.jsonl"))
            for line in file.read_text().splitlines()
        ]
    print(summarize(records, args.top))
    sys.exit(code)


if __name__ == "__main__":
    main()
