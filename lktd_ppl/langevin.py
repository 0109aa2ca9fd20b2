"""Langevin moves: BlackJAX's SGLD kernel and SGHMC integrator on fast keys, and their
explicit-noise forms for exact comparisons.

Convention (BlackJAX's): ``x + h * grad + sqrt(2 T h) * N(0, 1)``.  For LKTD and SGLD the paper's
step with step size eps on a target tempered by pseudo-population N over a minibatch of n is
``h = (eps / 2) * (n / N)`` with ``grad`` the gradient of the *tempered* log-target
``log pi + (N / n) * log lik``.  (Trap: BlackJAX's step size is the paper's eps/2 times n/N.)
BlackJAX's ``temperature`` T multiplies the noise variance and leaves the drift alone.

:func:`sgld_move` and :func:`sghmc_move` are the product path: they call ``blackjax.sgld`` and
``blackjax.sgmcmc.diffusions.sghmc`` (looked up at trace time), which draw their noise with
``jax.random.normal`` from the key they are given; the key is first converted to the project's
fast PRNG implementation (:func:`lktd_ppl.rng.fast_key`).

:func:`langevin_step` and :func:`sghmc_step` are hand-written explicit-noise forms of the same
moves: they take the standard-normal noise as an input, so that tests can compare steps exactly
(``tests/test_langevin.py`` pins them to BlackJAX's kernels given the same noise, and
``tests/test_lemma1.py`` differentiates through them), and so that a caller that pre-draws its
noise (``lktd_ppl.sample``) can pass it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
from blackjax.sgmcmc import diffusions
from blackjax.util import generate_gaussian_noise

from lktd_ppl.rng import fast_key

Tree = Any


def blackjax_noise(key: jax.Array, like: Tree) -> Tree:
    """Standard normal noise shaped like ``like``, drawn exactly as BlackJAX draws it (from
    ``key`` as given: pass a fast key to get the noise :func:`sgld_move` would use)."""
    return generate_gaussian_noise(key, like)


def sgld_move(
    key: jax.Array,
    position: Tree,
    grad_estimator: Callable[[Tree, Any], Tree],
    minibatch: Any,
    step_size: jax.Array,
    temperature: jax.Array | float = 1.0,
) -> Tree:
    """One ``blackjax.sgld`` step: ``x + h grad + sqrt(2 T h) N(0, 1)``, noise from ``fast_key(key)``.

    ``grad_estimator(position, minibatch)`` is the gradient of the tempered log-target.
    """
    sgld = blackjax.sgld(grad_estimator)
    return sgld.step(fast_key(key), position, minibatch, step_size, temperature)


def sghmc_move(
    key: jax.Array,
    position: Tree,
    velocity: Tree,
    grad: Tree,
    eta: jax.Array,
    friction: float | jax.Array,
) -> tuple[Tree, Tree]:
    """One SGHMC step in the official code's parametrisation, by BlackJAX's integrator.

    The official update (spec section 3), with velocity ``u = -v`` and ``eta = eps_k * n / N``::

        u <- (1 - friction) u + eta * grad + sqrt(2 friction eta) * N(0, 1)

    is BlackJAX's ``diffusions.sghmc(alpha)`` with step ``h = sqrt(eta)``, ``alpha = friction / h``
    and momentum ``u / h`` (its noise ``sqrt(2 alpha h) = sqrt(2 friction)`` per unit momentum).
    BlackJAX moves the position with the momentum it had before the step (the official code with
    the new one): the same chain, the position one velocity behind.  Returns (position, velocity).
    """
    h = jnp.sqrt(eta)
    integrator = diffusions.sghmc(alpha=friction / h)
    momentum = jax.tree.map(lambda u: u / h, velocity)
    position, momentum = integrator(fast_key(key), position, momentum, grad, h)
    return position, jax.tree.map(lambda m: h * m, momentum)


def langevin_step(position: Tree, grad: Tree, step_size: jax.Array, noise: Tree) -> Tree:
    """Hand-written explicit-noise SGLD step (BlackJAX's convention) given N(0, 1) ``noise``."""
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
    """Hand-written explicit-noise form of :func:`sghmc_move`, given N(0, 1) ``noise``."""
    h = jnp.sqrt(eta)
    momentum = jax.tree.map(lambda u: u / h, velocity)
    position = jax.tree.map(lambda x, m: x + h * m, position, momentum)
    scale = jnp.sqrt(2.0 * friction)  # = sqrt(h * 2 alpha) with BlackJAX's alpha = friction / h
    momentum = jax.tree.map(
        lambda m, g, z: (1.0 - friction) * m + h * g + scale * z, momentum, grad, noise
    )
    return position, jax.tree.map(lambda m: h * m, momentum)
