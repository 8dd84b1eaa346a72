"""core.draws: flat draws reshaped are JAX's draws of the shape, bit for bit."""

import jax
import numpy as np
import pytest

from numpyro_dilation.core import draws

SHAPES = [(7,), (1024, 10), (33, 2), (4, 5, 3), (0, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("partitionable", [True, False])
def test_same_values_as_jax_random_for_the_shape(shape, partitionable):
    key = jax.random.PRNGKey(11)
    with jax.threefry_partitionable(partitionable):
        for mine, theirs in (
            (draws.normal, jax.random.normal),
            (draws.uniform, jax.random.uniform),
        ):
            a = mine(key, shape, np.float32)
            b = theirs(key, shape, np.float32)
            assert a.shape == b.shape == shape
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_same_values_with_another_generator():
    key = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(
        np.asarray(draws.normal(key, (64, 3))),
        np.asarray(jax.random.normal(key, (64, 3))),
    )


def test_same_values_inside_jit_and_vmap():
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    mine = jax.jit(jax.vmap(lambda k: draws.normal(k, (16, 4))))(keys)
    theirs = jax.vmap(lambda k: jax.random.normal(k, (16, 4)))(keys)
    np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
