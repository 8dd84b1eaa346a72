"""The GPU benchmark as one prepared script, for one device call (~8 minutes).

    PYTHONPATH=$PWD python benchmarks/gpu.py --out $OUT          # one H100
    PYTHONPATH=$PWD python benchmarks/gpu.py --out /tmp/g --check  # small, on CPU

Steps, in order of importance; a step is skipped once ``--budget`` seconds
have passed, and the files are rewritten after every step, so a cut-off run
still returns what it measured:

1. the logistic regression (N=20000, D=50): NUTS (4 chains, 500 + 1000
   iterations, as in docs/design.md section 6), DilationKernel and the raw-JAX
   ceiling (8192 particles, 400 + 200 iterations), 3 repeats (benchmarks/run.py);
2. eight schools, the funnel, the 40-mode mixture (1000 samples);
3. memory: 8192 particles x 1000 iterations x d=100, all draws kept and
   thinning=10 (benchmarks/memory.py).

Writes ``gpu.json`` (every cell), ``gpu.md`` (the tables) and ``memory.json``
into ``--out``. Needs jax with CUDA and numpyro (ESS by
numpyro.diagnostics.effective_sample_size); not arviz.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import memory  # noqa: E402
import run  # noqa: E402

TARGET_ORDER = ("logistic", "eight_schools", "funnel", "forty_mode")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--check", action="store_true", help="small sizes, CPU")
    parser.add_argument("--budget", type=float, default=390.0, help="seconds")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    device = ["--device", "cpu", "--size", "small"] if args.check else []
    device = device or ["--device", "gpu"]
    repeats = ["--repeats", "1" if args.check else "3"]
    cells: list[dict] = []
    for target in TARGET_ORDER:
        if time.perf_counter() - start > args.budget:
            print(f"skipped {target}: budget spent", flush=True)
            continue
        part = out / f"part_{target}.json"
        run.main([*device, *repeats, "--targets", target, "--json", str(part)])
        cells += json.loads(part.read_text())
        part.unlink()
        (out / "gpu.json").write_text(json.dumps(cells, indent=1))
        (out / "gpu.md").write_text(run.table(cells) + "\n")
    if time.perf_counter() - start > args.budget + 60:
        print("skipped memory: budget spent", flush=True)
        return
    size = ["--particles", "512", "--samples", "50", "--dim", "20", "--warmup", "100"]
    memory.main([*(size if args.check else []), "--json", str(out / "memory.json")])
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
