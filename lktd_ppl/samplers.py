"""SGLD and SGHMC ablation kernels (spec section 3): the same model, the same stage of kappa inner
steps with the restarting schedule, no xi-augmentation (the likelihood of r is used directly), and
the same ``init`` / ``step`` interface as :func:`lktd_ppl.filter.lktd`.  They accept any likelihood.

SGLD:   theta <- theta + (eps/2)(n/N) [grad log pi + (N/n) grad log lik] + N(0, (n/N) eps)
SGHMC:  u <- (1 - friction) u + eps (n/N) [grad log pi + (N/n) grad log lik] + N(0, 2 friction eps n/N)
        theta <- theta + u          (momentum kept across inner steps and stages)

Without explicit noise (the product path) every move is BlackJAX's: SGLD is ``blackjax.sgld`` with
step size (eps/2)(n/N); SGHMC is ``blackjax.sgmcmc.diffusions.sghmc`` with the momentum in the
state (:func:`lktd_ppl.langevin.sghmc_move`).  ``compat=True`` doubles the likelihood term (the
official code's sum of squares without 1/2), and for SGHMC also drops the momentum between steps,
as the official optimiser does (see ``sghmc_inner_step``).  With explicit standard-normal noise
the moves are their hand-written forms (:mod:`lktd_ppl.langevin`), for exact comparisons.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lktd_ppl import validation
from lktd_ppl.filter import Kernel, SamplerConfig, StageInfo
from lktd_ppl.langevin import langevin_step, sghmc_move, sghmc_step, sgld_move
from lktd_ppl.rng import fast_key
from lktd_ppl.ssm import Batch, StateSpaceModel


class SGLDState(NamedTuple):
    position: jax.Array


class SGHMCState(NamedTuple):
    position: jax.Array
    velocity: jax.Array  # u = theta_{t+1} - theta_t, kept across steps and stages


def tempered_grad(
    ssm: StateSpaceModel, config: SamplerConfig, theta: jax.Array, batch: Batch
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """grad of log pi + (N/n) * w * log lik (w = 2 in compat mode), and (log pi, log lik)."""
    weight = (2.0 if config.compat else 1.0) * config.pseudo_population / ssm.obs_size

    def f(th):
        lp, ll = ssm.prior_and_loglik(th, batch)
        return lp + weight * ll, (lp, ll)

    g, aux = jax.grad(f, has_aux=True)(theta)
    return g, aux


def _eta(config: SamplerConfig, ssm: StateSpaceModel, k: jax.Array) -> jax.Array:
    return config.schedule(config.step_size, k) * ssm.obs_size / config.pseudo_population


def sgld_inner_step(ssm, config, state, batch, k, key=None, noise=None) -> SGLDState:
    """One SGLD step at inner index k: ``blackjax.sgld`` drawing from ``key``, or, given ``noise``
    (N(0, 1), theta's shape), its hand-written explicit-noise form."""
    h = 0.5 * _eta(config, ssm, k)
    if noise is None:

        def grad_estimator(theta, b):
            return tempered_grad(ssm, config, theta, b)[0]

        return SGLDState(sgld_move(key, state.position, grad_estimator, batch, h))
    g, _ = tempered_grad(ssm, config, state.position, batch)
    return SGLDState(langevin_step(state.position, g, h, noise))


def sghmc_inner_step(ssm, config, state, batch, k, key=None, noise=None) -> SGHMCState:
    """One SGHMC step at inner index k, drawing from ``key`` (BlackJAX's moves), or, given ``noise``
    (N(0, 1), theta's shape), their hand-written explicit-noise forms.

    ``compat=True`` reproduces the official code, whose optimiser computes the new momentum into
    a local variable and never stores it: every step starts from zero momentum, so its "SGHMC" is
    a Langevin step with drift eps (n/N) grad and noise variance 2 friction eps n/N (a colder
    and, at friction 0.1, twice as fast SGLD): ``blackjax.sgld`` with step size eps n/N at
    temperature ``friction``.  The default keeps the momentum, as SGHMC does
    (``blackjax.sgmcmc.diffusions.sghmc``, :func:`lktd_ppl.langevin.sghmc_move`).
    """
    eta = _eta(config, ssm, k)
    if noise is None and config.compat:

        def grad_estimator(theta, b):
            return tempered_grad(ssm, config, theta, b)[0]

        pos = sgld_move(key, state.position, grad_estimator, batch, eta, config.friction)
        return SGHMCState(pos, pos - state.position)
    g, _ = tempered_grad(ssm, config, state.position, batch)
    if noise is None:
        return SGHMCState(*sghmc_move(key, state.position, state.velocity, g, eta, config.friction))
    if config.compat:  # from zero momentum, and the position moves by the new velocity
        zero = jnp.zeros_like(state.velocity)
        _, vel = sghmc_step(state.position, zero, g, eta, config.friction, noise)
        return SGHMCState(state.position + vel, vel)
    return SGHMCState(*sghmc_step(state.position, state.velocity, g, eta, config.friction, noise))


def _stage_kernel(ssm, config, init, inner) -> Kernel:
    validation.check(config, "sampler.")  # concrete settings only: traced ones pass
    total = config.kappa * ssm.p

    def step(key: jax.Array, state, batch: Batch, noise: jax.Array | None = None):
        lp, ll = ssm.prior_and_loglik(state.position, batch)
        ks = jnp.arange(1, config.kappa + 1)
        if noise is None:  # BlackJAX's moves, one key per inner step
            keys = jax.random.split(fast_key(key), config.kappa)

            def body(s, xs):
                k, key_k = xs
                return inner(ssm, config, s, batch, k, key=key_k), None

            state, _ = jax.lax.scan(body, state, (ks, keys))
        else:

            def body(s, xs):
                k, noise_k = xs
                return inner(ssm, config, s, batch, k, noise=noise_k), None

            z = noise.reshape(config.kappa, ssm.p)
            state, _ = jax.lax.scan(body, state, (ks, z))
        return state, StageInfo(lp, ll)

    return Kernel(init, step, total)


def sgld(ssm: StateSpaceModel, config: SamplerConfig) -> Kernel:
    """SGLD kernel: ``init(position)``, ``step(key, state, batch) -> (state, StageInfo)``."""
    return _stage_kernel(ssm, config, SGLDState, sgld_inner_step)


def sghmc(ssm: StateSpaceModel, config: SamplerConfig) -> Kernel:
    """SGHMC kernel (friction ``config.friction``), momentum carried in the state."""
    return _stage_kernel(
        ssm,
        config,
        lambda position: SGHMCState(position, jnp.zeros_like(position)),
        sghmc_inner_step,
    )
