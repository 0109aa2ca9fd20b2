"""Fast random numbers for the hot loops: XLA's Threefry ``RngBitGenerator``, registered as a JAX
PRNG implementation.

``jax.random``'s default Threefry is assembled from many small XLA operations, which on CPU costs
much more per 32-bit number at the sizes of one LKTD step than XLA's own Threefry
``RngBitGenerator`` (``experiments/results/bench_inner_step.md``).  :data:`FAST_IMPL` registers
that generator with ``jax.extend.random.define_prng_impl``: a key of it (:func:`fast_key`) makes
``jax.random.normal`` / ``uniform`` / ``split`` / ``fold_in`` -- and so BlackJAX, which draws its
noise with ``jax.random.normal`` -- draw from these bits.  Public functions take ordinary
``jax.random.key`` keys and convert them with :func:`fast_key`.

A key of the implementation is the generator's whole state, uint32[4]: two key words and a 64-bit
block counter (XLA increments word 2 first, then word 3).  The words of ``jax.random``'s Threefry
(``split``, ``fold_in``, ``bits`` of a key) are Threefry-2x32 of that key at counters whose word 2
is 0; the project's uses of the same key words keep word 2 at or above 2^30, in three domains:

    stream (random bits)     counter (2^31 + j, 0), j = 0, 1, ...
    split, child i           counter (2^30 + i, 0)
    fold_in(data)            counter (3 * 2^30, data)

so a key's stream never repeats the bits of its own ``split`` or ``fold_in``, nor those of the
``jax.random`` key it came from (unless one draw exceeds 2^31 blocks).  ``XLA``'s batching rule
for ``RngBitGenerator`` draws a whole vmapped batch from the first key; the generator here carries
a ``jax.custom_batching.custom_vmap`` rule that maps over the keys instead, so vmap over keys
equals the loop over keys.

Normals of the project's own draws (:func:`standard_normal`) come from the Box-Muller transform,
with the sine and cosine of the uniform angle evaluated by polynomials on a quarter period (no
range reduction needed; truncation error below 2e-9, under float32 rounding), cheaper than the
inverse error function that ``jax.random.normal`` uses.  ``tests/test_rng.py`` checks the law
(moments, Kolmogorov-Smirnov) and the per-key streams under ``vmap``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl, threefry_prng_impl

STREAM_START = 0x80000000  # counter word 2 of a key's stream start (word 3: 0)
SPLIT_DOMAIN = 0x40000000  # counter word 2 of split's first child
FOLD_DOMAIN = 0xC0000000  # counter word 2 of fold_in (word 3: the folded data)
_UINT = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


@functools.cache
def _bits_fn(shape: tuple[int, ...], dtype: np.dtype, barrier: bool):
    """``state -> (next_state, bits)``: the generator, with a batching rule that maps over keys.

    ``barrier``: materialise the bits once (an elementwise consumer, such as ``jax.random``'s
    transforms, would otherwise get the generator fused into it, and repeated in each consumer).
    """
    size = max(1, math.prod(shape))

    @jax.custom_batching.custom_vmap
    def bits(state: jax.Array) -> tuple[jax.Array, jax.Array]:
        state, out = lax.rng_bit_generator(
            state, (size,), dtype=dtype, algorithm=lax.RandomAlgorithm.RNG_THREE_FRY
        )
        out = out[: math.prod(shape)].reshape(shape)
        return state, lax.optimization_barrier(out) if barrier else out

    @bits.def_vmap
    def _batched(axis_size, in_batched, state):
        # RngBitGenerator's own batching rule does not give each key its own stream: map instead
        # (a batch of one, e.g. one seed of a vmapped run, needs no loop)
        if not in_batched[0]:
            return bits(state), (False, False)
        if axis_size == 1:
            return jax.tree.map(lambda x: x[None], bits(state[0])), (True, True)
        return lax.map(bits, state), (True, True)

    return bits


def _generate(state: jax.Array, shape: tuple[int, ...], dtype=jnp.uint32, barrier: bool = False):
    return _bits_fn(tuple(int(s) for s in shape), np.dtype(dtype), barrier)(state)


def _with_counter(words: jax.Array, lo, hi) -> jax.Array:
    """uint32[..., 4]: key ``words`` (..., 2) and the counter (lo, hi)."""
    counter = jnp.broadcast_to(jnp.asarray([lo, hi], jnp.uint32), (*words.shape[:-1], 2))
    return jnp.concatenate([words.astype(jnp.uint32), counter], axis=-1)


def _seed(seed: jax.Array) -> jax.Array:
    return _with_counter(threefry_prng_impl.seed(seed), STREAM_START, 0)


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    num = math.prod(shape)
    start = _with_counter(key[:2], SPLIT_DOMAIN, 0)
    words = _generate(start, (max(1, num), 2))[1][:num]
    return _with_counter(words, STREAM_START, 0).reshape(*shape, 4)


def _fold_in(key: jax.Array, data: jax.Array) -> jax.Array:
    start = jnp.concatenate(
        [key[:2], jnp.asarray([FOLD_DOMAIN], jnp.uint32), jnp.asarray(data, jnp.uint32)[None]]
    )
    return _with_counter(_generate(start, (2,))[1], STREAM_START, 0)


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    if bit_width not in _UINT:
        raise TypeError(f"random bits of width 8, 16, 32 or 64 only, got {bit_width}")
    return _generate(key, shape, _UINT[bit_width], barrier=True)[1]


FAST_IMPL = define_prng_impl(
    key_shape=(4,),
    seed=_seed,
    split=_split,
    random_bits=_random_bits,
    fold_in=_fold_in,
    name="lktd_threefry_rbg",
    tag="lkrbg",
)


_FAST_DTYPE = jax.random.wrap_key_data(np.zeros(4, np.uint32), impl=FAST_IMPL).dtype


def is_fast_key(key: jax.Array) -> bool:
    """Whether ``key`` is a key (array) of :data:`FAST_IMPL`."""
    return key.dtype == _FAST_DTYPE


def fast_key(key: jax.Array) -> jax.Array:
    """A key of :data:`FAST_IMPL` from a ``jax.random`` key (any shape; a fast key is returned as is).

    The new key's stream is Threefry-2x32 of the old key's first two words at the stream's
    counters (see the module's docstring), apart from everything ``jax.random`` draws from it.
    """
    if is_fast_key(key):
        return key
    data = jax.random.key_data(key)
    return jax.random.wrap_key_data(_with_counter(data[..., :2], STREAM_START, 0), impl=FAST_IMPL)


def stream(key: jax.Array) -> jax.Array:
    """The generator state of ``key``'s stream (uint32[4]; the data of :func:`fast_key`)."""
    return jax.random.key_data(fast_key(key))


def stream_bits(state: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """``(next_state, bits)``: the stream's next ``prod(shape)`` uint32 words (vmap-safe).

    Successive calls continue one stream (the counter advances), so a loop can draw its noise
    step by step from one key.
    """
    return _generate(state, shape)


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 random bits of ``shape`` from a key (vmap-safe: one stream per key)."""
    return stream_bits(stream(key), shape)[1]


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32 uniform on [0, 1) (23 random mantissa bits)."""
    bits = random_bits(key, shape)
    return lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0


def _quarter_sincos(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sin and cos on [-pi/4, pi/4] by Taylor polynomials (remainders < 2e-9)."""
    x2 = x * x
    sin = x * (1.0 + x2 * (-1 / 6 + x2 * (1 / 120 + x2 * (-1 / 5040 + x2 * (1 / 362880)))))
    cos = 1.0 + x2 * (-0.5 + x2 * (1 / 24 + x2 * (-1 / 720 + x2 * (1 / 40320 - x2 / 3628800))))
    return sin, cos


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """N(0, 1) draws of ``shape`` from ``key`` (see :func:`stream_normal`)."""
    return stream_normal(stream(key), shape, dtype)[1]


def stream_normal(
    state: jax.Array, shape: tuple[int, ...], dtype=jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """``(next_state, z)``: N(0, 1) draws by Box-Muller, two 32-bit words per two normals.

    Radius ``sqrt(-2 log u)`` with ``u`` in (0, 1] from 24 bits (so ``|z| <= 5.77``, a tail of
    probability 8e-9 cut); angle ``q pi/2 + x`` with the quadrant ``q`` from 2 bits and ``x`` uniform
    on [-pi/4, pi/4) from 23 more.
    """
    size = math.prod(shape)
    half = (size + 1) // 2
    state, bits = stream_bits(state, (2, half))
    u = ((bits[0] >> 8).astype(jnp.float32) + 1.0) * jnp.float32(2.0**-24)
    radius = jnp.sqrt(-2.0 * jnp.log(u))
    quadrant = bits[1] >> 30
    frac = ((bits[1] & 0x3FFFFFFF) >> 7).astype(jnp.float32) * jnp.float32(2.0**-23)
    sin, cos = _quarter_sincos((frac - 0.5) * jnp.float32(math.pi / 2))
    # rotate (cos x, sin x) by quadrant * pi/2
    cos_t = jnp.select([quadrant == 0, quadrant == 1, quadrant == 2], [cos, -sin, -cos], sin)
    sin_t = jnp.select([quadrant == 0, quadrant == 1, quadrant == 2], [sin, cos, -sin], -cos)
    z = jnp.concatenate([radius * cos_t, radius * sin_t])[:size].reshape(shape)
    # materialise once: otherwise XLA may fuse the transform into (and so repeat it in) each consumer
    return state, lax.optimization_barrier(z.astype(dtype))
