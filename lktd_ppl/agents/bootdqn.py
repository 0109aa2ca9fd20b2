"""Bootstrapped DQN baseline (spec section 4; Osband et al. 2016).

``heads`` Q-heads on a shared ReLU core.  Each transition carries a Bernoulli(``mask_prob``) mask per
head, drawn once when it enters the replay buffer (``extra_item``: field ``boot_mask``, shape
(heads,)), so each head trains on its own bootstrap resample of the buffer.  (The official code draws
a fresh mask for every minibatch instead; ``mask_per_update=True`` does that.)  Per head: the
double-DQN target over legal actions from that head's target copy, the squared TD error averaged
over the head's masked transitions; the loss is the mean over heads; the core's gradient is scaled
by 1/heads; global grad-norm clip 1.0; Adam 1e-3; target synced every 10 updates.

Acting: the acting head lives in the learner state and is redrawn uniformly every
``resample_every`` updates (the official code's schedule, which switches mid-episode): ``q_values``
ignores the harness's member and uses it, and ``acting_member`` reports it.  A harness that acts
with ``q_grid[member]`` and draws the member only at episode starts (as the escape harness's
Q-table path does) therefore switches heads at the first episode start after a redraw.  With
``resample_every=0`` the harness's per-episode member (uniform draw) acts instead.

Learner state: :class:`BootDQNState`.  ``q_grid``: all heads, shape ``(heads, cells, A)`` (the spec's
BootDQN samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from lktd_ppl.agents.dqn import MLP, adam, gamma_checked, legal_double_q_td, optimiser_step
from lktd_ppl.agents.dqn import flat_parameters as flat_parameters
from lktd_ppl.agents.harness import Learner


class BootNet(nn.Module):
    """Shared core (ReLU MLP) and ``heads`` independent heads: (k, d) -> (heads, k, A)."""

    hidden: Sequence[int]
    head_hidden: Sequence[int]
    heads: int
    num_actions: int
    init_sd: float | str | None = None  # see MLP

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = MLP(tuple(self.hidden), 0, self.init_sd, name="core")(x)
        heads = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.heads,
        )
        return heads(tuple(self.head_hidden), self.num_actions, self.init_sd, name="heads")(
            features
        )


class BootDQNConfig(struct.PyTreeNode):
    """Bootstrapped DQN settings; defaults are the spec's table (section 4)."""

    obs_dim: int = struct.field(pytree_node=False, default=2)
    num_actions: int = struct.field(pytree_node=False, default=4)
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))  # shared core
    head_hidden: tuple[int, ...] = struct.field(
        pytree_node=False, default=()
    )  # each head: linear on the core's features by default
    heads: int = struct.field(pytree_node=False, default=10)
    gamma: float = 0.9
    learning_rate: float = 1e-3
    max_grad_norm: float | None = struct.field(pytree_node=False, default=1.0)
    core_grad_scale: float | None = struct.field(pytree_node=False, default=None)  # None: 1/heads
    mask_prob: float = 0.5  # Bernoulli mask per (head, transition)
    mask_per_update: bool = struct.field(
        pytree_node=False, default=False
    )  # official code: a fresh mask per minibatch
    target_every: int = struct.field(pytree_node=False, default=10)
    resample_every: int = struct.field(
        pytree_node=False, default=10
    )  # acting head redrawn every this many updates; 0: per episode
    double_q: bool = struct.field(pytree_node=False, default=True)
    # the official network keeps PyTorch's default initialisation: U(+-1/sqrt(fan_in)) for every
    # weight and bias; None: flax's (LeCun-normal weights, zero biases)
    init_sd: float | str | None = struct.field(pytree_node=False, default="torch")


class BootDQNState(NamedTuple):
    params: Any
    target_params: Any
    opt_state: Any
    count: jax.Array  # updates done
    head: jax.Array  # the acting head (int32)


def make_bootdqn_learner(config: BootDQNConfig | None = None) -> Learner:
    config = config or BootDQNConfig()
    k = config.heads
    net = BootNet(
        tuple(config.hidden), tuple(config.head_hidden), k, config.num_actions, config.init_sd
    )
    opt = adam(config.learning_rate, config.max_grad_norm)
    core_scale = 1.0 / k if config.core_grad_scale is None else config.core_grad_scale

    def init(key):
        k_net, k_head = jax.random.split(key)
        params = net.init(k_net, jnp.zeros((1, config.obs_dim), jnp.float32))
        head = jax.random.randint(k_head, (), 0, k, dtype=jnp.int32)
        return BootDQNState(params, params, opt.init(params), jnp.zeros((), jnp.int32), head)

    def q_values(state, member, obs):
        head = state.head if config.resample_every > 0 else member
        return net.apply(state.params, obs)[head]

    def q_grid(state, obs):
        return net.apply(state.params, obs)

    def extra_item(key):
        mask = jax.random.bernoulli(key, config.mask_prob, (k,))
        return {"boot_mask": mask.astype(jnp.int8)}

    def update(key, state, batch):
        k_mask, k_head = jax.random.split(key)
        n = batch["reward"].shape[0]
        if config.mask_per_update:
            mask = jax.random.bernoulli(k_mask, config.mask_prob, (k, n)).astype(jnp.float32)
        else:
            mask = batch["boot_mask"].astype(jnp.float32).T  # (heads, n)
        q_next_target = net.apply(state.target_params, batch["next_obs"])  # (heads, n, A)
        q_next_select = (
            net.apply(state.params, batch["next_obs"]) if config.double_q else q_next_target
        )

        def loss_fn(params):
            q = net.apply(params, batch["obs"])
            td = jax.vmap(lambda q_, t_, s_: legal_double_q_td(q_, batch, config.gamma, t_, s_))(
                q, q_next_target, q_next_select
            )  # (heads, n)
            per_head = jnp.sum(mask * td**2, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
            return jnp.mean(per_head)

        grads = jax.grad(loss_fn)(state.params)
        inner = dict(grads["params"])
        inner["core"] = jax.tree.map(lambda g: g * core_scale, inner["core"])
        grads = {**grads, "params": inner}
        params, target, opt_state, count = optimiser_step(opt, grads, state, config.target_every)
        head = state.head
        if config.resample_every > 0:
            new_head = jax.random.randint(k_head, (), 0, k, dtype=jnp.int32)
            head = jnp.where(count % config.resample_every == 0, new_head, head)
        return BootDQNState(params, target, opt_state, count, head)

    def acting_member(u, state, *_):
        if config.resample_every > 0:
            return state.head
        return jnp.minimum(jnp.floor(u * k).astype(jnp.int32), k - 1)

    return Learner(
        members=k,
        init=init,
        q_values=q_values,
        q_grid=q_grid,
        update=update,
        extra_item=extra_item,
        acting_member=acting_member,
    )


make_learner = gamma_checked(make_bootdqn_learner)  # the registry's factory
