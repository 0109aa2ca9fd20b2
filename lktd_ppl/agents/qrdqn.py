"""QR-DQN baseline (spec section 4; Dabney et al. 2018).

The network outputs ``num_quantiles`` values per action at the midpoints tau_i = (2i+1)/(2N).
Target: r + gamma (1 - terminated) times the target network's quantiles at the legal action at s'
that is greedy by the mean of the quantiles (of the online network with ``double_q``, the official
code's ``use_ddqn`` path; else of the target network).  Loss: ``rlax.quantile_regression_loss`` with
``huber_param = kappa`` (sum over the online quantiles, mean over the target quantiles), mean over
the batch, as the official code's ``quantile_huber_loss(..., sum_over_quantiles=True)``.  Adam 1e-2,
global grad-norm clip 1.0, target synced every 10 updates.

Above ``CLOSED_FORM_ABOVE`` quantiles the update pulls :func:`quantile_loss_grad`, that loss's
gradient in closed form, back through the network instead: it sorts each sample's target quantiles
and reads the four Huber regions off prefix sums, O(N log N) per sample, where autodiff of the
pairwise loss builds (n, N, N) arrays that outgrow the CPU's caches (LunarLander's 200 quantiles:
20 MB a batch).  Below it the two cost about the same here, and autodiff computes exactly what the
committed runs did (``experiments/archive/results/qrdqn_gradient_speed.md``).  Both give the same
gradient up to float rounding (tested).

Note: with kappa = 1 and TD errors inside [-1, 1] the Huber loss is in its quadratic branch, where
the asymmetric loss has expectiles, not quantiles, as minimisers: in the escape room (reward noise
sd 0.1) the "quantiles" learned are expectile-like.  ``kappa = 0`` gives the pure quantile loss.

Learner state: :class:`QRDQNState`.  ``q_grid``: the mean over quantiles, shape ``(1, cells, A)``
(the spec's QR-DQN samples); :func:`quantile_fn` gives the quantiles themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import rlax
from flax import struct

from lktd_ppl.agents.dqn import MLP, adam, gamma_checked, legal_greedy, optimiser_step
from lktd_ppl.agents.dqn import flat_parameters as flat_parameters
from lktd_ppl.agents.harness import Learner


class QRDQNConfig(struct.PyTreeNode):
    """QR-DQN settings; defaults are the spec's table (section 4)."""

    obs_dim: int = struct.field(pytree_node=False, default=2)
    num_actions: int = struct.field(pytree_node=False, default=4)
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))
    num_quantiles: int = struct.field(pytree_node=False, default=10)
    kappa: float = 1.0  # Huber threshold of the quantile loss; 0: pure quantile (pinball) loss
    gamma: float = 0.9
    learning_rate: float = 1e-2
    max_grad_norm: float | None = struct.field(pytree_node=False, default=1.0)
    target_every: int = struct.field(pytree_node=False, default=10)
    double_q: bool = struct.field(pytree_node=False, default=True)
    init_sd: float | str | None = struct.field(
        pytree_node=False, default=0.1
    )  # official: every weight and bias N(0, 0.1^2); None: flax's


class QRDQNState(NamedTuple):
    params: Any
    target_params: Any
    opt_state: Any
    count: jax.Array  # updates done


CLOSED_FORM_ABOVE = 128  # quantiles; where the closed-form gradient overtakes autodiff on this CPU


def quantile_midpoints(n: int) -> jax.Array:
    return (2.0 * jnp.arange(n, dtype=jnp.float32) + 1.0) / (2.0 * n)


def quantile_loss(
    source: jax.Array, target: jax.Array, tau: jax.Array, kappa: float | jax.Array
) -> jax.Array:
    """The batch mean of ``rlax.quantile_regression_loss(source[b], tau, target[b], kappa)``."""
    per_sample = jax.vmap(
        lambda src, tgt: rlax.quantile_regression_loss(src, tau, tgt, huber_param=kappa)
    )
    return jnp.mean(per_sample(source, target))


def sort_floats(x: jax.Array) -> jax.Array:
    """``jnp.sort(x, axis=-1)`` for floats without NaNs, sorted as integers: the bits of a float,
    its magnitude bits flipped when negative, order as the float does, and XLA's CPU sort of
    integers is several times faster than its sort of floats (which orders NaNs too)."""
    ints = jnp.dtype(f"int{8 * x.dtype.itemsize}")
    flip = jnp.array(jnp.iinfo(ints).max, ints)  # every bit but the sign

    def order_key(bits: jax.Array) -> jax.Array:  # its own inverse
        return bits ^ ((bits >> (8 * x.dtype.itemsize - 1)) & flip)

    keys = jnp.sort(order_key(jax.lax.bitcast_convert_type(x, ints)), axis=-1)
    return jax.lax.bitcast_convert_type(order_key(keys), x.dtype)


def quantile_loss_grad(
    source: jax.Array, target: jax.Array, tau: jax.Array, kappa: float | jax.Array
) -> jax.Array:
    """d/d source of :func:`quantile_loss`; ``source`` (n, N), ``target`` (n, M), ``tau`` (N,).

    With u_ij = target_j - source_i, weight w_ij = tau_i (u_ij >= 0) or 1 - tau_i (u_ij < 0) and
    psi the Huber derivative clip(u, -kappa, kappa) (at kappa = 0: sign(u), +1 at u = 0 as autodiff
    of ``abs`` gives), the gradient is -sum_j w_ij psi(u_ij) / (n M).  The targets sorted, the sum
    over j splits at source_i - kappa, source_i and source_i + kappa: psi is -kappa, u, u, +kappa
    there, so counts and prefix sums of the sorted targets give it (targets centred per sample
    first, for float32's sake)."""
    n, m = target.shape
    centre = jnp.mean(target, axis=-1, keepdims=True)
    sorted_t = sort_floats(target - centre)
    z = source - centre
    prefix = jnp.concatenate([jnp.zeros((n, 1), target.dtype), jnp.cumsum(sorted_t, -1)], -1)

    def below(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """How many targets lie below each x, and their sum."""
        count = jax.vmap(jnp.searchsorted)(sorted_t, x)
        return count.astype(z.dtype), jnp.take_along_axis(prefix, count, axis=-1)

    k_lo, s_lo = below(z - kappa)
    k_mid, s_mid = below(z)
    k_hi, s_hi = below(z + kappa)
    t = tau[None, :]
    huber = (1 - t) * (-kappa * k_lo + (s_mid - s_lo) - (k_mid - k_lo) * z) + t * (
        (s_hi - s_mid) - (k_hi - k_mid) * z + kappa * (m - k_hi)
    )
    absolute = -(1 - t) * k_mid + t * (m - k_mid)
    return -jnp.where(kappa > 0, huber, absolute) / (n * m)


def quantile_fn(config: QRDQNConfig) -> Callable[[Any, jax.Array], jax.Array]:
    """``(params, obs (k, d)) -> quantiles (k, A, N)``."""
    net = MLP(tuple(config.hidden), config.num_actions * config.num_quantiles, config.init_sd)

    def apply(params, obs):
        out = net.apply(params, obs)
        return out.reshape(obs.shape[0], config.num_actions, config.num_quantiles)

    return apply


def make_qrdqn_learner(config: QRDQNConfig | None = None) -> Learner:
    config = config or QRDQNConfig()
    net = MLP(tuple(config.hidden), config.num_actions * config.num_quantiles, config.init_sd)
    quantiles = quantile_fn(config)
    opt = adam(config.learning_rate, config.max_grad_norm)
    tau = quantile_midpoints(config.num_quantiles)

    def init(key):
        params = net.init(key, jnp.zeros((1, config.obs_dim), jnp.float32))
        return QRDQNState(params, params, opt.init(params), jnp.zeros((), jnp.int32))

    def q_values(state, member, obs):
        return jnp.mean(quantiles(state.params, obs), axis=-1)

    def q_grid(state, obs):
        return q_values(state, 0, obs)[None]

    def update(key, state, batch):
        z_next = quantiles(state.target_params, batch["next_obs"])  # (n, A, N)
        z_select = quantiles(state.params, batch["next_obs"]) if config.double_q else z_next
        a_next = legal_greedy(jnp.mean(z_select, axis=-1), batch["next_mask"])
        z_next_a = jnp.take_along_axis(z_next, a_next[:, None, None], axis=1)[:, 0]  # (n, N)
        discount = config.gamma * (1.0 - batch["terminated"].astype(jnp.float32))
        target = batch["reward"][:, None] + discount[:, None] * z_next_a
        target = jax.lax.stop_gradient(target)
        action = batch["action"].astype(jnp.int32)

        def taken_quantiles(params):
            z = quantiles(params, batch["obs"])
            return jnp.take_along_axis(z, action[:, None, None], axis=1)[:, 0]  # (n, N)

        if config.num_quantiles > CLOSED_FORM_ABOVE:
            z_a, pullback = jax.vjp(taken_quantiles, state.params)
            (grads,) = pullback(quantile_loss_grad(z_a, target, tau, config.kappa))
        else:
            grads = jax.grad(
                lambda p: quantile_loss(taken_quantiles(p), target, tau, config.kappa)
            )(state.params)
        return QRDQNState(*optimiser_step(opt, grads, state, config.target_every))

    return Learner(members=1, init=init, q_values=q_values, q_grid=q_grid, update=update)


make_learner = gamma_checked(make_qrdqn_learner)  # the registry's factory
