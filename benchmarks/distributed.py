"""One population across processes: what is communicated, and how it scales.

    python benchmarks/distributed.py communication [--particles 512,2048,8192]
        [--dims 4,32] [--hmc]
    python benchmarks/distributed.py scaling [--processes 1,2,4]
        [--particles-per-process 2048] [--dim 32] [--iterations 100]
        [--repeats 5] [--pin] [--hmc]
    python benchmarks/distributed.py collectives [--processes 2] [--pin]

``communication``: in one process with 4 forced CPU devices (the programs are
those of 4 processes with one device each: XLA partitions over devices, not
processes), the population is split over the devices (``core.sharding``) and
the compiled programs of one warmup iteration (``sampler.step_from_keys``)
and one sampling iteration (``sampler.sample_step``) are read for their collectives
(all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute), also
of a warmup iteration without mode fits and rebalancing (``rebalance=False,
jump_prob=0``). Printed per program, particle count and dimension: the number of
collectives and the bytes of their results, summed over every branch of the
program (an upper bound of one iteration's: a warmup iteration runs one branch,
and events such as a mode fit or a straggler's copy run in few), and the part
of those bytes in results with a particle axis (gathered, not reduced: the
events'). The rest does not grow with the particle count: population
statistics, reduced.

``scaling``: ``numpyro_dilation.distributed.launch`` starts P processes with
one CPU device each on this machine; the population (a d-dimensional Gaussian
with a dense precision matrix, so a gradient is a matrix-vector product) is
split over them, and each times compiled loops of ``--iterations`` iterations
of a 20 x ``--iterations`` warmup (half of it annealing) and of sampling. Each
loop runs twice untimed first: the first call compiles, and the first runs of
the collectives between processes are slow (hundreds of ms per iteration here,
while gloo sets up its connections); then ``--repeats`` times from the same
state (the same iterations), and the median time counts. Three windows:
annealing (iterations 2-3 x ``--iterations``: MALA moves along the path, one
reduction each, the mean acceptance), tuning (2-3 x ``--iterations`` past the
annealing: moves at l = 1 with the preconditioner's, the step size's and the
stragglers' reductions, and, with MALA, one mode fit, as a 500-iteration
warmup's tuning has one per 62 iterations) and sampling (no collective).
Printed: iterations per second, for the same total particles (strong scaling)
and for the same particles per process (weak scaling), against one process in
the same run. With ``--pin`` each process runs on one core of its own
(``sched_setaffinity``, process ``i`` on core ``i mod cores``): weak scaling
then measures what the processes cost each other, where unpinned processes also
share the cores that one process's threads used alone. With ``--hmc`` (both
subcommands) the moves at l = 1 are HMC's, and a tuning iteration also adapts
the trajectory length (ChEES and the length floor, their reductions); the
annealing and tuning windows then run in loops compiled for their phase
(``sampler.step_from_keys``'s ``phase``) with one mode's options (no mode fit,
jump or rebalancing), as the kernel compiles them where the fit that ends the
annealing finds one mode and the tuning moves with HMC (the default
``step="auto"``).

``collectives``: P processes (the last of ``--processes``) of one CPU device
each (with ``--pin`` one core each) time a compiled chain of 100 dependent
all-reduces of 1, 2, 4, 32 and 256 floats (sums over a population split
between them); printed: milliseconds per all-reduce, the latency that each of
a warmup iteration's reductions pays between processes. XLA's CPU thread pool
is set by the environment the processes inherit: ``XLA_FLAGS=
"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` runs
each process's programs on one thread (for both subcommands).
"""

import argparse
import functools
import os
import re
import sys
import time

_WORKER = "--worker"


def _gaussian(dim):
    import jax
    import jax.numpy as jnp

    q = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(1), (dim, dim)))[0]
    precision = q @ jnp.diag(jnp.logspace(-1, 1, dim)) @ q.T
    return jax.value_and_grad(lambda x: -0.5 * x @ precision @ x)


def _population(num_particles, dim, num_warmup, hmc):
    import jax

    from numpyro_dilation import core
    from numpyro_dilation.core.sharding import particle_sharding, shard_particles

    options = core.SamplerOptions(hmc=hmc)
    centers = jax.random.uniform(
        jax.random.PRNGKey(0), (num_particles, dim), minval=-2, maxval=2
    )
    fn = _gaussian(dim)
    state = core.init(centers, fn, core.build_calendar(num_warmup, options), options)
    sharding = particle_sharding(num_particles)
    if sharding is not None:
        state = shard_particles(state, sharding)
    return state, fn, options


_COLLECTIVE = re.compile(
    r"= (\(?[^=]*?\)?) (all-reduce|all-gather|reduce-scatter|all-to-all|"
    r"collective-permute)(-start)?\("
)
_SHAPE = re.compile(r"(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_BYTES = {"pred": 1, "bf16": 2}


def _collectives(hlo: str, num_particles: int) -> tuple[int, int, int]:
    """The collectives of an HLO module's text: their count, the bytes of
    their results, and the bytes of those results with a particle axis (what
    is gathered rather than reduced)."""
    count = total = gathered = 0
    for shapes, _, _ in _COLLECTIVE.findall(hlo):
        count += 1
        for dtype, dims in _SHAPE.findall(shapes):
            size = _BYTES[dtype] if dtype in _BYTES else int(dtype[1:]) // 8
            dims = [int(dim) for dim in filter(None, dims.split(","))]
            for dim in dims:
                size *= dim
            total += size
            gathered += size if num_particles in dims else 0
    return count, total, gathered


def communication(args):
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax

    from numpyro_dilation.core import sampler

    print(f"jax {jax.__version__}, {jax.device_count()} devices")
    print(
        "| program | particles | d | collectives | bytes (all branches) "
        "| of which particle-sized |"
    )
    print("|---|---|---|---|---|---|")
    for dim in args.dims:
        for n in args.particles:
            state, fn, options = _population(n, dim, 500, args.hmc)
            key = jax.random.PRNGKey(0)
            unimodal = options._replace(rebalance=False, jump_prob=0.0)
            for name, program, opts in (
                ("warmup iteration", sampler.step_from_keys, options),
                ("warmup iteration, no mode fits", sampler.step_from_keys, unimodal),
                ("sampling iteration", sampler.sample_step, options),
            ):
                kwargs = {"logdensity_and_grad_fn": fn, "options": opts}
                keys = sampler.iteration_keys(key)[1]
                hlo = (
                    jax.jit(functools.partial(program, **kwargs))
                    .lower(keys, state)
                    .compile()
                    .as_text()
                )
                count, size, gathered = _collectives(hlo, n)
                if args.dump:
                    label = name.replace(" ", "_").replace(",", "")
                    with open(f"{args.dump}_{label}_{n}_{dim}.txt", "w") as f:
                        f.write(hlo)
                print(f"| {name} | {n} | {dim} | {count} | {size:,} | {gathered:,} |")


def _start_worker(pin):
    """Join the launched cluster, first pinned to one core with ``pin``."""
    from numpyro_dilation import distributed

    if pin:  # before JAX starts its threads: one core per process
        process_id = int(os.environ[distributed.ENV_PROCESS_ID])
        os.sched_setaffinity(0, {process_id % os.cpu_count()})
    distributed.initialize(initialization_timeout=300)


def _launch(command, processes, timeout):
    """Run ``command`` as ``processes`` processes of one CPU device each; the
    numbers on process 0's ``RESULT`` line."""
    from numpyro_dilation import distributed

    out = distributed.launch(command, processes, 1, timeout=timeout)[0].stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return [float(v) for v in line.split()[1:]]


def _worker(args):
    _start_worker(args.pin)
    import jax

    from numpyro_dilation import core
    from numpyro_dilation.core import sampler

    num_particles = args.particles_per_process * jax.process_count()
    if args.total:
        num_particles = args.total
    state, fn, options = _population(
        num_particles, args.dim, 20 * args.iterations, args.hmc
    )

    def loop(program, opts=options, **phase):
        def run(state, key):
            def body(_, carry):
                state, key = carry
                key, step_keys = sampler.iteration_keys(key)
                return program(step_keys, state, fn, opts, **phase)[0], key

            return jax.lax.fori_loop(0, args.iterations, body, (state, key))

        return jax.jit(run)

    def median_rate(run, state, key):
        seconds = []
        for _ in range(args.repeats):  # the same iterations each time
            start = time.perf_counter()
            jax.block_until_ready(run(state, key))
            seconds.append(time.perf_counter() - start)
        return args.iterations / sorted(seconds)[len(seconds) // 2]

    key = jax.random.PRNGKey(0)
    warmup, sampling = loop(sampler.step_from_keys), loop(sampler.sample_step)
    # Each timed window in the loop the kernel compiles for it: with HMC moves
    # (step="auto" on one mode) one per phase, with one mode's options
    # (DilationKernel._warm_up); with MALA one for both.
    anneal, tune = warmup, warmup
    if args.hmc:
        one_mode = sampler.unimodal(options)
        anneal = loop(sampler.step_from_keys, one_mode, phase=sampler.ANNEAL)
        tune = loop(sampler.step_from_keys, one_mode, phase=sampler.TUNE)
    for _ in range(2):  # compiles, then runs every collective once
        state, key = jax.block_until_ready(warmup(state, key))
    jax.block_until_ready(anneal(state, key))
    rates = [median_rate(anneal, state, key)]  # annealing, 2-3 x iterations in
    # On to 2 x iterations past the annealing (a host-side count: the state's
    # arrays span every process and cannot be read by one).
    num_anneal = core.build_calendar(20 * args.iterations, options).num_anneal
    for _ in range(int(num_anneal) // args.iterations):
        state, key = jax.block_until_ready(warmup(state, key))
    jax.block_until_ready(tune(state, key))
    rates.append(median_rate(tune, state, key))  # tuning (MALA: with a mode fit)
    for _ in range(2):
        state, key = jax.block_until_ready(sampling(state, key))
    rates.append(median_rate(sampling, state, key))
    if jax.process_index() == 0:
        print("RESULT", num_particles, *(f"{rate:.2f}" for rate in rates))


SIZES = (1, 2, 4, 32, 256)


def _collectives_worker(args):
    _start_worker(args.pin)
    import jax
    import jax.numpy as jnp

    from numpyro_dilation.core.sharding import particle_sharding

    n = 1024 * jax.process_count()
    x = jax.device_put(jnp.ones((n, max(SIZES))), particle_sharding(n))
    cells = []
    for size in SIZES:

        @jax.jit
        def run(x, c, size=size):
            # A chain of dependent sums over the split axis: one all-reduce each.
            def body(_, c):
                return 1e-3 * (c + jnp.sum(jnp.sum(x[:, :size] * c, axis=0)))

            return jax.lax.fori_loop(0, 100, body, c)

        for _ in range(2):
            jax.block_until_ready(run(x, jnp.float32(1.0)))
        start = time.perf_counter()
        jax.block_until_ready(run(x, jnp.float32(1.0)))
        cells.append(f"{1e3 * (time.perf_counter() - start) / 100:.3f}")
    if jax.process_index() == 0:
        print("RESULT", *cells)


def collectives(args):
    command = [sys.executable, __file__, _WORKER, "--collectives"]
    command += ["--pin"] if args.pin else []
    milliseconds = _launch(command, args.processes[-1], timeout=600)
    cores = "one core each" if args.pin else "sharing the cores"
    print(f"{args.processes[-1]} processes, {cores}: ms per all-reduce")
    print("| floats reduced | " + " | ".join(str(size) for size in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    print("| ms | " + " | ".join(f"{ms:.3f}" for ms in milliseconds) + " |")


def scaling(args):
    def measure(processes, extra):
        command = [sys.executable, __file__, _WORKER, "--dim", str(args.dim)]
        command += ["--iterations", str(args.iterations), *extra]
        command += ["--repeats", str(args.repeats)]
        command += ["--pin"] if args.pin else []
        command += ["--hmc"] if args.hmc else []
        return _launch(command, processes, timeout=1800)

    total = args.particles_per_process * max(args.processes)
    print(
        f"d = {args.dim}, {args.iterations} iterations per timing, "
        f"{os.cpu_count()} CPUs; iterations per second "
        "(annealing / tuning / sampling)"
    )
    print(
        "| processes | particles | annealing it/s | tuning it/s | sampling it/s "
        "| vs 1 process |"
    )
    print("|---|---|---|---|---|---|")
    for label, extra_for in (
        ("same total particles", lambda p: ["--total", str(total)]),
        (
            "same particles per process",
            lambda p: ["--particles-per-process", str(args.particles_per_process)],
        ),
    ):
        print(f"| {label} | | | | |")
        base = None
        for processes in args.processes:
            n, *rates = measure(processes, extra_for(processes))
            base = base or rates
            pairs = zip(rates, base, strict=True)
            ratios = " / ".join(f"{r / b:.2f}x" for r, b in pairs)
            cells = " | ".join(f"{r:.1f}" for r in rates)
            print(f"| {processes} | {int(n)} | {cells} | {ratios} |")


def _ints(text):
    return [int(v) for v in text.split(",")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what", nargs="?", choices=["communication", "scaling", "collectives"]
    )
    parser.add_argument("--collectives", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(_WORKER, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--particles", type=_ints, default=[512, 2048, 8192])
    parser.add_argument("--dims", type=_ints, default=[4, 32])
    parser.add_argument("--dump", help="write each program's HLO to DUMP_*.txt")
    parser.add_argument("--processes", type=_ints, default=[1, 2, 4])
    parser.add_argument("--particles-per-process", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pin", action="store_true", help="each process on one core of its own"
    )
    parser.add_argument(
        "--hmc", action="store_true", help="HMC moves from the end of the annealing"
    )
    args = parser.parse_args()
    if args.worker:
        return _collectives_worker(args) if args.collectives else _worker(args)
    if args.what == "communication":
        return communication(args)
    if args.what == "scaling":
        return scaling(args)
    if args.what == "collectives":
        return collectives(args)
    parser.error("say what to measure: communication, scaling or collectives")


if __name__ == "__main__":
    main()
