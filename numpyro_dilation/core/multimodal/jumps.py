"""Exact inter-mode jumps: Metropolis-Hastings with a frozen mixture proposal.

The proposal ``q`` is built from the modes of the population (refitted while
tuning, frozen at the end of warmup): a diagonal Gaussian mixture over the modes
(``modes.proposal``) and a 1-D mixture per coordinate (``Modes.marginals``). A
jump replaces a block ``B`` of coordinates by a fresh draw ``x'_B ~ q_B``: with
probability ``coordinate_prob`` one coordinate chosen uniformly, drawn from its
1-D mixture, else all of them, drawn from the joint mixture (an independence
proposal). ``B`` is drawn independently of the state, so the proposal
``x'_B ~ q_B``, ``x'_{-B} = x_{-B}`` has the Metropolis-Hastings ratio
(Tierney 1994; a Metropolis-within-Gibbs step when ``B`` is one coordinate)

    r = log p(x') + log q_B(x_B) - log p(x) - log q_B(x'_B),

and leaves ``p`` exactly invariant for any fixed ``q``. Full-vector jumps move
a particle between modes that differ in every coordinate (a mixture in
``d`` dimensions); one-coordinate jumps move it between the wells of a product
of multimodal factors (the many-well target), where a full draw would almost
never be accepted.

Which block to propose is tuned during warmup (``BlockChoice``): the
probability of a one-coordinate jump is the share of the expected squared jump
distance (Pasarica & Gelman 2010) that the one-coordinate jumps achieved, in
coordinates scaled by the population's standard deviation, kept in [0.1, 0.9]
so that both kinds stay measured; it is frozen after warmup.

Cost per particle: one evaluation of the log density and its gradient (the
gradient is needed by the next Langevin step if the jump is accepted), and
``O(K d + J)`` for ``q`` with ``K`` joint and ``J`` 1-D components: linear in the
number of particles.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_dilation.core import draws, langevin
from numpyro_dilation.core.multimodal import mixture_fit
from numpyro_dilation.core.multimodal.mixture_fit import GaussianMixture, map_particles

__all__ = [
    "BlockChoice",
    "JumpInfo",
    "block_choice_init",
    "coordinate_prob",
    "update_block_choice",
    "propose",
    "log_proposal_ratio",
    "step",
]

PROB_BOUNDS = (0.1, 0.9)


class BlockChoice(NamedTuple):
    """Summed squared jump distances ``(full, one-coordinate)`` and jump counts."""

    squared_jump: Array
    count: Array


class JumpInfo(NamedTuple):
    """Per particle: ``min(1, exp(r))`` (0 for a non-finite proposal), whether the
    jump was accepted, whether it was divergent, whether ``B`` was one coordinate."""

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    is_coordinate: Array


def block_choice_init(dtype=jnp.float32) -> BlockChoice:
    """One pseudo-jump of each kind with squared distance 1: probability 1/2."""
    return BlockChoice(jnp.ones(2, dtype), jnp.ones(2, dtype))


def coordinate_prob(choice: BlockChoice) -> Array:
    """``ESJD_1 / (ESJD_full + ESJD_1)``, clipped to ``PROB_BOUNDS``."""
    mean = choice.squared_jump / choice.count
    return jnp.clip(mean[1] / jnp.sum(mean), *PROB_BOUNDS)


def update_block_choice(
    choice: BlockChoice, squared_jump: Array, is_coordinate: Array
) -> BlockChoice:
    """Add one population of jumps (scaled squared distances, kinds)."""
    count, total = mixture_fit.label_sums(squared_jump, is_coordinate.astype(int), 2)
    return BlockChoice(choice.squared_jump + total, choice.count + count)


def propose(
    mixture: GaussianMixture,
    marginals: GaussianMixture,
    x: Array,
    u: Array,
    z: Array,
    coordinate_prob: Array,
) -> tuple[Array, Array, Array]:
    """A draw ``x'`` for one particle from its random numbers ``u ~ U(0, 1)^3``
    and ``z ~ N(0, I_d)``: the new point, whether ``B`` is one coordinate, and
    that coordinate ``j``.

    ``u_0`` picks the kind of block, ``u_1`` the coordinate; the full block
    draws from ``mixture``, one coordinate ``j`` from the 1-D mixture
    ``marginals[j]``. The two kinds are alternatives, so they share ``u_2``
    (the component) and ``z``.
    """
    d = x.shape[-1]
    j = jnp.minimum((u[1] * d).astype(int), d - 1)
    full = mixture_fit.transform(mixture, u[2], z)
    marginal = jax.tree.map(lambda a: a[j], marginals)
    value = mixture_fit.transform(marginal, u[2], z[j, None])
    one = u[0] < coordinate_prob
    return jnp.where(one, x.at[j].set(value[0]), full), one, j


def log_proposal_ratio(
    mixture: GaussianMixture,
    marginals: GaussianMixture,
    x: Array,
    new: Array,
    one: Array,
    j: Array,
) -> Array:
    """``log q_B(x_B) - log q_B(x'_B)`` for the block of ``propose``."""
    # The two points are stacked so that one vectorised evaluation serves
    # both: XLA fuses it better than two (half the time of a jump's densities).
    points = jnp.stack([x, new])
    full = jax.vmap(lambda p: mixture_fit.logpdf(mixture, p))(points)
    marginal = jax.tree.map(lambda a: a[j], marginals)
    coordinate = jax.vmap(lambda p: mixture_fit.logpdf(marginal, p[j, None]))(points)
    return jnp.where(one, coordinate[0] - coordinate[1], full[0] - full[1])


def step(
    key: Array,
    state: langevin.LangevinState,
    logdensity_and_grad_fn: Callable[[Array], tuple[Array, Array]],
    mixture: GaussianMixture,
    marginals: GaussianMixture,
    coordinate_prob: Array,
) -> tuple[langevin.LangevinState, JumpInfo]:
    """One jump of every particle of a population (``state`` has a particle axis).

    One gradient per particle; the mixture densities are evaluated in chunks
    of particles (``map_particles``), so memory stays ``O(chunk * K * d)``.
    """
    n, d = state.position.shape
    # Each particle's proposal numbers (3 uniforms, d normals) and its accept
    # uniform from one draw: one threefry hash in the compiled program.
    z, u = draws.normal_and_uniform(key, (n, d), state.position.dtype, (4,))
    new, one, j = jax.vmap(
        lambda x, u, z: propose(mixture, marginals, x, u, z, coordinate_prob)
    )(state.position, u[:, :3], z)
    # Materialise the draws: fused into the mixture densities below, XLA would
    # recompute them once per component.
    new, one, j = jax.lax.optimization_barrier((new, one, j))
    log_q_ratio = map_particles(
        lambda *a: log_proposal_ratio(mixture, marginals, *a),
        state.position,
        new,
        one,
        j,
        num_components=mixture.means.shape[0],
    )
    proposal = jax.vmap(lambda x: langevin.init(x, logdensity_and_grad_fn))(new)
    log_ratio = proposal.logdensity - state.logdensity + log_q_ratio
    log_uniform = jnp.log(u[:, 3])
    state, info = jax.vmap(langevin.metropolis)(log_uniform, state, proposal, log_ratio)
    return state, JumpInfo(*info, one)
