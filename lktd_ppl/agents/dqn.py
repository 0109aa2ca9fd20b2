"""DQN baseline (spec section 4): Adam 1e-3 on the mean-squared TD error, double-DQN target over
the legal actions at s' from a target network synced every 10 updates; never bootstraps on
termination (truncation bootstraps).

Also holds what the other DQN-type baselines share: the flax MLP, the legal greedy action and the
double-DQN target (:func:`double_q_target`).

Learner state: :class:`DQNState` (online params, target params, Adam state, update counter).
``q_grid`` is the point network's Q-grid, shape ``(1, cells, A)`` (the spec's DQN samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax
from flax import struct
from jax.flatten_util import ravel_pytree

from lktd_ppl.agents.harness import EscapeConfig, Learner


class MLP(nn.Module):
    """ReLU MLP; ``out`` outputs (linear), or the last hidden layer's activations if ``out`` is 0.

    ``init_sd``: every weight and bias starts N(0, init_sd^2) (the official code's networks, with
    0.1); None: flax's defaults (LeCun-normal weights, zero biases); ``"torch"``: PyTorch's
    ``nn.Linear`` default, weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the official
    Bootstrapped DQN's network).
    """

    hidden: Sequence[int]
    out: int
    init_sd: float | str | None = None

    def _dense(self, width: int, fan_in: int) -> nn.Dense:
        if self.init_sd is None:
            return nn.Dense(width)
        if self.init_sd == "torch":
            bound = 1.0 / math.sqrt(fan_in)

            def init(key, shape, dtype=jnp.float32):
                return jax.random.uniform(key, shape, dtype, -bound, bound)

        else:
            init = nn.initializers.normal(float(self.init_sd))
        return nn.Dense(width, kernel_init=init, bias_init=init)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(self._dense(width, x.shape[-1])(x))
        return self._dense(self.out, x.shape[-1])(x) if self.out else x


def legal_greedy(q: jax.Array, mask: jax.Array) -> jax.Array:
    """argmax over the legal actions (``mask > 0``) along the last axis."""
    return jnp.argmax(jnp.where(mask > 0, q, -jnp.inf), axis=-1).astype(jnp.int32)


def take(q: jax.Array, action: jax.Array) -> jax.Array:
    """``q[i, action[i]]`` for q (n, A), action (n,)."""
    return jnp.take_along_axis(q, action[:, None].astype(jnp.int32), axis=1)[:, 0]


def double_q_target(
    batch: dict, gamma: float, q_next_target: jax.Array, q_next_select: jax.Array
) -> jax.Array:
    """y = r + gamma (1 - terminated) Q_target(s', argmax_{legal a} Q_select(s', a)), shape (n,).

    ``q_next_select`` is the online network's Q at s' (double DQN) or the target's (plain DQN).
    """
    a_next = legal_greedy(q_next_select, batch["next_mask"])
    discount = gamma * (1.0 - batch["terminated"].astype(q_next_target.dtype))
    return jax.lax.stop_gradient(batch["reward"] + discount * take(q_next_target, a_next))


def legal_double_q_td(
    q: jax.Array, batch: dict, gamma: float, q_next_target: jax.Array, q_next_select: jax.Array
) -> jax.Array:
    """TD errors y - Q(s, a) via ``rlax.double_q_learning`` with the illegal actions of the selector
    set to -inf (so its argmax is the legal greedy action), shape (n,)."""
    selector = jnp.where(batch["next_mask"] > 0, q_next_select, -jnp.inf)
    discount = gamma * (1.0 - batch["terminated"].astype(q.dtype))
    return jax.vmap(rlax.double_q_learning)(
        q,
        batch["action"].astype(jnp.int32),
        batch["reward"].astype(q.dtype),
        discount,
        q_next_target,
        selector,
    )


def sync_target(target: Any, online: Any, count: jax.Array, every: int) -> Any:
    """The online parameters where ``count`` (updates done) is a multiple of ``every``."""
    return optax.periodic_update(online, target, count, every)


def optimiser_step(
    opt: optax.GradientTransformation, grads: Any, state: Any, target_every: int
) -> tuple[Any, Any, Any, jax.Array]:
    """One update of the online network from ``grads``, then the periodic target sync:
    (params, target params, optimiser state, updates done) from a state with ``params``,
    ``target_params``, ``opt_state`` and ``count``."""
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    count = state.count + 1
    return params, sync_target(state.target_params, params, count, target_every), opt_state, count


def adam(learning_rate: float, max_grad_norm: float | None) -> optax.GradientTransformation:
    opt = optax.adam(learning_rate)
    if max_grad_norm is None:
        return opt
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)


def check_gamma(gamma: float, escape: Any) -> None:
    """The learner's discount must be the protocol's (escape room or control task)."""
    if gamma != escape.gamma:
        raise ValueError(f"learner gamma {gamma} differs from the protocol's gamma {escape.gamma}")


class DQNConfig(struct.PyTreeNode):
    """DQN settings; defaults are the spec's table (section 4)."""

    obs_dim: int = struct.field(pytree_node=False, default=2)
    num_actions: int = struct.field(pytree_node=False, default=4)
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))
    gamma: float = 0.9
    learning_rate: float = 1e-3
    target_every: int = struct.field(
        pytree_node=False, default=10
    )  # target network synced every this many updates
    double_q: bool = struct.field(
        pytree_node=False, default=True
    )  # select a' with the online network (else with the target network)
    max_grad_norm: float | None = struct.field(
        pytree_node=False, default=None
    )  # the official DQN clips nothing
    init_sd: float | str | None = struct.field(
        pytree_node=False, default=0.1
    )  # official: all weights and biases N(0, 0.1^2); None: flax
    loss: str = struct.field(
        pytree_node=False, default="mse"
    )  # "mse": mean squared TD error; "huber": mean Huber loss (threshold 1), Stable-Baselines3's


LOSSES = ("mse", "huber")


def td_loss(td: jax.Array, kind: str) -> jax.Array:
    """The mean over the minibatch of the squared TD error or its Huber loss (threshold 1)."""
    if kind == "huber":
        return jnp.mean(optax.huber_loss(td, delta=1.0))
    if kind == "mse":
        return jnp.mean(td**2)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")


class DQNState(NamedTuple):
    params: Any
    target_params: Any
    opt_state: Any
    count: jax.Array  # updates done


def make_dqn_learner(config: DQNConfig | None = None) -> Learner:
    config = config or DQNConfig()
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    net = MLP(tuple(config.hidden), config.num_actions, config.init_sd)
    opt = adam(config.learning_rate, config.max_grad_norm)

    def init(key):
        params = net.init(key, jnp.zeros((1, config.obs_dim), jnp.float32))
        return DQNState(params, params, opt.init(params), jnp.zeros((), jnp.int32))

    def q_values(state, member, obs):
        return net.apply(state.params, obs)

    def q_grid(state, obs):
        return net.apply(state.params, obs)[None]

    def update(key, state, batch):
        q_next_target = net.apply(state.target_params, batch["next_obs"])
        q_next_select = (
            net.apply(state.params, batch["next_obs"]) if config.double_q else q_next_target
        )

        def loss_fn(params):
            q = net.apply(params, batch["obs"])
            td = legal_double_q_td(q, batch, config.gamma, q_next_target, q_next_select)
            return td_loss(td, config.loss)

        grads = jax.grad(loss_fn)(state.params)
        return DQNState(*optimiser_step(opt, grads, state, config.target_every))

    return Learner(members=1, init=init, q_values=q_values, q_grid=q_grid, update=update)


def gamma_checked(make: Callable[[Any], Learner]) -> Callable[..., Learner]:
    """``(config, escape=None) -> Learner``: ``make(config)``, after checking that the learner's
    discount is the protocol's (the registry's factory for the network baselines)."""

    def factory(config: Any, escape: Any = None) -> Learner:
        check_gamma(config.gamma, escape or EscapeConfig())
        return make(config)

    return factory


make_learner = gamma_checked(make_dqn_learner)  # the registry's factory


def flat_parameters(state: Any) -> tuple[list[str], np.ndarray]:
    """The online network's parameters of every seed, raveled: (["seed", "param"], (seeds, p))."""
    return ["seed", "param"], np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(state.params))
