"""core.draws: flat draws reshaped are JAX's draws of the shape, bit for bit."""

import jax
import numpy as np
import pytest
from scipy import stats

from numpyro_dilation.core import draws

SHAPES = [(7,), (1024, 10), (33, 2), (4, 5, 3), (0, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("partitionable", [True, False])
def test_same_values_as_jax_random_for_the_shape(shape, partitionable):
    key = jax.random.PRNGKey(11)
    with jax.threefry_partitionable(partitionable):
        a = draws.uniform(key, shape, np.float32)
        b = jax.random.uniform(key, shape, np.float32)
        assert a.shape == b.shape == shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_same_values_with_another_generator():
    key = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(
        np.asarray(draws.uniform(key, (64, 3))),
        np.asarray(jax.random.uniform(key, (64, 3))),
    )


def test_same_values_inside_jit_and_vmap():
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    mine = jax.jit(jax.vmap(lambda k: draws.uniform(k, (16, 4))))(keys)
    theirs = jax.vmap(lambda k: jax.random.uniform(k, (16, 4)))(keys)
    np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


@pytest.mark.parametrize(
    ("shape", "uniform_shape"),
    [((1024, 10), ()), ((33, 2), ()), ((5, 4, 3), ()), ((64, 3), (4,))],
    ids=str,
)
def test_normal_and_uniform_are_one_normal_draw(shape, uniform_shape):
    # Row i of JAX's normal draw of n (m + k) values, laid out (n, m + k):
    # its first m values are z[i] bit for bit, u[i] is Phi of its last k. All
    # independent, the normals exact N(0, 1) draws, u uniform on (0, 1)
    # (float32: Phi's rounding, 1e-6).
    key = jax.random.PRNGKey(5)
    z, u = draws.normal_and_uniform(key, shape, np.float32, uniform_shape)
    n, m = shape[0], int(np.prod(shape[1:]))
    k = int(np.prod(uniform_shape))
    rows = np.asarray(jax.random.normal(key, (n * (m + k),), np.float32))
    rows = rows.reshape(n, m + k)
    assert z.shape == shape and u.shape == shape[:1] + uniform_shape
    assert z.dtype == u.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(z).reshape(n, m), rows[:, :m])
    np.testing.assert_allclose(
        np.asarray(u).reshape(n, k), stats.norm.cdf(rows[:, m:]), atol=1e-6
    )
    assert np.all((np.asarray(u) > 0) & (np.asarray(u) < 1))
