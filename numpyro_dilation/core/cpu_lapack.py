"""jaxlib < 0.11 on CPU: evaluate a potential that calls LAPACK one particle at a time.

jaxlib 0.10's CPU LAPACK kernels (Cholesky ``potrf``, triangular solve
``trsm``, ...) split a large batch of matrices into chunks, queue the chunks on
XLA's intra-op thread pool and block until they are done. When XLA runs as many
independent such calls at once as the pool has threads, every pool thread is
waiting for chunks that no free thread is left to run: the process stops using
CPU and never returns. A Gaussian-process potential, vmapped over a population,
is exactly that: the gradient has independent triangular solves (forward and
backward), each batched over every particle. On a 2-core machine a jitted loop
of ``vmap(value_and_grad(potential))`` over 1024 particles hangs at once (d = 50;
at d = 400 already with 32 particles), while the same loop with one particle per
call runs (docs/known-issues.md has the measurements and the repro). jaxlib 0.11
and later run the batch in the calling thread and do not hang.

So where the installed jaxlib is older than 0.11, the backend is the CPU and the
potential's gradient contains a LAPACK primitive, the kernel evaluates the
population with ``lax.map`` (one particle per LAPACK call, the same values)
instead of a batched ``vmap``: ``needs_sequential`` decides, and
``sequential_under_vmap`` wraps the per-particle function in a ``custom_vmap``
whose batching rule is that ``lax.map``. Everywhere else nothing changes.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
from jax import Array

__all__ = [
    "LAPACK_PRIMITIVES",
    "deadlock_prone",
    "uses_lapack",
    "sequential_under_vmap",
    "needs_sequential",
]

LAPACK_PRIMITIVES = frozenset(
    {
        "cholesky",
        "triangular_solve",
        "lu",
        "qr",
        "geqrf",
        "geqp3",
        "householder_product",
        "eig",
        "eigh",
        "svd",
        "schur",
        "hessenberg",
        "tridiagonal",
        "tridiagonal_solve",
    }
)
"""The jaxpr primitives that call LAPACK on a CPU (what ``uses_lapack`` looks for)."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def deadlock_prone(
    jaxlib_version: str = jaxlib.__version__, backend: str | None = None
) -> bool:
    """Whether batched LAPACK calls can deadlock here: jaxlib < 0.11 on CPU."""
    backend = jax.default_backend() if backend is None else backend
    return backend == "cpu" and _version(jaxlib_version) < (0, 11)


def _primitives(jaxpr: Any) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    names |= _primitives(inner)
    return names


def uses_lapack(fn: Callable, *example_args: Any) -> bool:
    """Whether ``fn(*example_args)`` (traced, not run) calls a LAPACK primitive."""
    jaxpr = jax.make_jaxpr(fn)(*example_args)
    return bool(_primitives(jaxpr.jaxpr) & LAPACK_PRIMITIVES)


def sequential_under_vmap(fn: Callable[[Array], Any]) -> Callable[[Array], Any]:
    """``fn`` of one argument, whose ``vmap`` is ``lax.map(fn, xs)``: the same
    values, computed one element of the batch at a time."""

    @jax.custom_batching.custom_vmap
    def wrapped(x):
        return fn(x)

    @wrapped.def_vmap
    def _rule(axis_size, in_batched, x):
        if not in_batched[0]:
            x = jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))
        out = jax.lax.map(fn, x)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


def needs_sequential(fn: Callable[[Array], Any], example: Array) -> bool:
    """Whether batched LAPACK calls can deadlock here and ``fn(example)`` makes
    one: then evaluate ``fn`` over a population with ``sequential_under_vmap``."""
    return deadlock_prone() and uses_lapack(fn, example)
