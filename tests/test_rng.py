"""The hot loops' random numbers (lktd_ppl.rng): the law of the normals, and one stream per key."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from lktd_ppl.rng import standard_normal, stream, stream_bits, stream_normal, uniform


def test_normals_have_the_standard_normal_law():
    z = np.asarray(standard_normal(jax.random.key(0), (400_001,)), np.float64)
    assert z.shape == (400_001,)
    se = 1.0 / np.sqrt(z.size)
    assert abs(z.mean()) < 4 * se
    assert abs(z.var() - 1.0) < 4 * np.sqrt(2.0) * se
    assert abs(stats.skew(z)) < 4 * np.sqrt(6.0) * se
    assert abs(stats.kurtosis(z)) < 4 * np.sqrt(24.0) * se
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # the two halves of each Box-Muller pair are uncorrelated, and so are neighbours
    assert abs(np.corrcoef(z[:200_000], z[200_000:400_000])[0, 1]) < 4 * se * np.sqrt(2)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 4 * se


def test_tails_match_the_normal():
    z = np.asarray(standard_normal(jax.random.key(1), (1_000_000,)))
    for c in (1.0, 2.0, 3.0):
        p = 2 * stats.norm.sf(c)
        frac = np.mean(np.abs(z) > c)
        assert abs(frac - p) < 5 * np.sqrt(p * (1 - p) / z.size), c
    assert np.abs(z).max() <= 5.8


def test_streams_continue_and_keys_differ():
    key = jax.random.key(3)
    state, a = stream_bits(stream(key), (8,))
    _, b = stream_bits(state, (8,))
    _, both = stream_bits(stream(key), (16,))
    np.testing.assert_array_equal(np.concatenate([a, b]), both)  # one contiguous stream
    s1, z1 = stream_normal(stream(key), (5,))
    _, z2 = stream_normal(s1, (5,))
    assert not np.allclose(z1, z2)
    other = standard_normal(jax.random.key(4), (5,))
    assert not np.allclose(standard_normal(key, (5,)), other)
    np.testing.assert_array_equal(standard_normal(key, (5,)), standard_normal(key, (5,)))


def test_vmap_gives_each_key_its_own_stream():
    keys = jax.random.split(jax.random.key(5), 4)
    batched = jax.vmap(lambda k: standard_normal(k, (3, 7)))(keys)
    single = jnp.stack([standard_normal(k, (3, 7)) for k in keys])
    np.testing.assert_array_equal(batched, single)
    u = jax.vmap(lambda k: uniform(k, (6,)))(keys)
    np.testing.assert_array_equal(u, jnp.stack([uniform(k, (6,)) for k in keys]))
    assert len({tuple(np.asarray(r)) for r in batched.reshape(4, -1)}) == 4


def test_odd_sizes_and_dtypes():
    z = standard_normal(jax.random.key(6), (3, 5), jnp.float32)
    assert z.shape == (3, 5) and z.dtype == jnp.float32
    assert standard_normal(jax.random.key(6), (1,)).shape == (1,)
