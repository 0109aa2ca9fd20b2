"""KOVA baseline (spec section 6; Shashua & Mannor 2019): an extended Kalman filter over the flat
parameter vector theta of the Q-network, one EKF step per training stage.

    y = double-DQN target over the legal actions at s' (online selects, target network evaluates,
        synced every ``target_every`` updates; no bootstrap on termination)
    H = n x p Jacobian of Q_theta(s_i, a_i)          (per-sample gradients, vmapped ``jax.grad``)
    P- = P / (1 - eta);  S = H P- H^T + P_n = L L^T;  K = P- H^T S^-1
    theta <- theta + lr K (y - h(theta));  P <- P- - lr K S K^T = P- - lr B^T B,  B = L^-1 H P-

with P_n = obs_noise * n * I_n, P_0 = init_cov * I_p, eta = 1e-4, lr = 1.  ``compat=True`` reproduces
the official code's quirk: H (not the residual) is left-multiplied by the first-difference matrix
D (D[i, i] = 1, D[i, i-1] = -1).  The p x p covariance costs p^2 floats (p = 1284: 6.6 MB; a
[256, 256] CartPole net: 18 GB): :func:`make_kova_learner` refuses a network whose covariance
exceeds ``memory_limit_bytes`` (default a quarter of physical memory) before allocating anything.

Covariance wind-up: in directions of theta that the minibatches never excite (most of them for
the escape net: inactive ReLU units, unreached cells), P grows as (1 - eta)^-t, about e^9 = 8000 after
90 000 updates at eta = 1e-4.  In float32, P then loses positive definiteness (smallest eigenvalue
-0.1 with a largest of 2e4 after 10 000 updates at eta = 1e-3), S's Cholesky factor fails and theta
becomes NaN: plain KOVA at the spec's settings did so after about 900 000 escape steps (1 run of 1);
the 5 compat runs finished their 1M steps.  Smaller eta delays it.

Learner state: :class:`KOVAState` (theta, P, target theta, update counter).  ``q_grid``: the point
network's Q-grid, shape ``(1, cells, A)`` (the spec's KOVA samples).  :func:`kova_q_std` gives the
delta-method standard deviation sqrt(diag(J P J^T)) from KOVA's own covariance.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular

from lktd_ppl.agents.dqn import MLP, double_q_target, gamma_checked, sync_target, take
from lktd_ppl.agents.harness import Learner


class KOVAConfig(struct.PyTreeNode):
    """KOVA settings; defaults are the spec's (sections 4 and 6)."""

    obs_dim: int = struct.field(pytree_node=False, default=2)
    num_actions: int = struct.field(pytree_node=False, default=4)
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))
    gamma: float = 0.9
    eta: float = 1e-4  # process noise: P- = P / (1 - eta)
    obs_noise: float = 1.0  # P_n = obs_noise * n * I_n
    init_cov: float = 1.0  # P_0 = init_cov * I_p
    lr: float = 1.0  # multiplies the theta step and the K S K^T term
    target_every: int = struct.field(pytree_node=False, default=10)
    double_q: bool = struct.field(pytree_node=False, default=True)
    compat: bool = struct.field(
        pytree_node=False, default=False
    )  # official quirk: H left-multiplied by a first-difference matrix
    memory_limit_bytes: int | None = struct.field(
        pytree_node=False, default=None
    )  # None: a quarter of physical memory
    init_sd: float | str | None = struct.field(
        pytree_node=False, default=0.1
    )  # official: all weights and biases N(0, 0.1^2); None: flax


class KOVAState(NamedTuple):
    theta: jax.Array  # (p,)
    P: jax.Array  # (p, p)
    target_theta: jax.Array  # (p,)
    count: jax.Array  # updates done


def mlp_num_params(obs_dim: int, hidden: tuple[int, ...], out: int) -> int:
    sizes = [obs_dim, *hidden, out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def kova_memory_bytes(p: int, itemsize: int = 4) -> int:
    """Bytes of one p x p covariance (float32 by default)."""
    return int(p) * int(p) * int(itemsize)


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_kova_memory(p: int, limit_bytes: int | None = None, itemsize: int = 4) -> int:
    """Raise ValueError if the p x p covariance exceeds ``limit_bytes`` (default: 25% of physical
    memory); return the bytes needed."""
    need = kova_memory_bytes(p, itemsize)
    limit = physical_memory_bytes() // 4 if limit_bytes is None else int(limit_bytes)
    if need > limit:
        raise ValueError(
            f"KOVA needs a full p x p covariance: p = {p} parameters, {need:,} bytes "
            f"({need / 2**30:.2f} GiB) for P alone, over the limit of {limit:,} bytes "
            f"({limit / 2**30:.2f} GiB); use a smaller network or raise memory_limit_bytes"
        )
    return need


def kova_update_flops(p: int, n: int) -> float:
    """Floating-point operations of one EKF step on n transitions, to leading order: the two
    n x p x p products (H P- and B^T B), 4 n p^2."""
    return 4.0 * n * p * p


def first_difference(n: int, dtype=jnp.float32) -> jax.Array:
    """D with D[i, i] = 1, D[i, i-1] = -1: (D x)_i = x_i - x_{i-1}, (D x)_0 = x_0."""
    return jnp.eye(n, dtype=dtype) - jnp.eye(n, k=-1, dtype=dtype)


def kova_update(
    theta: jax.Array,
    P: jax.Array,
    H: jax.Array,
    residual: jax.Array,
    eta: float,
    obs_noise_cov: jax.Array,
    lr: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """One EKF step: returns (theta', P').

    P- = P / (1 - eta); S = H P- H^T + R = L L^T (Cholesky); B = L^-1 H P- (n x p);
    theta' = theta + lr K residual = theta + lr B^T (L^-1 residual);
    P' = P- - lr K S K^T = P- - lr B^T B, symmetric by construction (B^T B is a Gram matrix).

    Cost: two n x p x p products (H P and B^T B); P- is never formed (the 1/(1 - eta) scales the
    n x p product), and no p x p transpose is needed to symmetrise.
    """
    c = 1.0 / (1.0 - eta)
    HP = (H @ P) * c  # H P-, (n, p)
    S = HP @ H.T + obs_noise_cov
    chol = jnp.linalg.cholesky(0.5 * (S + S.T))
    B = solve_triangular(chol, HP, lower=True)  # L^-1 H P-
    w = solve_triangular(chol, residual, lower=True)  # L^-1 residual
    theta_new = theta + lr * (B.T @ w)  # K residual = P- H^T L^-T L^-1 residual
    return theta_new, P * c - lr * (B.T @ B)


def difference_rows(H: jax.Array) -> jax.Array:
    """``first_difference(n) @ H`` without the n x n product: row i minus row i - 1."""
    return H.at[1:].add(-H[:-1])


def kova_network(config: KOVAConfig):
    """The flax MLP and the map from the flat theta to its parameter pytree (nothing allocated)."""
    net = MLP(tuple(config.hidden), config.num_actions, config.init_sd)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, config.obs_dim)))
    _, unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
    return net, unravel


def make_kova_learner(config: KOVAConfig | None = None) -> Learner:
    config = config or KOVAConfig()
    hidden = tuple(config.hidden)
    p = mlp_num_params(config.obs_dim, hidden, config.num_actions)
    check_kova_memory(p, config.memory_limit_bytes)  # before anything is allocated
    net, unravel = kova_network(config)

    def apply(theta, obs):
        return net.apply(unravel(theta), obs)

    def init(key):
        theta, _ = ravel_pytree(net.init(key, jnp.zeros((1, config.obs_dim), jnp.float32)))
        P = config.init_cov * jnp.eye(p, dtype=theta.dtype)
        return KOVAState(theta, P, theta, jnp.zeros((), jnp.int32))

    def q_values(state, member, obs):
        return apply(state.theta, obs)

    def q_grid(state, obs):
        return apply(state.theta, obs)[None]

    def update(key, state, batch):
        n = batch["reward"].shape[0]
        q_next_target = apply(state.target_theta, batch["next_obs"])
        q_next_select = apply(state.theta, batch["next_obs"]) if config.double_q else q_next_target
        y = double_q_target(batch, config.gamma, q_next_target, q_next_select)

        def q_at(theta, obs, action):  # one sample: Q_theta(s_i, a_i)
            return apply(theta, obs[None])[0, action]

        h0 = take(apply(state.theta, batch["obs"]), batch["action"])
        # per-sample gradients (n x p): a vmapped grad costs one backward pass per sample, where
        # jax.jacrev of the batched h pushes n cotangents through the whole batch
        H = jax.vmap(jax.grad(q_at), in_axes=(None, 0, 0))(
            state.theta, batch["obs"], batch["action"]
        )
        if config.compat:
            H = difference_rows(H)
        R = config.obs_noise * n * jnp.eye(n, dtype=H.dtype)
        theta, P = kova_update(state.theta, state.P, H, y - h0, config.eta, R, config.lr)
        count = state.count + 1
        target = sync_target(state.target_theta, theta, count, config.target_every)
        return KOVAState(theta, P, target, count)

    return Learner(members=1, init=init, q_values=q_values, q_grid=q_grid, update=update)


def kova_q_std(config: KOVAConfig, state: KOVAState, obs: jax.Array) -> jax.Array:
    """Delta-method sd of Q from KOVA's covariance: sqrt(diag(J P J^T)), shape (k, A)."""
    net, unravel = kova_network(config)
    J = jax.jacrev(lambda th: net.apply(unravel(th), obs))(state.theta)  # (k, A, p)
    var = jnp.einsum("kap,pq,kaq->ka", J, state.P, J)
    return jnp.sqrt(jnp.maximum(var, 0.0))


make_learner = gamma_checked(make_kova_learner)  # the registry's factory


def flat_parameters(state: KOVAState) -> tuple[list[str], np.ndarray]:
    """KOVA's parameter mean of every seed: (["seed", "param"], (seeds, p))."""
    return ["seed", "param"], np.asarray(state.theta)
