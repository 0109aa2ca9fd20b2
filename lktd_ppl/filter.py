"""The LKTD kernel (spec sections 2-3): variance-split augmented state, Langevin forecast, scalar-gain
Kalman analysis.  Pure ``init`` / ``step`` functions over NamedTuple states, BlackJAX style.

Notation: ``c = N / n`` (pseudo-population over minibatch size), ``theta`` the flat unconstrained
parameters, ``xi`` the auxiliary measurement (shaped like the observation ``r``).

Default mode samples the consistent tempered target of spec section 2::

    log pi~(phi) = log pi(theta) + c * log N(xi; h(theta), alpha sigma^2)
    log lik(phi) = c * log N(r; xi, (1 - alpha) sigma^2)

Stage (one posterior draw): xi is drawn from its exact conditional (Gibbs), then kappa inner steps::

    eps_k  = schedule(eps0, k)                    (restarts every stage)
    forecast: phi <- phi + (eps_k/2)(1/c) grad log pi~(phi) + N(0, (eps_k/c) I)   [BlackJAX SGLD]
    analysis: xi  <- xi + g_k (r - xi - v),  v ~ N(0, R/c),  R = 2(1-alpha)sigma^2,
              g_k = eps_k / (eps_k + R)

``compat=True`` reproduces the official code: xi <- r at the stage start, no c on the xi-block of
the drift, and both likelihood drifts doubled (its loss is a sum of squares without 1/2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from lktd_ppl.langevin import langevin_step
from lktd_ppl.rng import standard_normal
from lktd_ppl.ssm import Batch, Measurement, StateSpaceModel


def polynomial_schedule(decay: float = 0.9) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """eps_k = eps0 * k^-decay for inner step k = 1..kappa (the spec's default, decay 0.9)."""

    def schedule(eps0: jax.Array, k: jax.Array) -> jax.Array:
        return eps0 * jnp.asarray(k, jnp.result_type(float)) ** (-decay)

    return schedule


def constant_schedule(eps0: jax.Array, k: jax.Array) -> jax.Array:
    del k
    return eps0


class SamplerConfig(struct.PyTreeNode):
    """Hyperparameters of the LKTD family.  Continuous ones are pytree leaves (vmap-able)."""

    pseudo_population: float = 10_000.0  # N, the tempering knob
    step_size: float = 1e-5  # eps0, the paper's epsilon (not BlackJAX's step size)
    alpha: float = 0.9  # variance split (LKTD only)
    friction: float = 0.1  # SGHMC only
    kappa: int = struct.field(pytree_node=False, default=5)  # inner iterations per stage
    compat: bool = struct.field(pytree_node=False, default=False)  # official-code mode
    schedule: Callable = struct.field(pytree_node=False, default=polynomial_schedule(0.9))


class LKTDState(NamedTuple):
    position: jax.Array  # theta, flat, unconstrained (p,)
    xi: jax.Array  # auxiliary measurement, the observation's shape


class InnerNoise(NamedTuple):
    """Standard-normal inputs of one inner step: forecast noise on (theta, xi), analysis noise v."""

    theta: jax.Array
    xi: jax.Array
    v: jax.Array


def split_noise(z: jax.Array, state: LKTDState) -> InnerNoise:
    """Cut one flat standard-normal vector of size p + 2 n into the inputs of an inner step."""
    p, m = state.position.size, state.xi.size
    shape = state.xi.shape
    return InnerNoise(z[:p], z[p : p + m].reshape(shape), z[p + m :].reshape(shape))


def noise_size(state: LKTDState) -> int:
    """Number of standard normals one inner step consumes: p (theta) + n (xi) + n (v)."""
    return state.position.size + 2 * state.xi.size


class StageInfo(NamedTuple):
    log_prior: jax.Array  # log pi(theta) at the start of the stage
    log_likelihood: jax.Array  # untempered Gaussian log-likelihood of the minibatch, stage start


def _scale(meas: Measurement) -> jax.Array:
    return meas.scale**2


def augmented_drift(
    ssm: StateSpaceModel, config: SamplerConfig, state: LKTDState, batch: Batch
) -> tuple[tuple[jax.Array, jax.Array], Measurement]:
    """grad of log pi~(phi) w.r.t. (theta, xi): one forward and one backward pass, no Jacobian."""
    n = state.xi.size
    c = config.pseudo_population / n

    def f(theta):
        lp, meas = ssm.prior_and_measure(theta, batch)
        return (lp, meas.loc), meas

    (_, h), vjp, meas = jax.vjp(f, state.position, has_aux=True)
    resid = meas.weight * (state.xi - h) / (config.alpha * _scale(meas))
    if config.compat:  # doubled likelihood, and no c on the xi-block
        g_theta = vjp((jnp.ones(()), 2.0 * c * resid))[0]
        g_xi = -2.0 * resid
    else:
        g_theta = vjp((jnp.ones(()), c * resid))[0]
        g_xi = -c * resid
    return (g_theta, g_xi), meas


def inner_step(
    ssm: StateSpaceModel,
    config: SamplerConfig,
    state: LKTDState,
    batch: Batch,
    eps: jax.Array,
    key: jax.Array | None = None,
    noise: InnerNoise | None = None,
    analysis_r_factor: float = 2.0,
) -> LKTDState:
    """One forecast + analysis.  Give either ``key`` or the standard-normal ``noise``.

    ``analysis_r_factor`` is the "2" of R = 2(1-alpha)sigma^2 (kept as an argument for the
    negative control of the Lemma-1 test; never change it otherwise).
    """
    n = state.xi.size
    c = config.pseudo_population / n
    (g_theta, g_xi), meas = augmented_drift(ssm, config, state, batch)
    h_step = 0.5 * eps / c
    if noise is None:
        noise = split_noise(standard_normal(key, (noise_size(state),)), state)
    phi = (state.position, state.xi)
    theta, xi = langevin_step(phi, (g_theta, g_xi), h_step, (noise.theta, noise.xi))
    r_var = analysis_r_factor * (1.0 - config.alpha) * _scale(meas)
    gain = eps / (eps + r_var)
    xi = xi + gain * (meas.value - xi - jnp.sqrt(r_var / c) * noise.v)
    return LKTDState(theta, xi)


def gibbs_xi(
    config: SamplerConfig, meas: Measurement, key: jax.Array | None, z: jax.Array | None = None
) -> jax.Array:
    """Stage start: xi ~ N(alpha r + (1-alpha) h, alpha(1-alpha) sigma^2 n/N); compat: xi <- r."""
    if config.compat:
        return meas.value
    n = meas.value.size
    c = config.pseudo_population / n
    if z is None:
        z = standard_normal(key, meas.value.shape, meas.value.dtype)
    a = config.alpha
    mean = a * meas.value + (1.0 - a) * meas.loc
    return mean + jnp.sqrt(a * (1.0 - a) * _scale(meas) / c) * z


def gaussian_loglik(meas: Measurement) -> jax.Array:
    var = _scale(meas)
    ll = -0.5 * ((meas.value - meas.loc) ** 2 / var + jnp.log(2 * jnp.pi * var))
    return jnp.sum(meas.weight * ll)


class Kernel(NamedTuple):
    """``init(position) -> state``; ``step(key, state, batch, noise=None) -> (state, StageInfo)``.

    ``noise``, if given, is the flat vector of ``noise_size`` standard normals that one stage
    consumes (else it is drawn from ``key``).  Drawing it for many stages at once, outside the
    stage loop, is about 1.5x cheaper per number on CPU than drawing it per stage.
    """

    init: Callable[..., Any]
    step: Callable[..., Any]
    noise_size: int


def lktd(ssm: StateSpaceModel, config: SamplerConfig) -> Kernel:
    """The LKTD kernel: ``init(position) -> LKTDState``, ``step(key, state, batch) -> (state, info)``.

    One ``step`` is one training stage: the Gibbs draw of xi, then ``config.kappa`` inner steps with
    the restarting schedule.  Several chains: ``jax.vmap`` over ``key`` and ``state`` (in RL they
    share the minibatch: ``in_axes=(0, 0, None)``).
    """
    ssm.require_gaussian("LKTD")

    def init(position: jax.Array) -> LKTDState:
        return LKTDState(position, jnp.zeros(ssm.obs_shape, position.dtype))

    m = ssm.obs_size
    per_step = ssm.p + 2 * m
    total = m + config.kappa * per_step  # the Gibbs draw, then kappa inner steps

    def step(
        key: jax.Array, state: LKTDState, batch: Batch, noise: jax.Array | None = None
    ) -> tuple[LKTDState, StageInfo]:
        if noise is None:  # the whole stage's noise in one draw: cheaper than one per step
            noise = standard_normal(key, (total,), state.position.dtype)
        log_prior, meas = ssm.prior_and_measure(state.position, batch)
        z_gibbs = noise[:m].reshape(ssm.obs_shape)
        state = LKTDState(state.position, gibbs_xi(config, meas, None, z=z_gibbs))

        def body(s, xs):
            k, z_k = xs
            eps = config.schedule(config.step_size, k)
            return inner_step(ssm, config, s, batch, eps, noise=split_noise(z_k, s)), None

        ks = jnp.arange(1, config.kappa + 1)
        z_inner = noise[m:].reshape(config.kappa, per_step)
        state, _ = jax.lax.scan(body, state, (ks, z_inner))
        return state, StageInfo(log_prior, gaussian_loglik(meas))

    return Kernel(init, step, total)


# -- the exact-gain LEnKF step (dense K), for small models and the Lemma-1 check -------------------


def exact_gain_step(
    ssm: StateSpaceModel,
    config: SamplerConfig,
    state: LKTDState,
    batch: Batch,
    eps: jax.Array,
    noise: InnerNoise,
) -> LKTDState:
    """Forecast as in ``inner_step``, then the analysis with the dense Kalman gain on phi = (theta, xi):
    ``K = B H^T (H B H^T + R)^-1``, ``B = eps I``, ``H = (0, I_n)``.  O((p+n)^3): small models only.
    """
    n = state.xi.size
    c = config.pseudo_population / n
    (g_theta, g_xi), meas = augmented_drift(ssm, config, state, batch)
    h_step = 0.5 * eps / c
    theta, xi = langevin_step(
        (state.position, state.xi), (g_theta, g_xi), h_step, (noise.theta, noise.xi)
    )
    p = theta.size
    phi = jnp.concatenate([theta, xi.ravel()])
    H = jnp.concatenate([jnp.zeros((n, p), phi.dtype), jnp.eye(n, dtype=phi.dtype)], axis=1)
    B = eps * jnp.eye(p + n, dtype=phi.dtype)
    R = jnp.diag((2.0 * (1.0 - config.alpha) * _scale(meas)).ravel())
    K = jnp.linalg.solve(H @ B @ H.T + R, H @ B).T
    v = jnp.sqrt(jnp.diag(R) / c) * noise.v.ravel()
    phi = phi + K @ (meas.value.ravel() - H @ phi - v)
    return LKTDState(phi[:p], phi[p:].reshape(state.xi.shape))
