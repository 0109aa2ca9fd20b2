"""Exact references for validation (spec section 5): closed-form linear-Gaussian posteriors, the
Kalman filter over a data stream with a static state, linear TD (Kalman TD), and the preconditioned
SGLD step of Lemma 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lktd_ppl.filter import SamplerConfig, augmented_drift
from lktd_ppl.ssm import Batch, StateSpaceModel


class Gaussian(NamedTuple):
    mean: jax.Array
    cov: jax.Array


def _sym(a: jax.Array) -> jax.Array:
    return 0.5 * (a + a.T)


def linear_gaussian_posterior(
    X: jax.Array,
    y: jax.Array,
    noise_sd: float | jax.Array,
    prior_mean: jax.Array,
    prior_cov: jax.Array,
    temperature_weight: float = 1.0,
) -> Gaussian:
    """Posterior of theta in y = X theta + N(0, noise_sd^2), theta ~ N(m0, P0).

    ``temperature_weight`` multiplies the log-likelihood (the tempered posterior of spec section 1:
    weight N/n for a batch of n standing in for N observations).
    """
    w = temperature_weight / jnp.broadcast_to(jnp.asarray(noise_sd) ** 2, y.shape)
    prec = jnp.linalg.inv(prior_cov) + X.T @ (w[:, None] * X)
    cov = _sym(jnp.linalg.inv(prec))
    mean = cov @ (jnp.linalg.solve(prior_cov, prior_mean) + X.T @ (w * y))
    return Gaussian(mean, cov)


def kalman_filter_static(
    X: jax.Array,
    y: jax.Array,
    noise_sd: float | jax.Array,
    prior_mean: jax.Array,
    prior_cov: jax.Array,
) -> tuple[Gaussian, Gaussian]:
    """Kalman filter over the stream (x_t, y_t) with a static state (identity dynamics, no process
    noise).  Returns the final filtered Gaussian and the filtered means/covs of every step."""
    r = jnp.broadcast_to(jnp.asarray(noise_sd) ** 2, y.shape)

    def update(carry, obs):
        m, P = carry
        x, yt, rt = obs
        s = x @ P @ x + rt
        k = P @ x / s
        m = m + k * (yt - x @ m)
        P = _sym(P - jnp.outer(k, k) * s)
        return (m, P), (m, P)

    (m, P), (ms, Ps) = jax.lax.scan(update, (prior_mean, prior_cov), (X, y, r))
    return Gaussian(m, P), Gaussian(ms, Ps)


def linear_td_design(
    phi: jax.Array, phi_next: jax.Array, terminated: jax.Array, gamma: float
) -> jax.Array:
    """Full-gradient SARSA measurement r = (phi(s,a) - gamma (1 - done) phi(s',a'))^T theta + eta:
    the design matrix of the linear-Gaussian (Kalman TD) model."""
    return phi - gamma * (1.0 - terminated)[:, None] * phi_next


def preconditioned_sgld_step(
    ssm: StateSpaceModel,
    config: SamplerConfig,
    theta: jax.Array,
    xi: jax.Array,
    batch: Batch,
    eps: jax.Array,
    z: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Lemma 1's form of one LKTD inner step (default mode), dense, for small models:

        phi' = phi + (eps/2) Sigma grad log pi~(phi | r) + sqrt(eps) chol(Sigma) z,
        Sigma = (n/N)(I - K H),   K = eps H^T (eps H H^T + R)^-1,   R = 2 (1 - alpha) sigma^2

    with log pi~(phi | r) = log pi~(phi) + (N/n) log N(r; xi, (1 - alpha) sigma^2).
    ``z`` is standard normal of size p + n.
    """
    from lktd_ppl.filter import LKTDState

    n = xi.size
    c = config.pseudo_population / n
    (g_theta, g_xi), meas = augmented_drift(ssm, config, LKTDState(theta, xi), batch)
    gamma = (1.0 - config.alpha) * meas.scale**2
    g_xi = g_xi + c * (meas.value - xi) / gamma
    p = theta.size
    grad = jnp.concatenate([g_theta, g_xi.ravel()])
    H = jnp.concatenate([jnp.zeros((n, p)), jnp.eye(n)], axis=1)
    R = jnp.diag(2.0 * gamma.ravel())
    K = eps * jnp.linalg.solve(eps * H @ H.T + R, H).T
    sigma = _sym((jnp.eye(p + n) - K @ H) / c)
    phi = jnp.concatenate([theta, xi.ravel()])
    phi = phi + 0.5 * eps * sigma @ grad + jnp.sqrt(eps) * jnp.linalg.cholesky(sigma) @ z
    return phi[:p], phi[p:].reshape(xi.shape)
