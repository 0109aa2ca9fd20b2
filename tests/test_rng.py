"""The hot loops' random numbers (lktd_ppl.rng): the law of the normals, one stream per key, and the
project's PRNG implementation as jax.random sees it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lktd_ppl.rng import (
    FAST_IMPL,
    fast_key,
    is_fast_key,
    standard_normal,
    stream,
    stream_bits,
    stream_normal,
    uniform,
)


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


def _fast_keys(n: int, seed: int = 5):
    return fast_key(jax.random.split(jax.random.key(seed), n))


@pytest.mark.parametrize(
    "draw",
    [
        lambda k: jax.random.normal(k, (3, 7)),
        lambda k: jax.random.uniform(k, (5,)),
        lambda k: jax.random.bits(k, (4,), jnp.uint8),
        lambda k: jax.random.key_data(jax.random.split(k, 3)),
        lambda k: jax.random.key_data(jax.random.fold_in(k, 11)),
    ],
    ids=["normal", "uniform", "bits8", "split", "fold_in"],
)
def test_fast_impl_vmap_over_keys_equals_the_loop(draw):
    keys = _fast_keys(4)
    single = np.stack([np.asarray(draw(k)) for k in keys])
    np.testing.assert_array_equal(jax.vmap(draw)(keys), single)
    np.testing.assert_array_equal(jax.jit(jax.vmap(draw))(keys), single)
    assert len({r.tobytes() for r in single}) == 4  # each key its own draw


def test_xla_rbg_under_vmap_draws_the_batch_from_the_first_key():
    """The negative control of the test above: why the project registers its own implementation."""
    keys = jax.random.split(jax.random.key(0, impl="rbg"), 3)
    batched = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
    single = jnp.stack([jax.random.normal(k, (2,)) for k in keys])
    np.testing.assert_array_equal(batched[0], single[0])
    assert not np.allclose(batched[1:], single[1:])


def test_fast_keys_from_jax_keys():
    key = jax.random.key(2)
    fk = fast_key(key)
    assert is_fast_key(fk) and not is_fast_key(key)
    assert fast_key(fk) is fk
    assert str(jax.random.key_impl(fk)) == str(FAST_IMPL)
    np.testing.assert_array_equal(stream(key), jax.random.key_data(fk))
    np.testing.assert_array_equal(  # the module's functions take either kind of key
        standard_normal(key, (6,)), standard_normal(fk, (6,))
    )
    batch = fast_key(jax.random.split(key, 3))
    assert batch.shape == (3,) and is_fast_key(batch)
    seeded = jax.random.key(3, impl=FAST_IMPL)
    np.testing.assert_array_equal(jax.random.key_data(seeded), stream(jax.random.key(3)))


def random_words(key, n):
    return stream_bits(stream(key), (n,))[1]


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 + 5])
def test_stream_start_is_not_split_or_fold_in(seed):
    """A key's stream, its fast split and fold_in share no 32-bit word with jax.random's split and
    fold_in of the same key (before the fix, the stream's first words were split's)."""
    key = jax.random.key(seed)
    first = np.asarray(random_words(key, 64))
    theirs = [np.asarray(jax.random.key_data(jax.random.split(key, 8))).ravel()]
    theirs += [np.asarray(jax.random.key_data(jax.random.fold_in(key, i))) for i in range(8)]
    fk = fast_key(key)
    ours = [np.asarray(jax.random.key_data(jax.random.split(fk, 8)))[:, :2].ravel()]
    ours += [np.asarray(jax.random.key_data(jax.random.fold_in(fk, i)))[:2] for i in range(8)]
    jax_words = set(np.concatenate(theirs).tolist())
    assert not set(first.tolist()) & jax_words
    assert not set(np.concatenate(ours).tolist()) & (jax_words | set(first.tolist()))


def test_jax_random_normal_on_fast_keys_has_the_normal_law():
    z = np.asarray(jax.random.normal(fast_key(jax.random.key(9)), (200_000,)), np.float64)
    se = 1.0 / np.sqrt(z.size)
    assert abs(z.mean()) < 4 * se and abs(z.var() - 1.0) < 4 * np.sqrt(2.0) * se
    assert stats.kstest(z, "norm").pvalue > 1e-3
    other = np.asarray(jax.random.normal(fast_key(jax.random.key(10)), (200_000,)))
    assert abs(np.corrcoef(z, other)[0, 1]) < 4 * se
