"""Exact inter-mode jumps: Metropolis-Hastings with a frozen mixture proposal.

The proposal ``q`` is frozen from the population at the end of warmup: a
diagonal Gaussian mixture over its modes (``modes.proposal``) and a 1-D mixture
per coordinate (``Modes.marginals``). A jump replaces a block ``B`` of
coordinates by a fresh draw ``x'_B ~ q_B``: with probability
``coordinate_prob`` one coordinate chosen uniformly, drawn from its 1-D
mixture, else all of them, drawn from the joint mixture (an independence
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

from numpyro_dilation import gaussian_mixture, langevin
from numpyro_dilation.gaussian_mixture import GaussianMixture

__all__ = [
    "BlockChoice",
    "JumpInfo",
    "block_choice_init",
    "coordinate_prob",
    "update_block_choice",
    "propose",
    "step",
]

PROB_BOUNDS = (0.1, 0.9)


class BlockChoice(NamedTuple):
    """Summed squared jump distances ``(full, one-coordinate)`` and jump counts."""

    squared_jump: Array
    count: Array


class JumpInfo(NamedTuple):
    acceptance_rate: Array
    is_accepted: Array
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
    kind = is_coordinate.astype(int)
    return BlockChoice(
        choice.squared_jump + jax.ops.segment_sum(squared_jump, kind, 2),
        choice.count + jax.ops.segment_sum(jnp.ones_like(squared_jump), kind, 2),
    )


def propose(
    key: Array,
    mixture: GaussianMixture,
    marginals: GaussianMixture,
    x: Array,
    coordinate_prob: Array,
) -> tuple[Array, Array, Array]:
    """``x'``, ``log q_B(x_B) - log q_B(x'_B)`` for a random block ``B``, and
    whether ``B`` is one coordinate.

    The full block draws from ``mixture``; one coordinate ``j`` from the 1-D
    mixture ``marginals[j]``.
    """
    key_u, key_z = jax.random.split(key)
    d = x.shape[-1]
    u = jax.random.uniform(key_u, (3,), x.dtype)
    z = jax.random.normal(key_z, (d,), x.dtype)
    j = jnp.minimum((u[1] * d).astype(int), d - 1)
    # The two block kinds are alternatives: they may share their random numbers.
    full = gaussian_mixture.transform(mixture, u[2], z)
    full_ratio = gaussian_mixture.logpdf(mixture, x) - gaussian_mixture.logpdf(
        mixture, full
    )
    marginal = jax.tree.map(lambda a: a[j], marginals)
    value = gaussian_mixture.transform(marginal, u[2], z[j, None])
    one_ratio = gaussian_mixture.logpdf(marginal, x[j, None]) - gaussian_mixture.logpdf(
        marginal, value
    )
    one = u[0] < coordinate_prob
    new = jnp.where(one, x.at[j].set(value[0]), full)
    return new, jnp.where(one, one_ratio, full_ratio), one


def step(
    key: Array,
    state: langevin.LangevinState,
    logdensity_and_grad_fn: Callable[[Array], tuple[Array, Array]],
    mixture: GaussianMixture,
    marginals: GaussianMixture,
    coordinate_prob: Array,
) -> tuple[langevin.LangevinState, JumpInfo]:
    """One jump of one particle (``vmap`` it); costs one gradient."""
    key_prop, key_acc = jax.random.split(key)
    new, log_q_ratio, one = propose(
        key_prop, mixture, marginals, state.position, coordinate_prob
    )
    proposal = langevin.init(new, logdensity_and_grad_fn)
    log_ratio = proposal.logdensity - state.logdensity + log_q_ratio
    state, info = langevin.metropolis(key_acc, state, proposal, log_ratio)
    return state, JumpInfo(info.acceptance_rate, info.is_accepted, one)
