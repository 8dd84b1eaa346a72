"""One population across processes, on JAX's multi-controller runtime.

Every process runs the same script: ``initialize()`` first (before any other
JAX computation), then the usual ``MCMC(DilationKernel(model), num_chains=N,
chain_method="vectorized").run(key, ...)`` with the same ``N`` and ``key``
everywhere. ``jax.devices()`` then lists the devices of every process, the
kernel splits the ``N`` particles over all of them (``core.sharding``), and
each process holds and moves ``N / num_devices`` particles per device of its
own. The population statistics (mean acceptance, the preconditioner's moments,
the mode fits, the mode weights) are reductions in the compiled programs, which
XLA turns into collectives between the processes (gloo on CPUs, NCCL on GPUs):
the draws are those of one process with as many devices, up to the order of
floating-point sums. docs/distributed.md says how to launch and what is
communicated per iteration.

After the run, ``collect(mcmc)`` is a copy of the run holding this process's
particles' draws as NumPy arrays, and ``collect(mcmc, gather=True)`` one holding
every particle's (gathered onto every process); ``get_samples``,
``print_summary`` and ``az.from_numpyro`` work on either.

``python -m numpyro_dilation.distributed --processes P [--devices-per-process D]
SCRIPT [ARGS ...]`` starts ``P`` copies of a script on this machine (for tests
and trials before a cluster): ``initialize()`` reads its coordinator, process
count and id from the environment it sets.
"""

import argparse
import copy
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from numpyro_dilation.core.sharding import to_host

__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "initialize",
    "collect",
    "process_particles",
    "launch",
]

ENV_COORDINATOR = "NUMPYRO_DILATION_COORDINATOR"
ENV_NUM_PROCESSES = "NUMPYRO_DILATION_NUM_PROCESSES"
ENV_PROCESS_ID = "NUMPYRO_DILATION_PROCESS_ID"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> None:
    """``jax.distributed.initialize`` with a time limit on every wait.

    Arguments left ``None`` come from ``launch``'s environment variables when
    set, else from JAX's cluster detection (SLURM, Open MPI, Kubernetes, ...).
    A process waits at most ``initialization_timeout`` seconds for all
    ``num_processes`` to register at the coordinator, and a process that stops
    answering for ``heartbeat_timeout`` seconds ends the others: JAX then ends
    the process (DEADLINE_EXCEEDED), never hangs. Shortly before that deadline
    this prints which processes are missing and the fix to standard error,
    since JAX's own message cannot name them.
    """
    env = os.environ
    if coordinator_address is None and ENV_COORDINATOR in env:
        coordinator_address = env[ENV_COORDINATOR]
        num_processes = int(env[ENV_NUM_PROCESSES])
        process_id = int(env[ENV_PROCESS_ID])
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be at least 1; got {num_processes}.")
    if process_id is not None and num_processes is not None:
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be in 0..{num_processes - 1} "
                f"(num_processes={num_processes}); got {process_id}."
            )
    for name, value in (
        ("initialization_timeout", initialization_timeout),
        ("heartbeat_timeout", heartbeat_timeout),
    ):
        if value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds.")
    started = threading.Event()
    margin = min(1.0, 0.1 * initialization_timeout)

    def warn_if_still_waiting():
        if not started.wait(initialization_timeout - margin):
            print(
                f"numpyro_dilation.distributed: process {process_id} has waited "
                f"{initialization_timeout - margin:.0f} s of its "
                f"initialization_timeout={initialization_timeout} s for all "
                f"{num_processes} processes to register at "
                f"{coordinator_address}. Some have not started (or were started "
                "with another coordinator_address or num_processes): JAX will "
                "now end this process with DEADLINE_EXCEEDED. Start every "
                "process with the same coordinator_address and num_processes, "
                "or raise initialization_timeout if they start slowly.",
                file=sys.stderr,
                flush=True,
            )

    threading.Thread(target=warn_if_still_waiting, daemon=True).start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=initialization_timeout,
            heartbeat_timeout_seconds=heartbeat_timeout,
        )
    finally:
        started.set()


def _local_slices(x: jax.Array) -> dict[int, slice]:
    """The distinct leading-axis (particle) slices of ``x`` this process holds,
    by their start."""
    slices = {}
    for lead, *rest in x.sharding.addressable_devices_indices_map(x.shape).values():
        if any(s != slice(None) for s in rest):
            raise ValueError(
                f"an array of shape {x.shape} is split along other axes than "
                "the particles': collect(mcmc, gather=True) gathers it whole."
            )
        slices[lead.start or 0] = lead
    return dict(sorted(slices.items()))


def _whole(x: Any) -> bool:
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def _local_part(x: Any) -> np.ndarray:
    """This process's part of ``x`` along its leading (particle) axis."""
    if _whole(x):
        return np.asarray(x)
    data = {shard.index[0].start or 0: shard.data for shard in x.addressable_shards}
    return np.concatenate([np.asarray(data[start]) for start in _local_slices(x)])


def process_particles(mcmc: Any) -> np.ndarray:
    """The indices of the particles (chains) this process holds in ``mcmc``'s
    draws, in the order ``collect(mcmc)`` gives them."""
    leaf = jax.tree.leaves(mcmc.get_samples(group_by_chain=True))[0]
    index = np.arange(leaf.shape[0])
    if _whole(leaf):
        return index
    return np.concatenate([index[s] for s in _local_slices(leaf).values()])


def collect(mcmc: Any, gather: bool = False) -> Any:
    """A copy of the finished run ``mcmc`` whose draws and extra fields are
    NumPy arrays on this process: its own particles' (default: what fits in
    its memory, no communication) or, with ``gather=True``, every particle's
    (every process must then call it: it is a collective).

    The copy's ``num_chains`` is its number of particles; ``get_samples``,
    ``get_extra_fields``, ``print_summary`` and ``az.from_numpyro`` work on it.
    ``mcmc`` itself is unchanged: continue the run from it, not from the copy.
    In a single-process run both give every particle.
    """
    states = mcmc._states
    if states is None:
        raise ValueError("collect needs a finished run: call mcmc.run first.")
    if gather:
        states = jax.tree.map(np.asarray, to_host(states))
    else:
        states = jax.tree.map(_local_part, states)
    out = copy.copy(mcmc)
    out._states = states
    out._states_flat = None
    out.num_chains = jax.tree.leaves(states)[0].shape[0]
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    command: Sequence[str],
    num_processes: int,
    devices_per_process: int = 1,
    timeout: float = 1800.0,
) -> list[subprocess.CompletedProcess]:
    """Run ``num_processes`` copies of ``command`` on this machine as one JAX
    cluster (coordinator on 127.0.0.1, each process with
    ``devices_per_process`` CPU devices), the way a cluster's launcher would.

    Returns every process's result (standard output and error as text). When
    one process fails or ``timeout`` seconds pass, the others are ended and a
    ``RuntimeError`` names the process and shows the end of its error output.
    """
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError("num_processes and devices_per_process must be >= 1.")
    env = dict(os.environ)
    env[ENV_COORDINATOR] = f"127.0.0.1:{_free_port()}"
    env[ENV_NUM_PROCESSES] = str(num_processes)
    count = f"--xla_force_host_platform_device_count={devices_per_process}"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {count}".strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    procs = []
    for process_id in range(num_processes):
        env[ENV_PROCESS_ID] = str(process_id)
        procs.append(
            subprocess.Popen(
                list(command),
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [None] * num_processes
    threads = []
    for i, proc in enumerate(procs):

        def read(i=i, proc=proc):
            outputs[i] = proc.communicate()

        threads.append(threading.Thread(target=read, daemon=True))
        threads[-1].start()
    deadline = time.monotonic() + timeout
    failed = reason = None
    while failed is None:
        codes = [p.poll() for p in procs]
        bad = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if bad:
            failed, reason = bad[0], f"ended with exit code {codes[bad[0]]}"
        elif None not in codes:
            break
        elif time.monotonic() > deadline:
            failed = codes.index(None)
            reason = f"did not finish in {timeout:.0f} s"
        else:
            time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for thread in threads:
        thread.join()
    results = [
        subprocess.CompletedProcess(list(command), p.returncode, *out)
        for p, out in zip(procs, outputs, strict=True)
    ]
    if failed is not None:
        raise RuntimeError(
            f"process {failed} of {num_processes} {reason}; the others were "
            "ended. Its error output ends with:\n"
            + (results[failed].stderr or "")[-3000:]
        )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m numpyro_dilation.distributed",
        description="Run P copies of a Python script on this machine as one "
        "JAX cluster (each calls numpyro_dilation.distributed.initialize()).",
    )
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--devices-per-process", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    results = launch(
        [sys.executable, args.script, *args.args],
        args.processes,
        args.devices_per_process,
        args.timeout,
    )
    for process_id, result in enumerate(results):
        for line in result.stdout.splitlines():
            print(f"[{process_id}] {line}")


if __name__ == "__main__":
    main()
