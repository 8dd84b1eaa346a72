"""What NumPyro's initialisation of one point per chain costs to compile, and
what a batched search would: the same initial points two ways, each in a fresh
process.

    python benchmarks/initialization.py [--model forty_modes] [--chains 1024]

- ``map``: ``numpyro.infer.util.initialize_model`` with one key per chain, as
  ``DilationKernel.init`` (and NUTS with ``chain_method="vectorized"``) calls
  it: a ``lax.map`` over the chains of a ``while_loop`` that draws a point
  from the init strategy and evaluates the model's potential and gradient
  until they are finite (the ``jit(scan)`` program), plus the eager programs
  around it (the prototype trace of the model, the keys).
- ``vmap``: one jitted ``jax.vmap`` over the keys of
  ``find_valid_initial_params`` (its ``while_loop`` batched), with the same
  prototype parameters, which ``initialize_model`` is traced for under
  ``jax.eval_shape`` (nothing compiled).

Prints each way's wall time, XLA's compile seconds by program (JAX's
``backend_compile_duration`` events), and whether the initial points are
equal to the last bit.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from compile_time import (  # the script's folder is on sys.path
    compiled_programs,
    record_compile,
)
from jax import monitoring
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import find_valid_initial_params, initialize_model

from numpyro_dilation.cli import DEMOS


def initial_points(model_name: str, chains: int, way: str) -> dict:
    """The initial points of ``chains`` chains (``way`` "map" or "vmap"), with
    XLA's compile seconds by program and the wall time."""
    model, _, options = DEMOS[model_name]()
    strategy = options.get("init_strategy", init_to_uniform)
    keys = jax.block_until_ready(jax.random.split(jax.random.PRNGKey(0), chains))
    compiled_programs.clear()
    monitoring.register_event_duration_secs_listener(record_compile)
    start = time.perf_counter()
    if way == "map":
        points = initialize_model(
            keys, model, init_strategy=strategy, dynamic_args=True
        ).param_info.z
    else:
        shapes = jax.eval_shape(
            lambda key: (
                initialize_model(
                    key, model, init_strategy=strategy, dynamic_args=True
                ).param_info.z
            ),
            keys[0],
        )
        prototype = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)

        def one(key):
            return find_valid_initial_params(
                key, model, init_strategy=strategy, prototype_params=prototype
            )[0][0]

        points = jax.jit(jax.vmap(one))(keys)
    points = jax.tree.map(np.asarray, points)
    return {
        "wall": time.perf_counter() - start,
        "compiled": dict(compiled_programs.most_common()),
        "points": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="eight_schools", choices=sorted(DEMOS))
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--way", choices=["map", "vmap"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:  # one way, in this (fresh) process
        result = initial_points(args.model, args.chains, args.way)
        np.savez(args.out, **result.pop("points"))
        print(json.dumps(result))
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for way in ("map", "vmap"):
            out = str(Path(folder, f"{way}.npz"))
            command = [sys.executable, __file__, "--model", args.model]
            command += ["--chains", str(args.chains), "--way", way, "--out", out]
            run = subprocess.run(command, capture_output=True, text=True, check=True)
            results[way] = json.loads(run.stdout.splitlines()[-1])
            results[way]["points"] = dict(np.load(out))
    for way, result in results.items():
        programs = result["compiled"]
        top = ", ".join(f"{name} {s:.2f} s" for name, s in list(programs.items())[:4])
        print(
            f"{way:>4}: wall {result['wall']:.2f} s, XLA {sum(programs.values()):.2f}"
            f" s over {len(programs)} programs ({top})"
        )
    a, b = results["map"]["points"], results["vmap"]["points"]
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    print(f"initial points equal to the last bit: {same}")


if __name__ == "__main__":
    main()
