"""Population-based adaptation of the step size and the preconditioner.

Step size (Robbins-Monro on the log step size, driven by the population's mean
MALA acceptance probability ``a_t`` towards a target ``a*``, 0.574 for MALA;
Roberts & Rosenthal 1998):

    log eps_{t+1} = log eps_t + gain * (a_t - a*)

The value frozen after warmup is the average of ``log eps_t`` over the final
window, which removes most of the noise of a small population.

Preconditioner: the population's variance (diagonal) or covariance (dense),
shrunk as Stan does for its windowed estimate, but relative to each
coordinate's own variance so that it works from 1e-6 to 1e6 in one target:

    M = n/(n+5) S + 5/(n+5) * 1e-3 * diag(S)

``S`` and the mean come out of one sum over the particles
(``population_moments``): shifted by a point ``s`` near the mean (the previous
estimate's mean), ``C = x - s``, ``delta = 1^T C / n``,

    mean = s + delta,    S = (C^T C - n delta delta^T) / (n - 1),

so a population split over devices or processes pays one all-reduce, where
the two-pass ``sum (x - mean)^2`` pays two dependent ones. Rounding grows as
``((mean - s) / sd)^2``; a coordinate whose variance is below the sums'
worst-case rounding counts as having no spread and keeps its previous value.

With ``low_rank`` directions (a diagonal ``M`` only, ``core.preconditioner``)
``M`` also whitens the population's ``r`` widest directions in the
coordinates ``D`` whitens, ``C~ = D^-1/2 C D^-1/2``, tracked by one step of
orthogonal iteration per estimate from the previous directions ``U``:

    Y = C~ U,   U' = qr(Y),   lambda = diag(U^T Y).

A direction is kept when its ``lambda`` is above ``c (1 + sqrt(d / n))^2``,
the largest eigenvalue that noise alone gives an ``n``-particle covariance
in ``d`` dimensions (Marchenko-Pastur) whose other directions have variance
``c``, the mean of the rest of the spectrum, ``c = (tr C~ - sum_kept lambda)
/ (d - #kept)``. The wide directions also inflate ``D`` (each coordinate's
variance counts them), so the rest of ``C~`` is ``c < 1``; the preconditioner
is then ``M = c D^1/2 (I + U (lambda / c - 1) U^T) D^1/2`` over the kept
directions (``lambda / c = 1``, no correction, elsewhere).

Trajectory length of HMC (ChEES: Hoffman, Radul, Sountsov, AISTATS 2021,
eq. 6-8): ascend the change in the estimator of the expected square,
``1/4 E[(|x' - E x'|^2 - |x - E x|^2)^2]`` over the population (positions
whitened by the preconditioner, ``x'`` the trajectory's endpoint, ``x`` its
start), whose derivative in ``log T`` for a trajectory of jittered length
``u T`` ending with velocity ``v'`` is estimated by the acceptance-weighted mean of

    g_i = u T (|x'_i - m'|^2 - |x_i - m|^2) (x'_i - m') . v'_i,

with Adam without momentum (``beta_2 = 0.95``), each update clipped to
``+-0.35`` in ``log T``:

    s_{t+1} = b s_t + (1 - b) g^2
    log T_{t+1} = log T_t + lr g / sqrt(s_{t+1} / (1 - b^(t+1)))

The trajectories use ``max(T, pi sqrt(lambda_max))``, ``lambda_max`` the
largest eigenvalue of the population's covariance in whitened coordinates
(power iteration, one step per tuning iteration): jittered by ``u ~ U(0, 1)``,
their mean length is at least a quarter period ``(pi / 2) sqrt(lambda_max)``
of the slowest direction, which ChEES, dominated by the bulk of the
directions, under-serves (the length floor
of blackjax.adaptation.chees_adaptation; the floor is not fed back into
``log T``). HMC's step size follows the harmonic mean of the acceptance
probabilities (``acceptance_statistics``), as ChEES does.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import DTypeLike

from numpyro_dilation.core.preconditioner import LowRank, no_low_rank

__all__ = [
    "StepSizeState",
    "step_size_init",
    "step_size_update",
    "final_step_size",
    "acceptance_terms",
    "acceptance_statistics",
    "population_moments",
    "shrunk_inv_mass",
    "low_rank_init",
    "low_rank_update",
    "TrajectoryState",
    "trajectory_init",
    "chees_terms",
    "chees_gradient",
    "trajectory_update",
    "length_floor",
    "trajectory_length",
    "final_trajectory_length",
]

ADAM_DECAY = 0.95
MAX_LOG_UPDATE = 0.35


class StepSizeState(NamedTuple):
    """``log_step_size`` is adapted; ``log_step_size_sum / count`` its window mean."""

    log_step_size: Array
    log_step_size_sum: Array
    count: Array


def step_size_init(step_size: float) -> StepSizeState:
    """``log eps_0 = log step_size``, with an empty final window."""
    count = jnp.zeros((), int)
    return StepSizeState(jnp.log(jnp.asarray(step_size, float)), jnp.zeros(()), count)


def step_size_update(
    state: StepSizeState,
    mean_acceptance: Array,
    target: float,
    gain: float,
    in_final_window: Array,
) -> StepSizeState:
    """One Robbins-Monro update; accumulates the mean inside the final window."""
    log_eps = state.log_step_size + gain * (mean_acceptance - target)
    return StepSizeState(
        log_eps,
        state.log_step_size_sum + jnp.where(in_final_window, log_eps, 0.0),
        state.count + jnp.where(in_final_window, 1, 0),
    )


def _exp_window_mean(last: Array, total: Array, count: Array) -> Array:
    """``exp`` of the final window's mean (of ``last`` if the window was empty)."""
    return jnp.exp(jnp.where(count > 0, total / jnp.maximum(count, 1), last))


def final_step_size(state: StepSizeState) -> Array:
    """The window mean of ``log eps`` (the last value if the window was empty)."""
    return _exp_window_mean(state.log_step_size, state.log_step_size_sum, state.count)


def acceptance_terms(
    accept_prob: Array,
    diverging: Array,
    log_step_ratio: Array | None,
    harmonic: bool = False,
) -> Array:
    """Per-particle columns ``(n, k)`` whose sums over the population give the
    step size's statistics (:func:`acceptance_statistics`): ``a_i``; with
    ``harmonic``, ``1{kept} / a_i`` and ``1{kept}`` (kept: the move did not
    diverge); with a ``log_step_ratio``, it. Summed in the reduction of the
    preconditioner's moments (``population_moments(..., extra=)``), they cost a
    split population no all-reduce of their own."""
    columns = [accept_prob]
    if harmonic:
        kept = (~diverging).astype(accept_prob.dtype)
        columns += [kept / jnp.maximum(accept_prob, 1e-30), kept]
    if log_step_ratio is not None:
        columns.append(log_step_ratio.astype(accept_prob.dtype))
    return jnp.stack(columns, axis=-1)


def acceptance_statistics(
    sums: Array, num_particles: int, harmonic: bool = False, local: bool = False
) -> tuple[Array, Array, Array]:
    """From the sums of :func:`acceptance_terms` (same flags: ``harmonic``, and
    ``local`` when a log step ratio was given) over ``num_particles``
    particles: the mean acceptance, the harmonic mean acceptance
    ``1 / mean(1 / a_i)`` over the moves that did not diverge (0 without
    ``harmonic`` or when every move diverged; about 0 when one accepted
    nothing) and the mean log step ratio (0 without ``local``).

    HMC's step size follows the harmonic mean (ChEES, Hoffman, Radul, Sountsov
    2021; as blackjax.adaptation.chees_adaptation): it is small as soon as a
    few particles accept little, where the arithmetic mean lets a tail whose
    trajectories fail hide behind a body that accepts nearly everything.
    """
    expected = 1 + 2 * harmonic + local
    if sums.shape[-1] != expected:
        raise ValueError(
            f"acceptance_statistics(harmonic={harmonic}, local={local}) needs the "
            f"{expected} columns of acceptance_terms with the same flags, got "
            f"{sums.shape[-1]}."
        )
    mean = sums[0] / num_particles
    harmonic_mean = jnp.zeros_like(mean)
    if harmonic:
        inverse, kept = sums[1], sums[2]
        harmonic_mean = jnp.where(kept > 0, kept / jnp.maximum(inverse, 1e-30), 0.0)
    log_step_ratio = sums[-1] / num_particles if local else jnp.zeros_like(mean)
    return mean, harmonic_mean, log_step_ratio


def population_moments(
    positions: Array, shift: Array, dense: bool = False, extra: Array | None = None
) -> tuple[Array, ...]:
    """The mean and the variance (diagonal) or covariance (dense) of
    ``positions`` ``(n, d)``, ``n - 1`` in the denominator, from one sum over
    the particles of ``C = positions - shift`` and its squares (diagonal) or
    of the cross products of ``[C, 1]`` (dense). ``shift``: ``(d,)``, a point
    within a few standard deviations of the mean. With ``extra`` ``(n, k)``,
    its column sums too, from the same reduction, as a third value.

    A variance below the worst-case rounding of the sums of ``n`` terms,
    ``r (delta^2 + var)`` with ``r = min(n eps, 0.01)``, is returned as 0 (no
    spread): with ``shift`` within ``1 / sqrt(r)`` standard deviations of the
    mean (45 for 4096 particles in float32, 10 at most) a real spread is never
    cut.
    """
    n, d = positions.shape
    centred = positions - shift
    with_extra = extra is not None
    extra = jnp.zeros((n, 0)) if extra is None else extra
    extra = extra.astype(centred.dtype)
    if dense:
        ones = jnp.ones((n, 1), centred.dtype)
        augmented = jnp.concatenate([centred, ones, extra], 1)
        products = augmented.T @ augmented
        delta = products[d, :d] / n
        second = products[:d, :d]
        squares = jnp.diagonal(second)
        extra_sums = products[d, d + 1 :]
    else:
        sums = jnp.sum(jnp.concatenate([centred, centred**2, extra], axis=1), axis=0)
        delta, squares, extra_sums = sums[:d] / n, sums[d : 2 * d], sums[2 * d :]
    denominator = max(n - 1, 1)
    var = (squares - n * delta**2) / denominator
    rounding = min(n * float(jnp.finfo(positions.dtype).eps), 0.01)
    var = jnp.where(var > rounding * (delta**2 + jnp.abs(var)), var, 0.0)
    if dense:
        cov = (second - n * jnp.outer(delta, delta)) / denominator
        var = cov.at[jnp.diag_indices(d)].set(var)
    if not with_extra:
        return shift + delta, var
    return shift + delta, var, extra_sums


def shrunk_inv_mass(moments: Array, num_particles: int, previous: Array) -> Array:
    """The preconditioner from a population's variance or covariance
    ``moments`` (``population_moments``), shrunk relative to each coordinate's
    own variance, so coordinates of scale 1e-6 and 1e6 in one target each get
    their own. A coordinate with no spread at all keeps its ``previous`` value.
    """
    n = num_particles
    var = jnp.diagonal(moments) if moments.ndim == 2 else moments
    fallback = jnp.diagonal(previous) if previous.ndim == 2 else previous
    spread = var > 0
    if moments.ndim == 2:
        shrunk = (n * moments + 5.0 * 1e-3 * jnp.diag(var)) / (n + 5.0)
        return jnp.where(jnp.outer(spread, spread), shrunk, jnp.diag(fallback))
    return jnp.where(spread, (n + 5.0 * 1e-3) * var / (n + 5.0), fallback)


def low_rank_init(dim: int, rank: int, dtype: DTypeLike = jnp.float32) -> LowRank:
    """``min(rank, dim)`` orthonormal starting directions (fixed, from
    ``PRNGKey(0)``), no correction yet (``lambda = 1``)."""
    rank = min(rank, dim)
    if rank == 0:
        return no_low_rank(dim, dtype)
    start = jax.random.normal(jax.random.PRNGKey(0), (dim, rank), dtype)
    return LowRank(jnp.linalg.qr(start)[0], jnp.ones(rank, dtype))


def low_rank_update(
    positions: Array, mean: Array, variance: Array, diagonal: Array, previous: LowRank
) -> tuple[Array, LowRank]:
    """One orthogonal-iteration step (module docstring) for the widest
    directions of ``positions`` ``(n, d)`` (mean ``mean``, per-coordinate
    ``variance``: ``population_moments``) in the coordinates that ``diagonal``
    (``D``) whitens, one sum over the particles. Returns the diagonal part
    ``c D`` and the directions with their variances relative to ``c``."""
    n, d = positions.shape
    whitened = (positions - mean) / jnp.sqrt(diagonal)
    y = whitened.T @ (whitened @ previous.basis) / max(n - 1, 1)
    rayleigh = jnp.sum(previous.basis * y, axis=0)
    basis = jnp.linalg.qr(y)[0]
    edge = (1.0 + (d / n) ** 0.5) ** 2
    trace = jnp.sum(variance / diagonal)

    def rest(kept):
        count = jnp.sum(kept)
        mean_rest = (trace - jnp.sum(jnp.where(kept, rayleigh, 0.0))) / jnp.maximum(
            d - count, 1
        )
        return jnp.where(count < d, jnp.maximum(mean_rest, 1e-6), 1.0)

    c = rest(rayleigh > edge)
    kept = rayleigh > edge * c
    c = jnp.where(jnp.any(kept), rest(kept), 1.0)
    eigen = jnp.where(kept, rayleigh / c, 1.0)
    low_rank = LowRank(
        basis.astype(previous.basis.dtype), eigen.astype(previous.eigen.dtype)
    )
    return (c * diagonal).astype(diagonal.dtype), low_rank


class TrajectoryState(NamedTuple):
    """``log_length`` (``log T``) is adapted; ``second_moment`` and ``updates``
    are Adam's; ``log_length_sum / count`` is the final window's mean;
    ``floor`` is the length floor ``pi sqrt(lambda_max)``, ``direction``
    the power iteration's latest eigenvector (its next start) and ``centre``
    the whitened population's mean at that estimate (its next shift)."""

    log_length: Array
    second_moment: Array
    updates: Array
    log_length_sum: Array
    count: Array
    floor: Array
    direction: Array
    centre: Array


def trajectory_init(
    length: Array, dim: int, dtype: DTypeLike = jnp.float32
) -> TrajectoryState:
    """``log T_0 = log length``, Adam's moment at 0, an empty final window, no
    floor yet, and the power iteration's start ``(1, ..., 1) / sqrt(dim)``."""
    zero, count = jnp.zeros(()), jnp.zeros((), int)
    direction = jnp.full((dim,), 1.0 / max(dim, 1) ** 0.5, dtype)
    log_length = jnp.log(jnp.asarray(length, float))
    centre = jnp.zeros((dim,), dtype)
    return TrajectoryState(
        log_length, zero, count, zero, count, zero, direction, centre
    )


def length_floor(
    state: TrajectoryState, whitened: Array, extra: Array | None = None
) -> TrajectoryState | tuple[TrajectoryState, Array]:
    """The floor ``pi sqrt(lambda_max)`` of the population ``whitened`` ``(n,
    d)`` by one power iteration on its covariance ``C`` from the previous
    ``direction`` ``v`` (unit), in one sum over the particles:

        C v = (sum_i p_i y_i - ybar sum_i p_i) / (n - 1),
        y_i = x_i - c,  p_i = y_i . v,

    ``ybar`` the mean of the ``y_i``; ``lambda_max ~ |C v|`` (from below,
    exact once ``v`` is the top eigenvector) and the next ``v = C v / |C v|``.
    Called at every tuning iteration, the iteration follows the population as
    it moves, one step each. The shift ``c`` is the previous call's mean (the
    population's own at the first call, one more sum), which keeps the sums
    from cancelling; the new ``centre`` is the population's mean. Over a
    population split over processes: one all-reduce of ``2 d + 1`` values
    (several power steps per call would make one each). With ``extra`` ``(n,
    k)``, its column sums too, from the same reduction, as a second value.
    """
    n, d = whitened.shape
    centre = jax.lax.cond(
        state.floor > 0, lambda: state.centre, lambda: jnp.mean(whitened, 0)
    )
    y = whitened - centre
    p = y @ state.direction
    columns = [y, p[:, None] * y, p[:, None]]
    if extra is not None:
        columns.append(extra.astype(y.dtype))
    sums = jnp.sum(jnp.concatenate(columns, axis=1), 0)
    mean = sums[:d] / n
    times_cov = (sums[d : 2 * d] - mean * sums[2 * d]) / max(n - 1, 1)
    lambda_max = jnp.linalg.norm(times_cov)
    floored = state._replace(
        floor=jnp.asarray(jnp.pi * jnp.sqrt(lambda_max), state.floor.dtype),
        direction=(times_cov / jnp.maximum(lambda_max, 1e-30)).astype(
            state.direction.dtype
        ),
        centre=(centre + mean).astype(state.centre.dtype),
    )
    return floored if extra is None else (floored, sums[2 * d + 1 :])


def trajectory_length(state: TrajectoryState) -> Array:
    """The length the trajectories use: ``max(T, floor)``."""
    return jnp.maximum(jnp.exp(state.log_length), state.floor)


def _chees_kept(end: Array, velocity: Array, weight: Array) -> tuple[Array, ...]:
    """``weight`` 0, ``end`` and ``velocity`` 0 where a trajectory diverged or
    ended non-finite (weight 0 or a non-finite endpoint or velocity)."""
    ok = (weight > 0) & jnp.all(jnp.isfinite(end) & jnp.isfinite(velocity), -1)
    return (
        jnp.where(ok, weight, 0.0),
        jnp.where(ok[:, None], end, 0.0),
        jnp.where(ok[:, None], velocity, 0.0),
    )


def chees_terms(end: Array, velocity: Array, weight: Array) -> Array:
    """Per-particle columns ``(n, d + 1)``, ``[w_i x'_i, w_i]``, whose sums over
    the population give the acceptance-weighted mean endpoint ``m'`` of
    :func:`chees_gradient` (``w_i`` 0 for a divergent or non-finite
    trajectory). Summed in the length floor's reduction (``length_floor(...,
    extra=)``), they cost a split population no all-reduce of their own."""
    w, end, _ = _chees_kept(end, velocity, weight)
    return jnp.concatenate([w[:, None] * end, w[:, None]], axis=1)


def chees_gradient(
    start: Array,
    end: Array,
    velocity: Array,
    weight: Array,
    jittered_length: Array,
    start_mean: Array,
    end_sums: Array,
) -> Array:
    """The acceptance-weighted mean of ``g_i`` above over a population of
    whitened ``start`` and ``end`` positions ``(n, d)`` and end ``velocity``
    (whitened alike); ``weight`` is each acceptance probability, 0 for a
    divergent or non-finite trajectory. ``start_mean`` is the population mean
    ``m`` of ``start`` (the length floor's new ``centre``), ``end_sums`` the
    column sums of :func:`chees_terms` (``end``, ``velocity``, ``weight``):
    what is left is one sum over the particles, a scalar."""
    w, end, velocity = _chees_kept(end, velocity, weight)
    total = jnp.maximum(end_sums[-1], 1e-20)
    end_centred = end - end_sums[:-1] / total
    start_centred = start - start_mean
    g = (
        jittered_length
        * (jnp.sum(end_centred**2, -1) - jnp.sum(start_centred**2, -1))
        * jnp.sum(end_centred * velocity, -1)
    )
    return jnp.sum(w * g) / total


def trajectory_update(
    state: TrajectoryState,
    gradient: Array,
    learning_rate: float,
    in_final_window: Array,
    max_length: Array = jnp.inf,
) -> TrajectoryState:
    """One Adam ascent step on ``log T`` (none for a non-finite gradient),
    then ``T <= max_length``; accumulates the mean inside the final window.

    ``max_length`` is the longest trajectory the moves run, ``max_steps h``
    (as BlackJAX's ``chees_adaptation`` clips ``T``): above it every jittered
    length ``u T`` with ``u T > max_steps h`` runs the same capped trajectory,
    so the gradient no longer measures ``T``, and a ``T`` left to drift up
    would cap most trajectories at one length, undoing the jitter."""
    finite = jnp.isfinite(gradient)
    gradient = jnp.where(finite, gradient, 0.0)
    second = ADAM_DECAY * state.second_moment + (1 - ADAM_DECAY) * gradient**2
    updates = state.updates + 1
    scale = jnp.sqrt(second / (1 - ADAM_DECAY**updates)) + 1e-12
    step = jnp.clip(learning_rate * gradient / scale, -MAX_LOG_UPDATE, MAX_LOG_UPDATE)
    log_length = jnp.minimum(
        state.log_length + jnp.where(finite, step, 0.0), jnp.log(max_length)
    )
    return state._replace(
        log_length=log_length,
        second_moment=jnp.where(finite, second, state.second_moment),
        updates=jnp.where(finite, updates, state.updates),
        log_length_sum=state.log_length_sum
        + jnp.where(in_final_window, log_length, 0.0),
        count=state.count + jnp.where(in_final_window, 1, 0),
    )


def final_trajectory_length(state: TrajectoryState) -> Array:
    """The window mean of ``log T`` (the last value if the window was empty)."""
    return _exp_window_mean(state.log_length, state.log_length_sum, state.count)
