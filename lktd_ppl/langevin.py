"""Langevin moves: BlackJAX's integrators, with an explicit-noise form for exact comparisons.

Convention (BlackJAX's): ``x + h * grad + sqrt(2 h) * N(0, 1)``.  For LKTD and SGLD the paper's step
with step size eps on a target tempered by pseudo-population N over a minibatch of n is
``h = (eps / 2) * (n / N)`` with ``grad`` the gradient of the *tempered* log-target
``log pi + (N / n) * log lik``.  (Trap: BlackJAX's step size is the paper's eps/2 times n/N.)

Each move takes the standard-normal noise as an explicit input (tests compare steps exactly that
way); ``tests/test_langevin.py`` pins that, given the same noise, they equal BlackJAX's kernels
(``blackjax.sgld`` and ``blackjax.sgmcmc.diffusions.sghmc``) to the last bit.

The kernels draw the noise with :func:`lktd_ppl.rng.standard_normal` (XLA's Threefry bit
generator and Box-Muller), several times cheaper on CPU than ``jax.random.normal`` at the sizes of
one step; the noise was most of a naive LKTD step's cost (``experiments/results/bench_inner_step.md``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from blackjax.util import generate_gaussian_noise

Tree = Any


def blackjax_noise(key: jax.Array, like: Tree) -> Tree:
    """Standard normal noise shaped like ``like``, drawn exactly as BlackJAX draws it."""
    return generate_gaussian_noise(key, like)


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
