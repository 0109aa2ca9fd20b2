"""QR-DQN baseline (spec section 4; Dabney et al. 2018).

The network outputs ``num_quantiles`` values per action at the midpoints tau_i = (2i+1)/(2N).
Target: r + gamma (1 - terminated) times the target network's quantiles at the legal action at s'
that is greedy by the mean of the quantiles (of the online network with ``double_q``, the official
code's ``use_ddqn`` path; else of the target network).  Loss: ``rlax.quantile_regression_loss`` with
``huber_param = kappa`` (sum over the online quantiles, mean over the target quantiles), mean over
the batch, as the official code's ``quantile_huber_loss(..., sum_over_quantiles=True)``.  Adam 1e-2,
global grad-norm clip 1.0, target synced every 10 updates.

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


def quantile_midpoints(n: int) -> jax.Array:
    return (2.0 * jnp.arange(n, dtype=jnp.float32) + 1.0) / (2.0 * n)


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

        def loss_fn(params):
            z = quantiles(params, batch["obs"])
            z_a = jnp.take_along_axis(z, action[:, None, None], axis=1)[:, 0]  # (n, N)
            per_sample = jax.vmap(
                lambda src, tgt: rlax.quantile_regression_loss(
                    src, tau, tgt, huber_param=config.kappa
                )
            )(z_a, target)
            return jnp.mean(per_sample)

        grads = jax.grad(loss_fn)(state.params)
        return QRDQNState(*optimiser_step(opt, grads, state, config.target_every))

    return Learner(members=1, init=init, q_values=q_values, q_grid=q_grid, update=update)


make_learner = gamma_checked(make_qrdqn_learner)  # the registry's factory
