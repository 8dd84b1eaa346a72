"""The jaxlib < 0.11 CPU LAPACK deadlock: detection, the one-particle-per-call
evaluation, and a NumPyro Gaussian-process model that hung before the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.linalg import solve_triangular
from runs import run_vectorized

from numpyro_dilation import DilationKernel
from numpyro_dilation.core import cpu_lapack
from numpyro_dilation.diagnostics import MIN_PARTICLES, MIN_WARMUP


def rbf(x, variance, length, noise):
    sq = ((x[:, None] - x[None, :]) / length) ** 2
    return variance * jnp.exp(-0.5 * sq) + (noise + 1e-6) * jnp.eye(x.shape[0])


def two_series_gp(x, y):
    """Two series observed on the same inputs, each a GP with its own variance,
    sharing the length scale and the noise (latent kernel hyperparameters).

    Each series has its own Cholesky factor and triangular solves, independent
    of the other's: XLA runs them concurrently, batched over the particles. On
    jaxlib 0.10.2 (2-core CPU, 512 particles, 30 inputs) this model hung in
    every run without the fix (CPU time frozen after ~45 s) and finishes in
    ~30 s with it.
    """
    length = numpyro.sample("length", dist.LogNormal(0.0, 1.0))
    noise = numpyro.sample("noise", dist.LogNormal(-2.0, 1.0))
    with numpyro.plate("series", y.shape[0]):
        variance = numpyro.sample("variance", dist.LogNormal(0.0, 1.0))
    for i in range(y.shape[0]):
        cov = rbf(x, variance[i], length, noise)
        numpyro.sample(
            f"y{i}",
            dist.MultivariateNormal(jnp.zeros(x.shape[0]), covariance_matrix=cov),
            obs=y[i],
        )


def gp_data(num_inputs=30, seed=1):
    x = jnp.linspace(-1.0, 1.0, num_inputs)
    noise = 0.3 * jax.random.normal(jax.random.PRNGKey(seed), (2, num_inputs))
    return x, jnp.stack([jnp.sin(3 * x), jnp.sin(3 * x + 1)]) + noise


def cholesky_solve(x):
    chol = jnp.linalg.cholesky(jnp.eye(3) * (1.0 + x[0] ** 2) + 0.1)
    return jnp.sum(solve_triangular(chol, x, lower=True) ** 2)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (jax.value_and_grad(cholesky_solve), True),
        (lambda x: jnp.linalg.solve(jnp.eye(3) * (2.0 + x[0]), x), True),
        (jax.jit(lambda x: jnp.linalg.eigh(jnp.outer(x, x))[0]), True),
        (jax.value_and_grad(lambda x: jnp.sum(jnp.sin(x) ** 2)), False),
    ],
)
def test_lapack_primitives_are_found_also_inside_sub_programs(fn, expected):
    assert cpu_lapack.uses_lapack(fn, jnp.ones(3)) is expected


@pytest.mark.parametrize(
    ("version", "backend", "expected"),
    [
        ("0.10.2", "cpu", True),
        ("0.4.30", "cpu", True),
        ("0.11.0", "cpu", False),
        ("0.12.0.1", "cpu", False),
        ("1.0.0", "cpu", False),
        ("0.10.2", "gpu", False),
    ],
)
def test_only_old_jaxlib_on_cpu_is_deadlock_prone(version, backend, expected):
    assert cpu_lapack.deadlock_prone(version, backend) is expected


def test_sequential_evaluation_gives_the_vmap_values():
    fn = jax.value_and_grad(cholesky_solve)
    points = jax.random.normal(jax.random.PRNGKey(0), (7, 3))
    scale = jnp.float32(2.0)

    @jax.jit
    def both(points, scale):
        shifted = lambda x: fn(x * scale)  # noqa: E731  (closes over a tracer)
        return jax.vmap(cpu_lapack.sequential_under_vmap(shifted))(points), jax.vmap(
            shifted
        )(points)

    sequential, batched = both(points, scale)
    for a, b in zip(jax.tree.leaves(sequential), jax.tree.leaves(batched), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # an unbatched argument is broadcast over the batch
    out = jax.vmap(cpu_lapack.sequential_under_vmap(fn), in_axes=None, axis_size=4)(
        points[0]
    )
    np.testing.assert_allclose(out[0], jnp.full(4, fn(points[0])[0]), rtol=1e-6)


def test_a_potential_without_lapack_calls_is_evaluated_batched():
    # A potential without LAPACK calls is never evaluated one particle at a
    # time (the GP model's decision: the test below). `init` decides it before
    # its first program, so tracing it is enough (jax.eval_shape: nothing
    # compiled).
    plain = DilationKernel(potential_fn=lambda z: 0.5 * jnp.sum(z**2))
    jax.eval_shape(
        lambda keys: plain.init(
            keys, MIN_WARMUP, init_params=jnp.ones((MIN_PARTICLES, 2))
        ),
        jax.random.split(jax.random.PRNGKey(0), MIN_PARTICLES),
    )
    assert plain._sequential is False


@pytest.mark.timeout(300)
def test_gaussian_process_with_latent_hyperparameters_finishes():
    # Before the fix this hung for good on jaxlib 0.10.2; the timeout turns a
    # hang into a failure with every thread's stack. MALA moves: every
    # gradient runs the same batched Cholesky whatever the move, and MALA
    # takes one per iteration (HMC, the default here, many more).
    x, y = gp_data()
    mcmc = run_vectorized(
        DilationKernel(two_series_gp, step="mala"),
        x,
        y,
        num_warmup=100,
        num_samples=20,
        num_chains=512,
    )
    # one particle at a time exactly where batched LAPACK calls can deadlock
    assert mcmc.sampler._sequential is cpu_lapack.deadlock_prone()
    samples = mcmc.get_samples()
    assert set(samples) == {"length", "noise", "variance"}
    for value in samples.values():
        assert np.all(np.isfinite(np.asarray(value)))
