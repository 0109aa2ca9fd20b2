"""Fast random numbers for the hot loops: Threefry bits from XLA's ``RngBitGenerator``.

``jax.random`` assembles Threefry from many small XLA operations, which on CPU costs about 20 ns
per 32-bit number at the sizes of one LKTD step; XLA's own Threefry ``RngBitGenerator`` costs about
1 ns.  Keys are ordinary ``jax.random`` keys (split them as usual); the bits are Threefry-2x32 of
the key's data with a zero counter, so different keys give independent streams.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 random bits of ``shape`` from a jax.random key (vmap-safe: one stream per key)."""
    return _bits_fn(tuple(shape))(jax.random.key_data(key))


@functools.cache
def _bits_fn(shape: tuple[int, ...]):
    size = max(1, math.prod(shape))

    @jax.custom_batching.custom_vmap
    def bits(key_data: jax.Array) -> jax.Array:
        state = jnp.concatenate([key_data.ravel()[:2], jnp.zeros(2, jnp.uint32)])
        _, out = lax.rng_bit_generator(
            state, (size,), dtype=jnp.uint32, algorithm=lax.RandomAlgorithm.RNG_THREE_FRY
        )
        return out[: math.prod(shape)].reshape(shape)

    @bits.def_vmap
    def _batched(axis_size, in_batched, key_data):
        # RngBitGenerator's own batching rule does not give each key its own stream: map instead
        del axis_size
        if not in_batched[0]:
            return bits(key_data), False
        return lax.map(bits, key_data), True

    return bits


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32 uniform on [0, 1) (23 random mantissa bits)."""
    bits = random_bits(key, shape)
    return lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """N(0, 1) draws: uniform bits -> (-1, 1) -> sqrt(2) erfinv, as ``jax.random.normal`` does."""
    u = 2.0 * uniform(key, shape) - 1.0
    u = jnp.maximum(jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0)), u)
    z = jnp.float32(math.sqrt(2.0)) * lax.erf_inv(u)
    # materialise once: otherwise XLA may fuse (and so repeat) the generator into every consumer
    return lax.optimization_barrier(z.astype(dtype))
