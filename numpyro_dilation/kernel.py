"""``DilationKernel``: the NumPyro adapter over the pure-JAX population sampler.

Chains are particles: one MCMC chain per particle, run with
``chain_method="vectorized"``; the population shares its step size,
preconditioner and schedule. The kernel only builds the potential from the model,
ravels and unravels parameters and presents the population state under the
field names NumPyro and ArviZ expect (docs/design.md section 4).
"""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import Array
from jax.flatten_util import ravel_pytree
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model
from numpyro.util import identity, is_prng_key

from numpyro_dilation import diagnostics
from numpyro_dilation.core import calendar, cpu_lapack, preconditioner, sampler
from numpyro_dilation.core.level_schedule import ScheduleLike
from numpyro_dilation.core.options import SamplerOptions
from numpyro_dilation.core.sharding import (
    particle_sharding,
    shard_particles,
    split,
    to_host,
)

__all__ = ["DilationKernel", "DilationState", "DilationAdaptState"]


class DilationAdaptState(NamedTuple):
    """``step_size``: the adapted ``eps`` (target-space units), one per chain."""

    step_size: Array


class DilationState(NamedTuple):
    """State of the vectorized chains; the fields of ``PER_CHAIN`` have a chain axis.

    - **i**: MCMC's iteration counter (never reset): ``init`` has already run
      the warmup, so the first ``num_warmup`` iterations leave the state as is.
    - **z**: unconstrained sample (target space), a pytree like ``init_params``.
    - **potential_energy**: ``-log p(z)`` (up to a constant).
    - **accept_prob**: acceptance probability of the last move (MALA or HMC).
    - **diverging**: the last proposal (or re-evaluation) had a non-finite
      potential or gradient; the particle was kept where it was.
    - **dilation_level**: the current level ``l`` of the dilation path.
    - **jump_accept_prob**: acceptance probability of the particle's latest
      inter-mode jump (0 before the first).
    - **adapt_state**: ``step_size``.
    - **num_steps**: gradients per particle of the last iteration (the
      leapfrog steps of an HMC move, else 1; with local step sizes the
      gradients the population's step searches computed, over the particle
      count).
    - **sampler_state**: the pure-JAX population state.
    - **rng_key**: the chains' keys; the first is the population's (a single
      key when MCMC hands one back to continue a run).
    """

    i: Array
    z: Any
    potential_energy: Array
    accept_prob: Array
    diverging: Array
    dilation_level: Array
    jump_accept_prob: Array
    adapt_state: DilationAdaptState
    num_steps: Array
    sampler_state: sampler.SamplerState
    rng_key: Array


PER_CHAIN = (
    "i",
    "z",
    "potential_energy",
    "accept_prob",
    "diverging",
    "dilation_level",
    "jump_accept_prob",
    "adapt_state",
    "num_steps",
)


def _is_concrete(value: Any) -> bool:
    """Not a tracer: a hyperparameter that can be checked now (under ``jax.jit``
    a traced one is checked by nothing, as NumPyro's kernels do)."""
    return not isinstance(value, jax.core.Tracer)


def _population_key(rng_key: Array) -> Array:
    """The population's key: the first of the chains' keys, or the one key
    MCMC hands back when a run continues (``numpyro.infer.mcmc`` takes
    ``rng_key[0]`` for ensemble kernels)."""
    return rng_key if is_prng_key(rng_key) else rng_key[0]


def _with_population_key(rng_key: Array, population_key: Array) -> Array:
    return population_key if is_prng_key(rng_key) else rng_key.at[0].set(population_key)


def _value_and_grad(f: Callable, forward_mode: bool) -> Callable:
    if forward_mode:

        def fwd(x):
            return f(x), jax.jacfwd(f)(x)

        return fwd
    return jax.value_and_grad(f)


STEPS = ("auto", "mala", "hmc", "ula")
"""The moves ``DilationKernel(step=...)`` knows."""


def _with_move(
    options: SamplerOptions, hmc: bool, target_accept_prob: float | None
) -> SamplerOptions:
    """``options`` with HMC moves at ``l = 1`` or not, and the acceptance the
    step size adapts to (default 0.651 for HMC, 0.574 for MALA, 0.9 for ULA)."""
    if target_accept_prob is None:
        target_accept_prob = 0.651 if hmc else 0.574 if options.adjusted else 0.9
    return options._replace(hmc=hmc, target_accept_prob=target_accept_prob)


def _flat_layout(init_params: Any) -> tuple[Callable, int, Any]:
    """The unravel function of one chain's parameters, their flat size and
    floating dtype, from the shapes alone (nothing is computed or compiled)."""
    found = {}

    def first_flat(params):
        flat, found["unravel"] = ravel_pytree(jax.tree.map(lambda x: x[0], params))
        return flat

    flat = jax.eval_shape(first_flat, init_params)
    dtype = flat.dtype if jnp.issubdtype(flat.dtype, jnp.floating) else float
    return found["unravel"], flat.shape[0], jnp.dtype(jnp.result_type(dtype))


def _flatten(init_params: Any, num_chains: int, dtype: Any) -> Array:
    """``(num_chains, d)``: each chain's parameters raveled (``d = 0`` for a
    model without latent sites)."""
    if not jax.tree.leaves(init_params):
        return jnp.zeros((num_chains, 0), dtype)
    return jax.vmap(lambda p: ravel_pytree(p)[0])(init_params).astype(dtype)


def _raise_for_discrete_sites(model, model_args, model_kwargs, err) -> None:
    """Turn NumPyro's failure on discrete latent sites into an error naming the fix."""
    trace = numpyro.handlers.trace(
        numpyro.handlers.seed(model, jax.random.PRNGKey(0))
    ).get_trace(*model_args, **model_kwargs)
    discrete = [
        name
        for name, site in trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and site["fn"].support.is_discrete
    ]
    if discrete:
        raise ValueError(
            f"DilationKernel samples continuous latent sites; {discrete} are "
            "discrete and NumPyro cannot enumerate them here "
            f"({type(err).__name__}: {err}). Marginalise them out of the model "
            "(sum the likelihood over their values, e.g. with MixtureSameFamily), "
            "or, for sites with finite support, mark them "
            "infer={'enumerate': 'parallel'} and install funsor "
            "(pip install funsor) so that NumPyro sums them out."
        ) from err


class DilationKernel(MCMCKernel):
    """Dilation-path Langevin sampler (Chehab & Korba 2024, arXiv 2406.14040).

    Particles start at Dirac centres and are annealed to the posterior along the
    dilation path ``X_l = c + sqrt(l) (X - c)``, whose score
    ``grad log p_l(y) = l^(-1/2) grad log p(c + (y - c)/sqrt(l))`` is in closed
    form; they are then tuned at ``l = 1`` and, by default, at the last warmup
    iteration the modes of the population are found and their weights corrected
    (``rebalance=True``). After warmup everything is frozen and each iteration is
    either one exact move (MALA, or an HMC trajectory: ``step``) or, with
    probability ``jump_prob`` (0.5; one coin for the population, drawn
    independently of the state), an exact Metropolis-Hastings jump from the
    mixture fitted to the modes (none while a single mode is found). Both leave
    the posterior invariant, so with any step but ``"ula"`` the sampling phase
    targets it exactly (docs/multimodal.md).

    Each MCMC chain is one particle: run it with ``num_chains`` particles and
    ``chain_method="vectorized"``.

    At the end of warmup the kernel checks the population and raises a
    ``DilationWarning`` when the acceptance collapsed, a sticky region holds
    particles that reject nearly every proposal while the others accept (a region
    whose scale is far below the rest, such as a funnel's neck, under-sampled at
    the shared step size), many proposals diverged, particles are stuck, or the
    population is still moving (``numpyro_dilation.diagnostics``);
    ``check_run(mcmc)`` repeats the checks over the sampling phase.

    :param model: NumPyro model (exactly one of ``model`` / ``potential_fn``).
    :param potential_fn: ``-log density`` of the parameters; then pass
        ``init_params`` with a leading ``num_chains`` axis to ``MCMC.run``.
    :param step: the move. ``"mala"``: one exact MALA step, the paper's
        setting made exact; ``"ula"``: the paper's unadjusted step, biased at
        any finite step size; ``"hmc"``: MALA along the path, then at ``l =
        1`` exact HMC trajectories whose length is tuned from the population
        (ChEES, Hoffman et al. 2021) and frozen with the step size after
        warmup; each costs ``num_steps`` gradients (an extra field, as
        NumPyro's HMC), for correlated posteriors where one MALA step moves
        too little. ``"auto"`` (default): ``"hmc"`` when the preconditioner is
        dense (``dense_mass``) and the mode fit at the end of annealing finds
        one mode, else ``"mala"`` (with jumps between the modes found): the
        trajectories need the whitening of a dense preconditioner (with a
        diagonal one their length can reach hundreds of gradients), and on a
        multimodal population ChEES lengthens them to its inter-mode spread,
        where the jumps move the mass (docs/when-to-use.md).
    :param step_size: initial ``eps`` (> 0): the Langevin step in target space;
        on the path the step is ``h = eps * l``. Where HMC moves take over at
        the end of annealing on a population of one mode, their leapfrog
        step starts at ``sqrt(2 h)`` (one leapfrog step of that size is the
        MALA step ``h``).
    :param step_size_selection: ``"shared"`` (default): one step size for all
        particles; ``"local"``: at ``l = 1`` (tuning and sampling) each move,
        MALA or HMC, chooses its particle's step from the shared one by up to
        8 halvings or doublings until its acceptance ratio falls in a random
        band, and is accepted only if the same search from the proposal gives
        the same step (AutoStep, Liu et al. 2025; autoMALA, Biron-Lattes et al.
        2024): exact, for posteriors whose scale changes across the support
        (funnels, hierarchical scales near zero). Each try costs a move's
        gradients; ``num_steps`` records those the population computed, per
        particle.
    :param adapt_step_size: adapt ``eps`` towards ``target_accept_prob``.
    :param target_accept_prob: mean acceptance probability targeted by the
        step-size adaptation; default 0.574 for MALA (Roberts & Rosenthal 1998),
        0.651 for HMC (Beskos et al. 2013; with ``"auto"``, from the start
        where HMC may follow) and 0.9 for ULA, whose bias and stability need
        smaller steps.
    :param adapt_mass_matrix: estimate the preconditioner from the population
        while tuning at ``l = 1``.
    :param dense_mass: dense (``True``) or diagonal (``False``) preconditioner;
        ``None`` (default): dense when the preconditioner is adapted and there
        are at least 5 particles per dimension where HMC moves may run
        (``step="auto"`` or ``"hmc"``: ``num_chains >= 5 d``), 10 with MALA
        or ULA (``num_chains >= 10 d``), where the population estimates a
        covariance well enough for the move
        (``core.preconditioner.dense_by_default``), else diagonal.
    :param low_rank_mass: with a diagonal preconditioner, also whiten the
        population's ``low_rank_mass`` widest directions (in the coordinates
        the diagonal whitens; those wider than noise alone makes them), at
        ``O(d r)`` per gradient: for strongly correlated posteriors with more
        dimensions than a fifth of the particles (a tenth with MALA), where the
        dense one is not the default. Default 0 (diagonal only); with
        ``dense_mass=None`` a positive value asks for the diagonal
        preconditioner whatever the particle count (so ``step="auto"`` runs
        MALA), and ``dense_mass=True`` refuses it.
    :param schedule: ``"geometric"``, a callable ``u -> l(u)`` on [0, 1], or an
        increasing array of levels ending at 1.
    :param lambda_min: first level of the geometric schedule.
    :param num_levels: number of levels (default: one per 5 annealing iterations).
    :param anneal_fraction: share of ``num_warmup`` spent annealing; the rest
        tunes at ``l = 1``.
    :param center: the Dirac centres: ``"init"`` (each particle's own initial
        point, default), ``"shared"`` (one centre, the mean of the initial
        points: the paper's setting), or an array of unconstrained values,
        shape ``(d,)`` or ``(num_chains, d)``.
        The centres decide which modes are found: a particle ends in a mode
        near its centre, so spread the initial points over the region where
        modes may lie (``init_strategy=init_to_sample`` draws them from the
        prior), see docs/multimodal.md.
    :param rebalance: at the last warmup iteration, estimate each mode's mass
        by importance sampling and resample particles between modes.
    :param jump_prob: probability per iteration, from the end of annealing on,
        that all particles make an exact Metropolis-Hastings jump from the
        mixture fitted to the modes instead of a Langevin step (0 disables;
        no jump is made while a single mode is found).
    :param max_modes: number of clusters fitted to the particles (at most that
        many modes are told apart).
    :param init_strategy: per-site initialisation (NumPyro's), for ``model``.
    :param forward_mode_differentiation: use forward-mode autodiff.
    :param shard_particles: split the particles evenly over all devices
        (``jax.devices()``: every GPU, and every host's in a multi-host JAX
        cluster) so that each computes its share of the gradients; the
        population statistics are reduced across devices and the draws are
        those of one device up to the order of floating-point sums
        (``numpyro_dilation.core.sharding``). ``None`` (default): whenever there is
        more than one device and ``num_chains`` is a multiple of their number;
        ``True``: always (an error otherwise); ``False``: never.

    **Warmup.** ``init`` runs the whole warmup (the calendar of
    ``numpyro_dilation.core.calendar``) in programs compiled on their own (a
    loop for the annealing and, after the mode fit that ends it, for the
    tuning: the same loop when a single mode was found, one with the jumps
    and the rebalancing otherwise), then checks the population and issues
    its ``DilationWarning`` from the
    user's ``mcmc.run``; the program of the sampling phase holds only the
    sampling moves. The first ``num_warmup`` iterations of MCMC's own loop then
    leave the state as it is: the progress bar passes over them at once, and
    ``MCMC.warmup(..., collect_warmup=True)`` collects the post-warmup state
    ``num_warmup`` times. ``mcmc.run(key)`` draws the same as
    ``mcmc.warmup(key)`` then ``mcmc.run(mcmc.post_warmup_state.rng_key)``.

    **Memory.** The state is a few ``num_chains x d`` arrays. ``MCMC`` keeps
    ``num_chains x num_samples / thinning`` draws (plus one value per chain per
    draw for each default field), and holds them twice for a moment at the end
    of a run while it puts chains first. To keep a large population's draws
    small, thin them: ``MCMC(..., thinning=10)`` keeps every tenth draw of every
    particle (benchmarks/memory.py measures the peak, see docs/benchmarks.md).

    **Example**

    .. code-block:: python

        mcmc = MCMC(DilationKernel(model), num_warmup=500, num_samples=200,
                    num_chains=1024, chain_method="vectorized")
        mcmc.run(jax.random.PRNGKey(0), data)
    """

    sample_field = "z"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        *,
        step: str = "auto",
        step_size: float = 0.1,
        step_size_selection: str = "shared",
        adapt_step_size: bool = True,
        target_accept_prob: float | None = None,
        adapt_mass_matrix: bool = True,
        dense_mass: bool | None = None,
        low_rank_mass: int = 0,
        schedule: ScheduleLike = "geometric",
        lambda_min: float = 1e-4,
        num_levels: int | None = None,
        anneal_fraction: float = 0.5,
        center: str | Array = "init",
        rebalance: bool = True,
        jump_prob: float = 0.5,
        max_modes: int = 64,
        init_strategy: Callable = init_to_uniform,
        forward_mode_differentiation: bool = False,
        shard_particles: bool | None = None,
    ):
        if (model is None) == (potential_fn is None):
            raise ValueError(
                "DilationKernel needs exactly one of `model` or `potential_fn`."
            )
        if step not in STEPS:
            raise ValueError(
                f"step must be one of {', '.join(map(repr, STEPS))}, got {step!r}."
            )
        if step_size_selection not in ("shared", "local"):
            raise ValueError(
                "step_size_selection must be 'shared' or 'local', got "
                f"{step_size_selection!r}."
            )
        if step_size_selection == "local" and step == "ula":
            raise ValueError(
                "step_size_selection='local' needs an exact move (its reversal "
                "check is part of the accept test): use step='mala' or 'hmc'."
            )
        if _is_concrete(step_size) and not (np.isfinite(step_size) and step_size > 0):
            raise ValueError(
                f"step_size must be a positive number, got {step_size}; "
                "it is the initial Langevin step (default 0.1)."
            )
        if (
            target_accept_prob is not None
            and _is_concrete(target_accept_prob)
            and not 0.0 < target_accept_prob < 1.0
        ):
            raise ValueError(
                f"target_accept_prob must be in (0, 1), got {target_accept_prob}."
            )
        if not 0.0 <= anneal_fraction <= 1.0:
            raise ValueError(
                f"anneal_fraction must be in [0, 1], got {anneal_fraction}."
            )
        if num_levels is not None and num_levels < 1:
            raise ValueError(
                f"num_levels must be a positive integer, got {num_levels}."
            )
        if not 0.0 <= jump_prob <= 1.0:
            raise ValueError(
                f"jump_prob must be in [0, 1], got {jump_prob}; 0 turns jumps off."
            )
        if int(max_modes) != max_modes or max_modes < 1:
            raise ValueError(f"max_modes must be a positive integer, got {max_modes}.")
        if dense_mass is not None and not isinstance(dense_mass, bool | np.bool_):
            raise ValueError(
                f"dense_mass must be True, False or None (dense when num_chains >= "
                f"10 x the dimension), got {dense_mass!r}. NumPyro's "
                "structured form (a list of tuples of sites) is not supported: the "
                "preconditioner is estimated from the population, diagonal or "
                "dense over every latent site; pass dense_mass=True for a dense "
                "one (it needs num_chains well above the dimension)."
            )
        if (
            isinstance(low_rank_mass, bool)
            or int(low_rank_mass) != low_rank_mass
            or low_rank_mass < 0
        ):
            raise ValueError(
                f"low_rank_mass must be a non-negative integer (the number of "
                f"directions the diagonal preconditioner also whitens; 0: none), "
                f"got {low_rank_mass!r}."
            )
        if dense_mass is True and low_rank_mass > 0:
            raise ValueError(
                "low_rank_mass adds directions to a diagonal preconditioner, and "
                "dense_mass=True asks for a dense one, which whitens every "
                "direction: pass one of them."
            )
        if isinstance(center, str) and center not in ("init", "shared"):
            raise ValueError(
                f"center={center!r} is not known: use 'init', 'shared' or an array."
            )
        self._model = model
        self._potential_fn = potential_fn
        self._step_size = step_size
        self._schedule = schedule
        self._lambda_min = lambda_min
        self._num_levels = num_levels
        self._anneal_fraction = anneal_fraction
        self._center = center
        self._init_strategy = init_strategy
        self._forward_mode = forward_mode_differentiation
        self._shard = shard_particles
        self._dense_mass = dense_mass
        self._step = step
        self._target_accept_prob = target_accept_prob
        self._options = _with_move(
            SamplerOptions(
                adjusted=step != "ula",
                local_step_size=step_size_selection == "local",
                adapt_step_size=adapt_step_size,
                adapt_inv_mass=adapt_mass_matrix,
                dense_mass=bool(dense_mass),  # dense_mass=None: decided in init
                rebalance=bool(rebalance),
                jump_prob=float(jump_prob),
                max_modes=int(max_modes),
                low_rank=int(low_rank_mass),
            ),
            step == "hmc",
            target_accept_prob,
        )
        self._several_modes_options = self._options
        self._potential_fn_gen = None
        self._postprocess_fn_gen = None
        self._unravel_fn = None
        self._sequential = False
        self._sample_fn = None
        self._calendar = None
        self._num_particles = None
        self._sampling_options = self._options

    @property
    def model(self) -> Callable | None:
        return self._model

    @property
    def move(self) -> diagnostics.Move | None:
        """What moves the particles after warmup (HMC or one MALA/ULA step, a
        dense preconditioner, step sizes chosen per particle), as ``init``
        settled it (``step="auto"``, ``dense_mass=None``); ``None`` before
        ``init``. ``check_run`` reads it for its advice."""
        if self._num_particles is None:
            return None
        options = self._sampling_options
        return diagnostics.Move(
            options.hmc, options.dense_mass, options.local_step_size
        )

    @property
    def is_ensemble_kernel(self) -> bool:
        return True

    @property
    def default_fields(self) -> tuple[str, ...]:
        return (
            "z",
            "potential_energy",
            "accept_prob",
            "diverging",
            "adapt_state.step_size",
            "dilation_level",
            "jump_accept_prob",
        )

    def get_diagnostics_str(self, state: DilationState) -> str:
        accept = float(jnp.mean(state.accept_prob))
        level = float(jnp.mean(state.dilation_level))
        eps = float(jnp.mean(state.adapt_state.step_size))
        return f"acc. prob={accept:.2f}, l={level:.3g}, eps={eps:.3g}"

    def postprocess_fn(self, args, kwargs):
        if self._postprocess_fn_gen is None:
            return identity
        return self._postprocess_fn_gen(*args, **kwargs)

    def _logdensity_and_grad(self, model_args, model_kwargs) -> Callable:
        if self._model is not None:
            potential_fn = self._potential_fn_gen(*model_args, **model_kwargs)
        else:
            potential_fn = self._potential_fn
        unravel = self._unravel_fn
        fn = _value_and_grad(lambda x: -potential_fn(unravel(x)), self._forward_mode)
        return cpu_lapack.sequential_under_vmap(fn) if self._sequential else fn

    def _initial_params(self, keys, init_params, model_args, model_kwargs):
        num_chains = keys.shape[0]
        if self._model is not None:
            try:
                info = initialize_model(
                    keys,
                    self._model,
                    init_strategy=self._init_strategy,
                    dynamic_args=True,
                    model_args=model_args,
                    model_kwargs=model_kwargs,
                    forward_mode_differentiation=self._forward_mode,
                )
            except (ImportError, RuntimeError) as err:
                _raise_for_discrete_sites(self._model, model_args, model_kwargs, err)
                raise
            self._potential_fn_gen = info.potential_fn
            self._postprocess_fn_gen = info.postprocess_fn
            if not jax.tree.leaves(info.param_info.z):
                diagnostics.warn(
                    "The model has no latent sample site: there is nothing to "
                    "sample (every site is observed or deterministic); the draws "
                    "hold its deterministic sites only, as NUTS's do."
                )
                return {}
            if init_params is None:
                init_params = info.param_info.z
        elif init_params is None:
            raise ValueError(
                "With potential_fn, pass init_params to MCMC.run, with a leading "
                f"axis of size num_chains={num_chains}."
            )
        leaves = jax.tree.leaves(init_params)
        if not leaves:
            raise ValueError("init_params is empty: there is nothing to sample.")
        bad = [
            jnp.shape(x)
            for x in leaves
            if jnp.ndim(x) < 1 or jnp.shape(x)[0] != num_chains
        ]
        if bad:
            raise ValueError(
                f"init_params must have a leading axis of size num_chains={num_chains}"
                f" on every leaf; got shapes {bad}."
            )
        return init_params

    def _centers(self, flat: Array) -> Array:
        if isinstance(self._center, str):
            if self._center == "shared":
                return jnp.broadcast_to(jnp.mean(flat, axis=0), flat.shape)
            return flat
        center = jnp.asarray(self._center, flat.dtype)
        if center.shape not in (flat.shape[1:], flat.shape):
            raise ValueError(
                f"center must have shape {flat.shape[1:]} (one shared centre) or "
                f"{flat.shape} (one per chain) in unconstrained space; "
                f"got {center.shape}."
            )
        return jnp.broadcast_to(center, flat.shape)

    def init(
        self,
        rng_key: Array,
        num_warmup: int,
        init_params: Any = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
    ) -> DilationState:
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if is_prng_key(rng_key):
            raise ValueError(
                "DilationKernel runs its chains as one population of particles, "
                "so MCMC must hand it one key per chain: it got a single PRNG key "
                "(num_chains=1, or chain_method='sequential' or 'parallel', which "
                "hand the kernel one chain at a time). Use MCMC(..., "
                "num_chains=N, chain_method='vectorized') with N >= 2 * dim "
                "particles (1024 is typical)."
            )
        keys = rng_key
        if num_warmup < diagnostics.MIN_WARMUP:
            diagnostics.warn(
                f"num_warmup={num_warmup} is too short for DilationKernel to anneal "
                "the particles and adapt the step size and preconditioner, and for "
                "the end-of-warmup checks: raise num_warmup to at least "
                f"{diagnostics.MIN_WARMUP} (500 is typical)."
            )
        init_params = self._initial_params(keys, init_params, model_args, model_kwargs)
        num_chains = keys.shape[0]
        self._unravel_fn, dim, dtype = _flat_layout(init_params)
        self._sequential = (
            False  # decided anew for this model, from its batch-free form
        )
        logdensity_and_grad = self._logdensity_and_grad(model_args, model_kwargs)
        self._sequential = cpu_lapack.needs_sequential(
            logdensity_and_grad, jax.ShapeDtypeStruct((dim,), dtype)
        )
        if self._sequential:
            logdensity_and_grad = cpu_lapack.sequential_under_vmap(logdensity_and_grad)
        if self._dense_mass is None:
            dense = (
                self._options.adapt_inv_mass
                and self._options.low_rank == 0  # a low rank asks for diagonal
                and preconditioner.dense_by_default(
                    dim, num_chains, hmc=self._step in ("auto", "hmc")
                )
            )
            self._options = self._options._replace(dense_mass=dense)
        self._calendar = calendar.build_calendar(
            num_warmup,
            self._options,
            anneal_fraction=self._anneal_fraction,
            num_levels=self._num_levels,
            schedule=self._schedule,
            lambda_min=self._lambda_min,
            dtype=dtype,
        )
        self._num_particles = num_chains

        def dilation_init(init_params, run_calendar, step_size):
            flat = _flatten(init_params, num_chains, dtype)
            return sampler.init(
                self._centers(flat),
                logdensity_and_grad,
                run_calendar,
                self._options,
                step_size,
            )

        pop = jax.jit(dilation_init)(init_params, self._calendar, self._step_size)
        traced = not _is_concrete(pop.particles.logdensity)
        logdensity = None if traced else np.asarray(pop.particles.logdensity)
        if logdensity is not None and not np.all(np.isfinite(logdensity)):
            idx = np.flatnonzero(~np.isfinite(logdensity))[:10]
            raise ValueError(
                f"The potential is not finite at the initial centres of chains "
                f"{idx.tolist()}: pass init_params (or center) inside the support."
            )
        self._sample_fn = self.sample
        fits = [
            int(t) for t in sampler.fit_iterations(self._calendar, dim, self._options)
        ]
        self._several_modes_options = self._options
        if self._step == "auto":
            # HMC moves where the population is one mode and the preconditioner
            # dense, MALA (and jumps) where the fit that ends the annealing
            # finds several modes. Under a JAX transformation the host cannot
            # read that fit's mode count: MALA then, unless no fit is made.
            target = self._target_accept_prob
            hmc = self._options.dense_mass and not (traced and fits)
            self._several_modes_options = _with_move(self._options, False, target)
            self._options = _with_move(self._options, hmc, target)
        sharding = None if traced else self._particle_sharding(num_chains)
        if sharding is not None:
            pop = shard_particles(pop, sharding)
        state, statistics, num_modes = self._warm_up(
            pop, keys, num_warmup, fits, model_args, model_kwargs
        )
        if not traced:
            # The calendar the warmup ran (its mode fits), for num_evaluations.
            self._calendar = jax.tree.map(np.asarray, state.sampler_state.calendar)
        one_mode = _is_concrete(num_modes) and int(num_modes) < 2
        if self._step == "auto" and fits and not one_mode:
            self._options = self._several_modes_options  # no HMC move ran
        self._sampling_options = self._options
        if one_mode:
            # No jump can happen (one mode or none was found): the sampling
            # program leaves the jump out, with the same draws.
            self._sampling_options = sampler.unimodal(self._options)
        diagnostics.warn_end_of_warmup(to_host(statistics), self.move)
        if sharding is None:
            return state
        return state._replace(
            **split({name: getattr(state, name) for name in PER_CHAIN}, sharding)
        )

    def _warm_up(self, pop, keys, num_warmup, fits, model_args, model_kwargs):
        """The ``num_warmup`` warmup iterations, compiled on their own: the
        program of the sampling phase (``sample``) holds none of their work.

        Compiled: a loop of ``sampler.step`` over a range of iterations,
        without its mode fits, and the mode fit (``sampler.fit_modes``), which
        this host-side sequence calls at the calendar's fit iterations
        ``fits`` (``sampler.fit_iterations``, computed once by ``init``). Until
        the first fit the loop is ``sampler.unimodal``'s (no jumps or
        rebalancing can happen yet), and when the first fit ends the annealing
        with one mode (``calendar.keeps_one_mode``) it stays so to the end:
        a unimodal run compiles one loop and one fit, none of the jumps and
        the rebalancing (nor the jumps' 1-D mixtures, ``sampler.fit_marginals``,
        a program of their own after a fit that found several modes).
        Otherwise the loop with them runs between the later fits, for tuning
        iterations only (``sampler.TUNE``). Where the tuning moves otherwise
        than the annealing (HMC moves or local steps) the annealing's
        iterations have a loop of their own (``sampler.ANNEAL``): a run that
        finds several modes then compiles none of that move. The same draws
        as one loop of ``sampler.step`` over the warmup (up to the rounding of
        programs that XLA fuses otherwise).

        Returns the state after warmup, its population key advanced as
        ``sample`` advances it (one split per iteration: the same draws as one
        iteration at a time), the end-of-warmup check's statistics and the
        number of modes found.
        """
        fn = self._logdensity_and_grad(model_args, model_kwargs)

        @partial(jax.jit, static_argnums=(0, 1))
        def dilation_warmup(options, phase, carry, start, stop):
            def body(_, carry):
                pop, reference, key = carry
                key, step_keys = sampler.iteration_keys(key)
                pop, _ = sampler.step_from_keys(
                    step_keys, pop, fn, options, fit=False, phase=phase
                )
                if phase != sampler.ANNEAL:  # the check's window is in the tuning
                    reference = diagnostics.track(pop, reference)
                return pop, reference, key

            return jax.lax.fori_loop(start, stop, body, carry)

        num_anneal = int(self._calendar.num_anneal)

        def run(options, phase, carry, start, stop):
            # A TUNE loop leaves the annealing's iterations to a loop of their own.
            if phase == sampler.TUNE and start < num_anneal:
                anneal = min(stop, num_anneal)
                carry = dilation_warmup(options, sampler.ANNEAL, carry, start, anneal)
                start = anneal
            if start < stop:
                carry = dilation_warmup(options, phase, carry, start, stop)
            return carry

        @jax.jit
        def dilation_mode_fit(carry):
            pop, reference, key = carry
            # The keys that body gives this iteration's step: the fit's draws
            # are those of the step's own fit (sampler.step_from_keys with
            # fit=True).
            step_keys = sampler.iteration_keys(key)[1]
            pop = sampler.fit_modes(
                step_keys.modes, pop, fn, self._options, marginals=False
            )
            return (pop, reference, key), pop.modes.num_modes

        @jax.jit
        def dilation_marginals(carry):
            # The one-coordinate jumps' mixtures of the fit just made, compiled
            # only where it found several modes (one mode makes no jump).
            pop, reference, key = carry
            return sampler.fit_marginals(pop), reference, key

        def fit(carry):
            return dilation_marginals(dilation_mode_fit(carry)[0])

        @jax.jit
        def dilation_end_of_warmup(carry):
            pop, reference, key = carry
            state = self._view(pop, jnp.zeros(keys.shape[0], int), keys.at[0].set(key))
            statistics = diagnostics.end_of_warmup(pop, reference)
            return state, statistics, pop.modes.num_modes

        carry = (pop, diagnostics.init_reference(pop), keys[0])
        unimodal = sampler.unimodal(self._options)
        # Where the tuning moves otherwise than the annealing (HMC moves or
        # local steps), the annealing runs in a loop of its own: a run whose
        # first fit finds several modes (MALA and jumps from there) then never
        # compiles that move. Otherwise one loop serves both phases.
        phase = None
        if self._options.hmc or self._options.local_step_size:
            phase = sampler.TUNE
        first = fits[0] if fits else num_warmup
        carry = run(unimodal, phase, carry, 0, first)
        if fits:
            carry, num_modes = dilation_mode_fit(carry)

            def one_mode():
                return run(unimodal, phase, carry, first, num_warmup)

            def several_modes():
                tuned = dilation_marginals(carry)
                several = self._several_modes_options
                for start, stop in zip(fits, fits[1:], strict=False):
                    tuned = fit(run(several, sampler.TUNE, tuned, start, stop))
                return run(several, sampler.TUNE, tuned, fits[-1], num_warmup)

            if _is_concrete(num_modes):
                num_modes = int(num_modes)  # the host decides, nothing compiles
            keep = calendar.keeps_one_mode(self._calendar, first, num_modes)
            if _is_concrete(keep):
                carry = one_mode() if keep else several_modes()
            else:
                carry = jax.lax.cond(keep, one_mode, several_modes)
        return dilation_end_of_warmup(carry)

    def num_evaluations(
        self, num_iterations: int, state: DilationState | None = None
    ) -> int:
        """Log-density (and gradient) evaluations of the population in its
        first ``num_iterations`` iterations, mode fits included (after ``init``).
        With HMC moves (``step="hmc"``, or ``"auto"`` where it chose them) or
        ``step_size_selection="local"`` pass the state after them
        (``mcmc.last_state``): a move's gradients vary with the iteration."""
        if self._calendar is None:
            raise ValueError("num_evaluations needs the run's calendar: call init.")
        if (self._options.hmc or self._options.local_step_size) and state is None:
            raise ValueError(
                "num_evaluations with HMC moves (step='hmc', or step='auto' on "
                "one mode with a dense preconditioner) or "
                "step_size_selection='local' needs the run's state: pass "
                "state=mcmc.last_state (the gradients of a move vary)."
            )
        num_gradients = None if state is None else state.sampler_state.num_gradients
        return sampler.num_evaluations(
            self._calendar,
            self._num_particles,
            num_iterations,
            self._options,
            num_gradients,
        )

    def _particle_sharding(self, num_particles: int):
        if self._shard is False or num_particles == 1:
            return None
        sharding = particle_sharding(num_particles)
        num_devices = jax.device_count()
        if sharding is None and num_devices > 1:
            message = (
                f"num_chains={num_particles} particles do not split evenly over "
                f"{num_devices} devices: pass a multiple of {num_devices} to use "
                "them all"
            )
            if self._shard:
                raise ValueError(message + " (shard_particles=True).")
            diagnostics.warn(message + "; running on one device.", UserWarning)
        return sharding

    def _view(
        self, pop: sampler.SamplerState, i: Array, rng_key: Array
    ) -> DilationState:
        n = pop.particles.position.shape[0]
        x = sampler.target_position(pop)
        step_size = jnp.exp(pop.step_size.log_step_size)
        return DilationState(
            i=i,
            z=jax.vmap(self._unravel_fn)(x),
            potential_energy=sampler.target_potential(pop),
            accept_prob=pop.particles.accept_prob,
            diverging=pop.particles.diverging,
            dilation_level=jnp.full(n, pop.lam),
            jump_accept_prob=pop.particles.jump_accept_prob,
            adapt_state=DilationAdaptState(jnp.full(n, step_size, x.dtype)),
            num_steps=jnp.full(n, pop.num_steps),
            sampler_state=pop,
            rng_key=rng_key,
        )

    def sample(
        self, state: DilationState, model_args: tuple, model_kwargs: dict
    ) -> DilationState:
        """One MCMC iteration. ``init`` ran the warmup, so while MCMC counts its
        warmup iterations (``i < num_warmup``) nothing moves; after, one
        sampling iteration of the population (``sampler.sample_step``)."""

        def wait(state):
            return state._replace(i=state.i + 1)

        def move(state):
            fn = self._logdensity_and_grad(model_args, model_kwargs or {})
            population_key = _population_key(state.rng_key)
            population_key, step_keys = sampler.iteration_keys(population_key)
            pop, _ = sampler.sample_step(
                step_keys, state.sampler_state, fn, self._sampling_options
            )
            return self._view(
                pop, state.i + 1, _with_population_key(state.rng_key, population_key)
            )

        num_warmup = state.sampler_state.calendar.num_warmup
        return jax.lax.cond(state.i[0] < num_warmup, wait, move, state)
