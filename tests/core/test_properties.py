"""Property-based tests (hypothesis) of the pure-JAX core.

Every property is checked against an independent computation (autodiff, SciPy's
Gaussian densities, NumPy linear algebra), for float32 and float64. Hypothesis
runs derandomized: the examples are the same on every run. Tolerances are a few
hundred units of the working precision scaled by the size of the quantities
compared (float32: ``rtol=1e-4``; float64: ``rtol=1e-9``).
"""

import contextlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from numpyro_dilation.core import (
    adaptation,
    calendar,
    dilation_path,
    langevin,
    level_schedule,
    sampler,
)
from numpyro_dilation.core import hmc as hmc_move
from numpyro_dilation.core.options import SamplerOptions
from numpyro_dilation.core.preconditioner import (
    LowRank,
    dense_by_default,
    identity,
    make_preconditioner,
)

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)
DTYPES = ["float32", "float64"]
# float32 arrays with x64 on: a float64 step size must not promote them.
MODES = [("float32", False), ("float64", True), ("float32", True)]
RTOL = {"float32": 1e-4, "float64": 1e-9}

# Few distinct shapes: each new shape costs a compilation.
dims = st.sampled_from([1, 4])
seeds = st.integers(0, 2**31 - 1)
levels = st.floats(1e-4, 1.0)


@contextlib.contextmanager
def precision(dtype: str, x64: bool | None = None):
    """float64 needs JAX's x64 mode; float32 runs without it unless ``x64``."""
    with jax.enable_x64(dtype == "float64" if x64 is None else x64):
        yield jnp.dtype(dtype)


def student_t_params(key, d, dtype):
    """Parameters ``(A, m)`` of a correlated multivariate Student-t (5 dof)."""
    k1, k2 = jax.random.split(key)
    a = jnp.eye(d, dtype=dtype) + 0.3 * jax.random.normal(k1, (d, d), dtype)
    return a, jax.random.normal(k2, (d,), dtype)


def student_t(params, x):
    """A non-Gaussian smooth log density: ``-(5 + d)/2 log(1 + |A(x - m)|^2 / 5)``."""
    a, m = params
    r = a @ (x - m)
    return -0.5 * (5.0 + x.shape[-1]) * jnp.log1p(jnp.sum(r**2) / 5.0)


def student_t_value_and_grad(params):
    return jax.value_and_grad(partial(student_t, params))


# The helpers below are jitted at module level and take the target's parameters
# as arguments: they compile once per shape and dtype, not once per example.


@jax.jit
def _scores(params, y, c, lam):
    f = partial(student_t, params)
    autodiff = jax.grad(lambda yi: dilation_path.logdensity(f, yi, c, lam))(y)
    closed_form = dilation_path.score(f, y, c, lam)
    value, both = dilation_path.logdensity_and_score(jax.value_and_grad(f), y, c, lam)
    return autodiff, closed_form, both, value, dilation_path.logdensity(f, y, c, lam)


@jax.jit
def _at_level_one(params, y, c):
    f = partial(student_t, params)
    one = jnp.ones((), y.dtype)
    return (
        dilation_path.to_target(y, c, one),
        dilation_path.to_path(y, c, one),
        dilation_path.logdensity(f, y, c, one),
        f(y),
        dilation_path.score(f, y, c, one),
        jax.grad(f)(y),
    )


@jax.jit
def _proposal_and_log_ratio(key, params, x, h, precond):
    f = student_t_value_and_grad(params)
    state = langevin.init(x, f)
    proposal = langevin.init(langevin.propose(key, state, h, precond), f)
    return state, proposal, langevin.log_acceptance_ratio(state, proposal, h, precond)


@partial(jax.jit, static_argnames="adjusted")
def _langevin_step(key, params, state, h, precond, adjusted):
    return langevin.step(
        key, state, student_t_value_and_grad(params), h, precond, adjusted
    )


@partial(jax.jit, static_argnames="options")
def _sampler_step(key, params, state, options):
    return sampler.step(key, state, student_t_value_and_grad(params), options)[0]


@jax.jit
def _cache_of(params, state):
    f = student_t_value_and_grad(params)
    return jax.vmap(
        lambda y, c: dilation_path.logdensity_and_score(f, y, c, state.lam)
    )(state.particles.position, state.particles.center)


KINDS = ["diagonal", "dense", "low rank"]


def random_preconditioner(key, d, kind, dtype):
    """A random ``M``: diagonal, dense, or diagonal with ``min(2, d)`` more
    directions whitened (variances 0.2 to 50 along them)."""
    k1, k2, k3 = jax.random.split(key, 3)
    if kind == "dense":
        b = jax.random.normal(k1, (d, d), dtype)
        return make_preconditioner(b @ b.T / d + 0.5 * jnp.eye(d, dtype=dtype))
    diagonal = jnp.exp(jax.random.normal(k1, (d,), dtype))
    if kind == "diagonal":
        return make_preconditioner(diagonal)
    r = min(2, d)
    basis = jnp.linalg.qr(jax.random.normal(k2, (d, r), dtype))[0]
    eigen = jnp.exp(jax.random.uniform(k3, (r,), dtype, jnp.log(0.2), jnp.log(50.0)))
    return make_preconditioner(diagonal, LowRank(basis, eigen))


def inverse_mass_matrix(precond):
    """``M`` as a float64 matrix, from the preconditioner's parts."""
    m = np.asarray(precond.inv_mass, float)
    if precond.is_dense:
        return m
    middle = np.eye(m.shape[0])
    if precond.low_rank is not None:
        u = np.asarray(precond.low_rank.basis, float)
        middle = middle + u @ np.diag(np.asarray(precond.low_rank.eigen) - 1.0) @ u.T
    return np.sqrt(m)[:, None] * middle * np.sqrt(m)[None, :]


def random_instance(seed, d, dtype):
    """A Student-t target, a position and a centre."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (
        student_t_params(keys[0], d, dtype),
        jax.random.normal(keys[1], (d,), dtype),
        3.0 * jax.random.normal(keys[2], (d,), dtype),
    )


# ---------------------------------------------------------------- dilation path


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(d=dims, seed=seeds, lam=levels)
def test_score_is_the_gradient_of_the_dilated_log_density(dtype, d, seed, lam):
    with precision(dtype) as dt:
        params, y, c = random_instance(seed, d, dt)
        autodiff, closed_form, both, value, logdensity = _scores(
            params, y, c, jnp.asarray(lam, dt)
        )
        scale = float(jnp.max(jnp.abs(autodiff))) + 1.0
        np.testing.assert_allclose(closed_form, autodiff, atol=RTOL[dtype] * scale)
        np.testing.assert_allclose(both, autodiff, atol=RTOL[dtype] * scale)
        np.testing.assert_allclose(value, logdensity, rtol=RTOL[dtype])
        assert closed_form.dtype == both.dtype == value.dtype == dt


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(d=dims, seed=seeds)
def test_path_is_the_identity_at_level_one(dtype, d, seed):
    with precision(dtype) as dt:
        params, y, c = random_instance(seed, d, dt)
        x, back, logdensity, expected, score, grad = _at_level_one(params, y, c)
        rtol = RTOL[dtype]
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(back, y, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(logdensity, expected, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(score, grad, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(d=dims, seed=seeds, lam=levels)
def test_dilated_gaussian_is_the_scaled_gaussian(dtype, d, seed, lam):
    # X ~ N(m, S)  =>  c + sqrt(l)(X - c) ~ N(c + sqrt(l)(m - c), l S): checked
    # against SciPy's density in float64, a computation independent of the code.
    with precision(dtype) as dt:
        keys = jax.random.split(jax.random.PRNGKey(seed), 4)
        b = np.asarray(jax.random.normal(keys[0], (d, d)), float)
        cov = b @ b.T / d + 0.5 * np.eye(d)
        m = np.asarray(jax.random.normal(keys[1], (d,)), float)
        c = np.asarray(jax.random.normal(keys[2], (d,)), float)
        y = np.asarray(jax.random.normal(keys[3], (d,)), float)
        target = scipy.stats.multivariate_normal(m, cov)
        prec = jnp.asarray(np.linalg.inv(cov), dt)

        def f(x):
            r = x - jnp.asarray(m, dt)
            return -0.5 * r @ prec @ r - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]

        dilated = scipy.stats.multivariate_normal(c + np.sqrt(lam) * (m - c), lam * cov)
        got = dilation_path.logdensity(
            f, jnp.asarray(y, dt), jnp.asarray(c, dt), jnp.asarray(lam, dt)
        )
        expected = dilated.logpdf(y)
        assert np.isclose(target.logpdf(m), f(jnp.asarray(m, dt)), rtol=RTOL[dtype])
        np.testing.assert_allclose(
            got, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * (1 + abs(expected))
        )


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(d=dims, seed=seeds, lam=levels)
def test_to_path_inverts_to_target(dtype, d, seed, lam):
    with precision(dtype) as dt:
        y, c = jax.random.normal(jax.random.PRNGKey(seed), (2, d), dt)
        lam = jnp.asarray(lam, dt)
        x = dilation_path.to_target(y, c, lam)
        back = dilation_path.to_path(x, c, lam)
        # |x| grows like 1/sqrt(l): the round trip loses that many ulps.
        scale = float(jnp.max(jnp.abs(x))) * float(jnp.sqrt(lam)) + 1.0
        np.testing.assert_allclose(back, y, atol=RTOL[dtype] * scale)
        assert x.dtype == back.dtype == dt


# ---------------------------------------------------------------- Langevin step


def _independent_log_ratio(x, xp, g, gp, logp, logpp, h, inv_mass):
    """``log p(x') + log q(x | x') - log p(x) - log q(x' | x)`` with SciPy
    (``inv_mass`` the matrix ``M``)."""
    cov = 2 * h * inv_mass
    drift = lambda v: inv_mass @ v  # noqa: E731
    forward = scipy.stats.multivariate_normal(x + h * drift(g), cov).logpdf(xp)
    backward = scipy.stats.multivariate_normal(xp + h * drift(gp), cov).logpdf(x)
    return logpp + backward - logp - forward


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(d=dims, seed=seeds, log_h=st.floats(-4.0, 0.0))
def test_mala_log_ratio_matches_independent_computation(dtype, kind, d, seed, log_h):
    with precision(dtype) as dt:
        keys = jax.random.split(jax.random.PRNGKey(seed), 3)
        params = student_t_params(keys[0], d, dt)
        precond = random_preconditioner(keys[1], d, kind, dt)
        h = jnp.asarray(10.0**log_h, dt)
        x = jax.random.normal(keys[2], (d,), dt)
        state, proposal, got = _proposal_and_log_ratio(keys[0], params, x, h, precond)
        as64 = lambda a: np.asarray(a, float)  # noqa: E731
        expected = _independent_log_ratio(
            *map(as64, (state.position, proposal.position)),
            *map(as64, (state.logdensity_grad, proposal.logdensity_grad)),
            float(state.logdensity),
            float(proposal.logdensity),
            float(h),
            inverse_mass_matrix(precond),
        )
        # The ratio is a difference of terms of size |x - x'|^2 / h ~ d: the
        # rounding error is the working precision times their size.
        size = float(jnp.sum((proposal.position - state.position) ** 2) / h) + d + 1
        assert got.dtype == dt
        np.testing.assert_allclose(got, expected, atol=10 * RTOL[dtype] * size)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(d=dims, seed=seeds)
def test_acceptance_tends_to_one_as_step_size_vanishes(kind, d, seed):
    # For fixed noise z the MALA log-ratio is O(h^{3/2}) (Roberts & Rosenthal 1998):
    # dividing h by 100 divides |r| by about 1000; we ask for a factor 100, and
    # acceptance above 1 - 1e-6 at h = 1e-8.
    with precision("float64") as dt:
        keys = jax.random.split(jax.random.PRNGKey(seed), 4)
        params = student_t_params(keys[0], d, dt)
        precond = random_preconditioner(keys[1], d, kind, dt)
        x = jax.random.normal(keys[2], (d,), dt)
        ratios = [
            abs(float(_proposal_and_log_ratio(keys[3], params, x, h, precond)[2]))
            for h in jnp.asarray([1e-4, 1e-6, 1e-8])
        ]
        assert ratios[1] <= ratios[0] / 100 + 1e-12
        assert ratios[2] <= ratios[1] / 100 + 1e-12
        state = langevin.init(x, student_t_value_and_grad(params))
        _, info = _langevin_step(
            keys[3], params, state, jnp.asarray(1e-8), precond, True
        )
        assert float(info.acceptance_rate) > 1 - 1e-6


@pytest.mark.parametrize("adjusted", [True, False])
@pytest.mark.parametrize(("dtype", "x64"), MODES)
@SETTINGS
@given(d=dims, seed=seeds, log_h=st.floats(-4.0, 1.0))
def test_step_keeps_cache_consistent_and_dtypes(dtype, x64, adjusted, d, seed, log_h):
    # Whatever happens (accept, reject), the returned log density and gradient are
    # those at the returned position; shapes and dtypes are those of the input.
    # The step size is given in float64 where x64 is on, which must not promote.
    with precision(dtype, x64) as dt:
        keys = jax.random.split(jax.random.PRNGKey(seed), 3)
        params = student_t_params(keys[0], d, dt)
        f = student_t_value_and_grad(params)
        state = langevin.init(jax.random.normal(keys[1], (d,), dt), f)
        h = jnp.asarray(10.0**log_h, float)
        new, info = _langevin_step(
            keys[2], params, state, h, identity(d, dtype=dt), adjusted
        )
        value, grad = f(new.position)
        np.testing.assert_allclose(new.logdensity, value, rtol=RTOL[dtype])
        np.testing.assert_allclose(new.logdensity_grad, grad, rtol=RTOL[dtype])
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype == dt
        assert info.acceptance_rate.dtype == dt
        if not adjusted:
            assert bool(info.is_accepted)
        if not bool(info.is_accepted):
            np.testing.assert_array_equal(new.position, state.position)


def _nan_below_zero(x):
    return jnp.where(x[0] > 0, -0.5 * jnp.sum(x**2), jnp.nan)


@partial(jax.jit, static_argnames="adjusted")
def _nan_step(key, state, adjusted):
    f = jax.value_and_grad(_nan_below_zero)
    d = state.position.shape[0]
    return langevin.step(key, state, f, jnp.asarray(4.0), identity(d), adjusted)


@pytest.mark.parametrize("adjusted", [True, False])
@SETTINGS
@given(d=dims, seed=seeds)
def test_non_finite_proposal_is_rejected_and_divergent(adjusted, d, seed):
    state = langevin.init(jnp.full((d,), 1e-3), jax.value_and_grad(_nan_below_zero))
    # A step from next to the boundary crosses it about half of the time: those
    # moves must be refused, whatever the step.
    new, info = _nan_step(jax.random.PRNGKey(seed), state, adjusted)
    if bool(info.is_divergent):
        assert not bool(info.is_accepted)
        assert float(info.acceptance_rate) == 0.0
        np.testing.assert_array_equal(new.position, state.position)
    assert np.all(np.isfinite(np.asarray(new.position)))
    assert np.isfinite(float(new.logdensity))


# -------------------------------------------------------------- preconditioner


@pytest.mark.parametrize(
    "dim, hmc, dense",
    [(12, True, True), (13, True, False), (6, False, True), (7, False, False)],
)
def test_dense_by_default_needs_five_particles_per_dimension_ten_with_mala(
    dim, hmc, dense
):
    # 64 particles: n >= 5 d where HMC moves may run (d = 12 yes, 13 no),
    # n >= 10 d with MALA (d = 6 yes, 7 no).
    assert dense_by_default(dim, 64, hmc=hmc) is dense


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(d=dims, seed=seeds)
def test_preconditioner_factorises_inverse_mass(dtype, kind, d, seed):
    with precision(dtype) as dt:
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        p = random_preconditioner(k1, d, kind, dt)
        m = inverse_mass_matrix(p)
        v = jax.random.normal(k2, (d,), dt)
        rtol = 10 * RTOL[dtype]
        np.testing.assert_allclose(p.apply(v), m @ np.asarray(v, float), rtol=rtol)
        np.testing.assert_allclose(p.whiten(p.scale_noise(v)), v, rtol=rtol, atol=rtol)
        w = np.asarray(p.whiten(v), float)
        np.testing.assert_allclose(
            w @ w,
            np.asarray(v, float) @ np.linalg.solve(m, np.asarray(v, float)),
            rtol=rtol,
        )
        np.testing.assert_allclose(
            p.log_det_sqrt(), 0.5 * np.linalg.slogdet(m)[1], rtol=rtol, atol=rtol
        )
        for out in (p.apply(v), p.scale_noise(v), p.whiten(v), p.log_det_sqrt()):
            assert out.dtype == dt


# ------------------------------------------------------------------ adaptation


@SETTINGS
@given(
    log_eps=st.floats(-10.0, 5.0),
    accept=st.floats(0.0, 1.0),
    target=st.floats(0.05, 0.95),
    gain=st.floats(0.01, 2.0),
)
def test_step_size_moves_towards_the_target_acceptance(log_eps, accept, target, gain):
    state = adaptation.StepSizeState(jnp.asarray(log_eps), jnp.zeros(()), 0)
    new = adaptation.step_size_update(state, jnp.asarray(accept), target, gain, False)
    change = float(new.log_step_size) - log_eps
    np.testing.assert_allclose(change, gain * (accept - target), atol=1e-5)
    assert int(new.count) == 0


@SETTINGS
@given(values=st.lists(st.floats(-2.0, 2.0), min_size=1, max_size=20))
def test_final_step_size_is_the_window_geometric_mean(values):
    state = adaptation.step_size_init(1.0)
    for i, v in enumerate(values):
        in_window = i >= len(values) // 2
        state = adaptation.step_size_update(state, jnp.asarray(v), 0.0, 1.0, in_window)
    logs = np.cumsum(values)
    expected = np.exp(np.mean(logs[len(values) // 2 :]))
    np.testing.assert_allclose(adaptation.final_step_size(state), expected, rtol=1e-4)


def population_inv_mass(x, dense=False, previous=None):
    """The sampler's first estimate: moments shifted by their own mean, shrunk;
    ``previous`` defaults to 1."""
    previous = jnp.ones(x.shape[1], x.dtype) if previous is None else previous
    _, moments = adaptation.population_moments(x, jnp.mean(x, axis=0), dense)
    return adaptation.shrunk_inv_mass(moments, x.shape[0], previous)


_inv_mass = jax.jit(population_inv_mass, static_argnames="dense")


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(
    d=dims,
    n=st.sampled_from([2, 40]),
    seed=seeds,
    log_scale=st.floats(-6.0, 6.0),
    shift=st.floats(-10.0, 10.0),
)
def test_population_inv_mass_is_scale_equivariant(
    dtype, dense, d, n, seed, log_scale, shift
):
    # Scale-free shrinkage: rescaling the population by s multiplies M by s^2,
    # translating it changes nothing, and M is positive (definite).
    with precision(dtype) as dt:
        x = jax.random.normal(jax.random.PRNGKey(seed), (n, d), dt)
        s = 10.0**log_scale
        base = np.asarray(_inv_mass(x, dense), float)
        moved = _inv_mass(jnp.asarray(s * x + shift * s, dt), dense)
        assert moved.dtype == dt and moved.shape == ((d, d) if dense else (d,))
        # Translation by shift * s costs |shift| ulps of s relative to the spread.
        rtol = RTOL[dtype] * (1 + abs(shift))
        np.testing.assert_allclose(
            np.asarray(moved, float) / s**2, base, rtol=rtol, atol=rtol * base.max()
        )
        eig = np.linalg.eigvalsh(base) if dense else base
        assert np.all(eig > 0)


# ------------------------------------------------------------------- schedules


@SETTINGS
@given(k=st.integers(2, 200), lambda_min=st.floats(1e-8, 0.99))
def test_geometric_schedule_has_constant_ratio_and_ends_at_one(k, lambda_min):
    levels = np.asarray(level_schedule.geometric(k, lambda_min), float)
    assert levels.shape == (k,)
    np.testing.assert_allclose(levels[[0, -1]], [lambda_min, 1.0], rtol=1e-5)
    ratios = levels[1:] / levels[:-1]
    assert np.all(ratios > 1)
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)


@SETTINGS
@given(
    raw=st.lists(st.floats(-1.0, 2.0, allow_nan=False), min_size=1, max_size=10),
)
def test_make_levels_accepts_exactly_the_valid_arrays(raw):
    valid = (
        all(0 < v <= 1 for v in raw)
        and all(b >= a for a, b in zip(raw, raw[1:], strict=False))
        and raw[-1] == 1.0
    )
    if valid:
        np.testing.assert_allclose(level_schedule.make_levels(raw, 0, 1e-4), raw)
    else:
        with pytest.raises(ValueError, match="schedule"):
            level_schedule.make_levels(raw, 0, 1e-4)


_levels_over_time = jax.jit(jax.vmap(calendar.level_at, in_axes=(None, 0)))


@SETTINGS
@given(k=st.sampled_from([1, 3, 40]), num_anneal=st.integers(0, 200))
def test_level_at_is_non_decreasing_and_reaches_one(k, num_anneal):
    sched = calendar.build_calendar(
        num_anneal, anneal_fraction=1.0, num_levels=k, lambda_min=1e-3
    )
    # The schedule is computed in float64 on the host, kept in the run's dtype.
    levels = level_schedule.geometric(k, 1e-3).astype(sched.levels.dtype)
    path = np.asarray(_levels_over_time(sched, jnp.arange(256)))
    assert np.all(np.diff(path) >= 0)
    assert np.all(path[num_anneal:] == 1.0)
    if num_anneal >= k:
        assert path[0] == levels[0]
        assert set(np.unique(path[:num_anneal])) == set(np.asarray(levels).tolist())


# -------------------------------------------------------------------- sampler


@pytest.mark.parametrize(
    ("dtype", "x64", "adjusted"),
    [(*mode, True) for mode in MODES] + [("float32", False, False)],
)
def test_sampler_step_keeps_cache_consistent_and_dtypes(dtype, x64, adjusted):
    # Through annealing, level changes, tuning and sampling the cached log density
    # and score are those of p_l at the current position; every leaf keeps its
    # dtype and shape (the step size is given as a Python float). Not a hypothesis
    # test: each example would compile the whole sampler step.
    with precision(dtype, x64) as dt:
        n, d, num_anneal, num_warmup = 8, 3, 12, 18
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        params = student_t_params(keys[0], d, dt)
        f = student_t_value_and_grad(params)
        options = SamplerOptions(adjusted=adjusted)
        sched = calendar.build_calendar(
            num_warmup,
            options,
            anneal_fraction=num_anneal / num_warmup,
            num_levels=4,
            lambda_min=1e-2,
            dtype=dt,
        )
        assert int(sched.num_anneal) == num_anneal
        center = jax.random.normal(keys[1], (n, d), dt)
        state = sampler.init(center, f, sched, options, 0.5, jnp.ones(d, dt))
        for t in range(num_warmup + 3):
            new = _sampler_step(jax.random.PRNGKey(t), params, state, options)
            for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True):
                a, b = jnp.asarray(a), jnp.asarray(b)
                assert a.shape == b.shape and a.dtype == b.dtype
            state = new
            value, grad = _cache_of(params, state)
            np.testing.assert_allclose(
                state.particles.logdensity, value, rtol=10 * RTOL[dtype]
            )
            np.testing.assert_allclose(
                state.particles.logdensity_grad,
                grad,
                rtol=10 * RTOL[dtype],
                atol=RTOL[dtype],
            )
        assert state.particles.position.dtype == dt


def test_a_new_level_re_evaluates_the_particles_where_they_are():
    # At a level change every particle stays at its y and takes log p_l and
    # its score under the new level; one whose density is not finite there (a
    # NaN band of the target that its x enters as l grows, x = c + (y - c) /
    # sqrt(l)) is flagged divergent and keeps its x instead, its cache carried
    # over. No move: the acceptance probabilities stay the previous iteration's.
    def logdensity(x):
        band = (x[0] > 0.5) & (x[0] < 1.0)
        return jnp.where(band, jnp.nan, -0.5 * jnp.sum(x**2))

    fn = jax.value_and_grad(logdensity)
    # Unimodal options, as the kernel's annealing loop has (no fit yet).
    options = sampler.unimodal(SamplerOptions())
    sched = calendar.build_calendar(40, options, num_levels=4)
    levels = [float(calendar.level_at(sched, jnp.asarray(t))) for t in (4, 5)]
    assert levels[1] > 5 * levels[0]  # t = 5 is the first level change
    center = jnp.zeros((4, 2))
    # Under the new level x shrinks by sqrt(l0 / l1) ~ 0.22: only particle 0's
    # x[0] (3 -> 0.65) lands in the band.
    x_old = jnp.array([[3.0, 0.5], [-3.0, 0.5], [-1.0, 2.0], [2.0, -2.0]])
    y = dilation_path.to_path(x_old, center, levels[0])

    def cache(y, lam):
        return jax.vmap(
            lambda yi, ci: dilation_path.logdensity_and_score(fn, yi, ci, lam)
        )(y, center)

    value, grad = cache(y, levels[0])
    state = sampler.init(center, fn, sched, options)
    accept = jnp.array([0.1, 0.2, 0.3, 0.4])
    state = state._replace(
        iteration=jnp.asarray(5),
        particles=state.particles._replace(
            position=y, logdensity=value, logdensity_grad=grad, accept_prob=accept
        ),
    )
    new, info = jax.jit(lambda s: sampler.step(jax.random.PRNGKey(0), s, fn, options))(
        state
    )
    particles = new.particles
    assert bool(info.is_rescale) and float(new.lam) == pytest.approx(levels[1])
    np.testing.assert_array_equal(particles.diverging, [True, False, False, False])
    np.testing.assert_array_equal(particles.position[1:], y[1:])
    np.testing.assert_allclose(sampler.target_position(new)[0], x_old[0], rtol=1e-6)
    expected = cache(particles.position, new.lam)
    np.testing.assert_allclose(particles.logdensity, expected[0], rtol=1e-5)
    np.testing.assert_allclose(particles.logdensity_grad, expected[1], rtol=1e-5)
    np.testing.assert_array_equal(particles.accept_prob, accept)


@pytest.mark.parametrize("hmc, jumps", [(False, False), (True, False), (True, True)])
def test_step_size_follows_the_acceptance_summed_with_the_moments(hmc, jumps):
    # At the first preconditioner estimate (t = A) the step size's acceptance
    # comes out of the moments' reduction: Robbins-Monro moves log eps by the
    # gain (1) times (acceptance - target), the acceptance being the mean for
    # MALA and, for HMC, the harmonic mean over the moves that did not diverge.
    # Without jumps (no mode fit, jump or rebalancing compiled: the kernel's
    # loops after a fit that finds one mode) HMC takes over from the
    # annealing's MALA steps with the leapfrog step e = sqrt(2 h) of the
    # annealing's step h (one leapfrog step is MALA's step of e^2 / 2): its
    # first trajectory has ceil(u T / e) steps, and Robbins-Monro moves log e.
    # With jumps compiled (step="hmc" on a multimodal population) the step
    # is carried over as it is.
    n, d, num_anneal, num_warmup = 64, 3, 12, 18
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    params = student_t_params(keys[0], d, jnp.float32)
    center = 3.0 * jax.random.normal(keys[1], (n, d))
    options = SamplerOptions(hmc=hmc)
    if not jumps:
        options = sampler.unimodal(options)
    sched = calendar.build_calendar(
        num_warmup, options, anneal_fraction=num_anneal / num_warmup
    )
    # A small first step: the annealing's h stays far below HMC's e.
    state = sampler.init(
        center, student_t_value_and_grad(params), sched, options, step_size=1e-4
    )
    for t in range(num_anneal + 1):
        before = state
        state = _sampler_step(jax.random.PRNGKey(t), params, state, options)
    assert int(before.iteration) == num_anneal
    log_h = float(before.step_size.log_step_size)
    leapfrog = 0.5 * (np.log(2.0) + log_h)  # log sqrt(2 h)
    start = leapfrog if hmc and not jumps else log_h
    if hmc:
        length = adaptation.trajectory_length(before.trajectory)
        u = hmc_move.jitter(before.iteration)
        steps = [
            int(
                hmc_move.num_integration_steps(
                    length, np.exp(s), u, options.max_leapfrog_steps
                )
            )
            for s in (leapfrog, log_h)
        ]
        assert steps[0] != steps[1]
        assert int(state.num_steps) == steps[1 if jumps else 0]
    accept = np.asarray(state.particles.accept_prob, float)
    kept = accept[~np.asarray(state.particles.diverging)]
    acceptance = 1 / np.mean(1 / kept) if hmc else np.mean(accept)
    change = float(state.step_size.log_step_size) - start
    assert change == pytest.approx(acceptance - options.target_accept_prob, abs=1e-5)


@pytest.mark.parametrize("dense", [False, True])
def test_population_moments_from_one_shifted_sum(dense):
    # Shifted by a point 3 sds from the mean, the one-pass moments are the
    # two-pass ones to float32 rounding (relative 1e-7 times ((mean - s) / sd)^2
    # = 9, times the sum's length: 1e-4 is loose for n = 4096); a coordinate
    # with no spread at 1e3 comes out with variance exactly 0, not rounding.
    x = jax.random.normal(jax.random.PRNGKey(4), (4096, 3)) @ jnp.array(
        [[2.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    ) + jnp.array([1e3, -5.0, 1e3])
    mean, moments = adaptation.population_moments(
        x, jnp.array([1e3 - 6.0, -2.0, 1e3 - 0.3]), dense
    )
    x64 = np.asarray(x, float)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-6)
    expected = np.cov(x64.T)
    expected = expected if dense else np.diagonal(expected)
    np.testing.assert_allclose(moments, expected, rtol=1e-4, atol=1e-4)
    var = np.diagonal(moments) if dense else moments
    assert float(var[2]) == 0.0


@pytest.mark.parametrize("dense", [False, True])
def test_acceptance_statistics_from_the_moments_reduction(dense):
    # The step size's statistics from the columns summed with the moments: the
    # mean acceptance, the harmonic mean over the moves that did not diverge
    # and the mean log step ratio, as computed directly; the moments unchanged.
    key_x, key_a = jax.random.split(jax.random.PRNGKey(6))
    x = jax.random.normal(key_x, (256, 3))
    accept = jax.random.uniform(key_a, (256,))
    diverging = accept < 0.05
    ratio = jnp.log(2.0) * jnp.round(4 * accept - 2)
    terms = adaptation.acceptance_terms(accept, diverging, ratio, harmonic=True)
    mean, moments, sums = adaptation.population_moments(x, jnp.zeros(3), dense, terms)
    arithmetic, harmonic, log_ratio = adaptation.acceptance_statistics(
        sums, 256, harmonic=True, local=True
    )
    kept = np.asarray(accept)[~np.asarray(diverging)]
    np.testing.assert_allclose(arithmetic, np.mean(accept), rtol=1e-5)
    np.testing.assert_allclose(harmonic, 1 / np.mean(1 / kept), rtol=1e-5)
    np.testing.assert_allclose(log_ratio, np.mean(ratio), rtol=1e-5, atol=1e-6)
    # The extra columns change how XLA blocks the sums (the dense product's
    # shape), so the moments agree to float32 rounding of sums of 256 terms
    # of order 1: about sqrt(256) eps = 2e-6, 1e-5 allowed.
    plain = adaptation.population_moments(x, jnp.zeros(3), dense)
    np.testing.assert_allclose(mean, plain[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moments, plain[1], rtol=1e-5, atol=1e-5)
    # Without the harmonic and ratio columns both of those are 0; flags that
    # do not match the columns are refused.
    terms = adaptation.acceptance_terms(accept, diverging, None)
    arithmetic, harmonic, log_ratio = adaptation.acceptance_statistics(
        jnp.sum(terms, 0), 256
    )
    np.testing.assert_allclose(arithmetic, np.mean(accept), rtol=1e-5)
    assert float(harmonic) == 0.0 and float(log_ratio) == 0.0
    with pytest.raises(ValueError, match="local=True"):
        adaptation.acceptance_statistics(jnp.sum(terms, 0), 256, local=True)


def test_low_rank_update_finds_a_wide_direction_above_the_noise():
    # 1024 draws of N(0, I + 49 v v^T) in d = 200, v = 1 / sqrt(d): the
    # diagonal D is 1.245, so in the coordinates it whitens v has variance
    # 50 / 1.245 = 40.2 and the rest c = 0.80, whose sample eigenvalues stay
    # below c times the noise edge (1 + sqrt(200 / 1024))^2 = 2.08. From the
    # fixed start, orthogonal iteration finds v (angle error ~ sqrt(d / n /
    # lambda) = 0.07) and its variance relative to c, 50, within 5 Monte Carlo
    # sds of a variance from 1024 draws (sqrt(2 / 1024) = 4.4% each); the
    # three other directions stay at 1. The preconditioner built from it
    # (diagonal c D) whitens the population: variance 1 along v and, on
    # average, across the rest, within the same error.
    n, d = 1024, 200
    v = jnp.ones(d) / jnp.sqrt(d)
    z = jax.random.normal(jax.random.PRNGKey(5), (n, d))
    x = z + (jnp.sqrt(50.0) - 1.0) * (z @ v)[:, None] * v[None, :]
    mean, var = adaptation.population_moments(x, jnp.zeros(d))
    diagonal = adaptation.shrunk_inv_mass(var, n, jnp.ones(d))
    low_rank = adaptation.low_rank_init(d, 4)
    for _ in range(20):
        scaled, low_rank = adaptation.low_rank_update(x, mean, var, diagonal, low_rank)
    assert abs(float(low_rank.basis[:, 0] @ v)) > 0.95
    np.testing.assert_allclose(low_rank.eigen[0], 50.0, rtol=5 * 0.044)
    assert low_rank.eigen[1:].tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(scaled / diagonal, 0.80, rtol=5 * 0.044)
    whitened = jax.vmap(make_preconditioner(scaled, low_rank).whiten)(x - mean)
    np.testing.assert_allclose(jnp.var(whitened @ v), 1.0, rtol=5 * 0.044)
    np.testing.assert_allclose(jnp.mean(jnp.var(whitened, 0)), 1.0, rtol=5 * 0.044)


def test_population_inv_mass_keeps_each_coordinate_scale():
    # Scales 1e-6 and 1e6 in one population: each coordinate's M is its own
    # shrunk variance (n + 5e-3)/(n + 5) var_i, not floored by the other one; a
    # coordinate without spread keeps its previous value.
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 3)) * jnp.array([1e-6, 1e6, 0.0])
    var = np.var(np.asarray(x, float), axis=0, ddof=1)
    m = population_inv_mass(x, previous=jnp.array([1.0, 1.0, 7.0]))
    np.testing.assert_allclose(m[:2], (64 + 5e-3) / 69 * var[:2], rtol=1e-4)
    assert float(m[2]) == 7.0
    dense = population_inv_mass(x, dense=True)
    np.testing.assert_allclose(np.diagonal(dense)[:2], m[:2], rtol=1e-4)
    assert float(dense[2, 2]) == 1.0 and float(jnp.abs(dense[2, :2]).max()) == 0.0
