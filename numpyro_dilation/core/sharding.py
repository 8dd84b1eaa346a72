"""The particle axis split over devices.

A population step is elementwise over particles but for a few reductions over
them (the mean acceptance that drives the step size, the population variance
that sets the preconditioner). Place the population's arrays with a
``NamedSharding`` that splits their leading (particle) axis over a 1-D mesh of
devices, and the loop NumPyro compiles with ``jax.jit`` runs each device's
particles there and turns those reductions into all-reduces (GSPMD): the draws
are those of one device up to the order of floating-point sums, and the
throughput grows with the number of devices. ``jax.devices()`` lists every
device of every process of a multi-process JAX cluster, so the same code spans
processes: each then holds its own devices' particles, and the reductions
become collectives between the processes (``numpyro_dilation.distributed``,
tested with 2 processes on one machine in tests/test_distributed.py; one
process with several devices in tests/core/test_sharding.py).
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from numpyro_dilation.core.sampler import SamplerState

__all__ = [
    "PARTICLE_AXIS",
    "particle_sharding",
    "split",
    "replicate",
    "shard_particles",
    "to_host",
]

PARTICLE_AXIS = "particles"
"""Name of the mesh axis the particles are split along."""


def particle_sharding(
    num_particles: int, devices: Sequence[jax.Device] | None = None
) -> NamedSharding | None:
    """Split ``num_particles`` over ``devices`` (default: all), or ``None`` when
    there is a single device or the particles do not divide evenly."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) < 2 or num_particles % len(devices):
        return None
    mesh = Mesh(np.asarray(devices), (PARTICLE_AXIS,))
    return NamedSharding(mesh, PartitionSpec(PARTICLE_AXIS))


def _place(tree: Any, sharding: NamedSharding) -> Any:
    def put(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            # Already spread over several processes: re-placed by a compiled copy.
            return jax.jit(lambda a: a, out_shardings=sharding)(x)
        x = np.asarray(x)
        # Every process holds the whole (identically computed) array and gives
        # its own devices their slices: this also builds multi-host arrays.
        return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

    return jax.tree.map(put, tree)


def split(tree: Any, sharding: NamedSharding) -> Any:
    """Every array of ``tree`` split along its leading (particle) axis."""
    return _place(tree, sharding)


def replicate(tree: Any, sharding: NamedSharding) -> Any:
    """Every array of ``tree`` whole on each device of ``sharding``'s mesh."""
    return _place(tree, NamedSharding(sharding.mesh, PartitionSpec()))


def shard_particles(state: SamplerState, sharding: NamedSharding) -> SamplerState:
    """``state.particles`` split over the devices, everything else replicated."""
    shared = replicate(state._replace(particles=None), sharding)
    return shared._replace(particles=split(state.particles, sharding))


def to_host(tree: Any) -> Any:
    """``tree`` with every array whose values this process does not hold whole
    (split over the devices of several processes) gathered from all processes.
    Every process must call it, in the same order (it is a collective).
    Tracers (under ``jit`` or ``vmap``) are left as they are."""

    def get(x):
        if (
            isinstance(x, jax.Array)
            and not isinstance(x, jax.core.Tracer)
            and not (x.is_fully_addressable or x.is_fully_replicated)
        ):
            return multihost_utils.process_allgather(x, tiled=True)
        return x

    return jax.tree.map(get, tree)
