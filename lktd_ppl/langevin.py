"""Langevin moves: BlackJAX's integrators, with an explicit-noise form for exact comparisons.

Convention (BlackJAX's): ``x + h * grad + sqrt(2 h) * N(0, 1)``.  For LKTD and SGLD the paper's step
with step size eps on a target tempered by pseudo-population N over a minibatch of n is
``h = (eps / 2) * (n / N)`` with ``grad`` the gradient of the *tempered* log-target
``log pi + (N / n) * log lik``.  (Trap: BlackJAX's step size is the paper's eps/2 times n/N.)

Each move takes the standard-normal noise as an explicit input (tests compare steps exactly that
way); ``tests/test_langevin.py`` pins that, given the same noise, they equal BlackJAX's kernels
(``blackjax.sgld`` and ``blackjax.sgmcmc.diffusions.sghmc``) to the last bit.

The noise comes from :func:`standard_normal`: Threefry bits from XLA's ``RngBitGenerator``, turned
into normals by the inverse error function as ``jax.random.normal`` does.  On CPU it is about 5x
faster than ``jax.random.normal`` (whose Threefry is assembled from many small XLA ops), and the
noise is most of a naive LKTD step's cost (``experiments/bench_inner_step.py``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from blackjax.util import generate_gaussian_noise
from jax import lax

Tree = Any


def blackjax_noise(key: jax.Array, like: Tree) -> Tree:
    """Standard normal noise shaped like ``like``, drawn exactly as BlackJAX draws it."""
    return generate_gaussian_noise(key, like)


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """N(0, 1) draws from a jax.random key: XLA's Threefry RngBitGenerator + inverse erf."""
    counter = jnp.zeros(2, jnp.uint32)
    state = jnp.concatenate([jax.random.key_data(key).ravel()[:2], counter])
    size = max(1, math.prod(shape))
    _, bits = lax.rng_bit_generator(
        state, (size,), dtype=jnp.uint32, algorithm=lax.RandomAlgorithm.RNG_THREE_FRY
    )
    # 23 random mantissa bits -> uniform in [1, 2) -> (-1, 1) -> sqrt(2) erfinv
    u = lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
    u = jnp.maximum(jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0)), 2.0 * u - 1.0)
    z = jnp.float32(math.sqrt(2.0)) * lax.erf_inv(u)
    # materialise once: otherwise XLA may fuse (and so repeat) the generator into every consumer
    return lax.optimization_barrier(z[: math.prod(shape)].reshape(shape).astype(dtype))


def langevin_step(position: Tree, grad: Tree, step_size: jax.Array, noise: Tree) -> Tree:
    """One overdamped Langevin (SGLD) step in BlackJAX's convention, given N(0, 1) ``noise``."""
    scale = jnp.sqrt(2.0 * step_size)
    return jax.tree.map(lambda x, g, z: x + step_size * g + scale * z, position, grad, noise)


def sghmc_step(
    position: Tree,
    velocity: Tree,
    grad: Tree,
    eta: jax.Array,
    friction: float,
    noise: Tree,
) -> tuple[Tree, Tree]:
    """One SGHMC step in the official code's parametrisation, through BlackJAX's integrator.

    The official update (spec section 3), with velocity ``u = -v`` and ``eta = eps_k * n / N``::

        u <- (1 - friction) u + eta * grad + sqrt(2 friction eta) * N(0, 1)

    is BlackJAX's ``diffusions.sghmc(alpha)`` with step ``h = sqrt(eta)``, ``alpha = friction / h``
    and momentum ``u / h``.  BlackJAX moves the position with the momentum it had before the step
    (the official code with the new one): the same chain, the position one velocity behind.
    """
    h = jnp.sqrt(eta)
    momentum = jax.tree.map(lambda u: u / h, velocity)
    position = jax.tree.map(lambda x, m: x + h * m, position, momentum)
    scale = jnp.sqrt(2.0 * friction)  # = sqrt(h * 2 alpha) with BlackJAX's alpha = friction / h
    momentum = jax.tree.map(
        lambda m, g, z: (1.0 - friction) * m + h * g + scale * z, momentum, grad, noise
    )
    return position, jax.tree.map(lambda m: h * m, momentum)
