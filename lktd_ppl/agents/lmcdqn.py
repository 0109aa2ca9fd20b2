"""Adam LMCDQN, the Langevin peer (spec section 7; Ishfaq et al., ICLR 2024): DQN's loss minimised
by Langevin Monte Carlo with an Adam-like drift.

One noisy step k on the loss L (mean squared TD error against the target network, as DQN's):

    g_k     = grad L(theta_k)
    theta_{k+1} = theta_k - eta (g_k + a m_k / (sqrt(v_k) + lam)) + sqrt(2 eta / beta) xi_k
    m_{k+1} = alpha1 m_k + (1 - alpha1) g_k
    v_{k+1} = alpha2 v_k + (1 - alpha2) g_k^2

with xi_k ~ N(0, I), m_0 = v_0 = 0 and no bias correction.  The drift of step k uses the moments of
the previous steps (m_k, v_k), before g_k is folded in; the first step's drift is the gradient
alone.  alpha1 = ``beta1``, alpha2 = ``beta2``, lam = ``lam``, a = ``bias_factor``, beta =
``inverse_temperature`` (``inf`` switches the noise off: Adam-drift gradient descent).

A training stage runs ``updates_per_stage`` (J) noisy steps, each on its own minibatch (the
learner's ``minibatches`` is J): the spec's J steps follow the loss L_k of the data so far (the
paper's LMC-LSVI runs J steps on the whole-data loss), of which fresh minibatches are unbiased
estimates; J steps on one minibatch would target that minibatch's loss instead.  The target network
is the online one every ``target_every`` stages (fixed within a stage).  TD target: the paper's
(Mnih et al.'s DQN), the target network's value at its own greedy legal action at s'
(``double_q=True``: the online network selects, as the project's DQN does by default); no bootstrap
on termination, truncation bootstraps.

Exploration: the harness acts epsilon-greedily on the current noisy parameters, so with the
protocol's epsilon schedule on top of the Langevin noise (``eps_start = eps_end = 0`` in the
protocol gives the pure greedy-on-noisy-parameters policy of the paper).

Learner state: :class:`LMCDQNState`.  ``q_grid``: the current (noisy) network's Q, ``(1, cells, A)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from lktd_ppl.agents.dqn import MLP, gamma_checked, legal_double_q_td, sync_target
from lktd_ppl.agents.dqn import flat_parameters as flat_parameters
from lktd_ppl.agents.harness import Learner
from lktd_ppl.rng import standard_normal


class LMCDQNConfig(struct.PyTreeNode):
    """Adam LMCDQN settings.  Escape-room defaults: DQN's row (spec section 4: 32-32 network,
    eta = DQN's learning rate 1e-3, target every 10 stages, N(0, 0.1^2) initialisation) with the
    public JAX port's a = 0.1, beta = 1e5, J = 1 and the spec's alpha1, alpha2, lam; the paper's
    plain DQN target (``double_q`` False)."""

    obs_dim: int = struct.field(pytree_node=False, default=2)
    num_actions: int = struct.field(pytree_node=False, default=4)
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))
    gamma: float = 0.9
    step_size: float = 1e-3  # eta
    bias_factor: float = 0.1  # a: weight of the Adam-like drift
    inverse_temperature: float = 1e5  # beta; inf: no noise
    updates_per_stage: int = struct.field(pytree_node=False, default=1)  # J, one minibatch each
    target_every: int = struct.field(
        pytree_node=False, default=10
    )  # target network synced every this many stages
    beta1: float = 0.9  # alpha1, first-moment decay
    beta2: float = 0.999  # alpha2, second-moment decay
    lam: float = 1e-8  # lambda in m / (sqrt(v) + lambda)
    double_q: bool = struct.field(
        pytree_node=False, default=False
    )  # select a' with the online network; False: with the target network (the paper's DQN)
    init_sd: float | str | None = struct.field(
        pytree_node=False, default=0.1
    )  # N(0, init_sd^2) weights and biases; None: flax's; "torch": PyTorch's


class LMCDQNState(NamedTuple):
    params: Any
    target_params: Any
    m: Any  # first moment of the gradients of the steps so far
    v: Any  # second moment
    count: jax.Array  # training stages done


def noise_scale(config: LMCDQNConfig) -> jax.Array:
    """sqrt(2 eta / beta): the standard deviation of a step's noise per parameter."""
    return jnp.sqrt(2.0 * jnp.asarray(config.step_size) / config.inverse_temperature)


def langevin_adam_step(
    config: LMCDQNConfig, params: Any, m: Any, v: Any, grads: Any, noise: Any
) -> tuple[Any, Any, Any]:
    """One noisy step from the gradient ``grads`` at ``params`` and standard normal ``noise`` (both
    shaped like ``params``): (params, m, v) after it; the drift uses the moments ``m``, ``v`` of the
    previous steps (see the module docstring)."""
    eta, a, lam = config.step_size, config.bias_factor, config.lam
    scale = noise_scale(config)

    def theta(p, g, m_, v_, z):
        return p - eta * (g + a * m_ / (jnp.sqrt(v_) + lam)) + scale * z

    new_params = jax.tree.map(theta, params, grads, m, v, noise)
    new_m = jax.tree.map(lambda m_, g: config.beta1 * m_ + (1.0 - config.beta1) * g, m, grads)
    new_v = jax.tree.map(lambda v_, g: config.beta2 * v_ + (1.0 - config.beta2) * g * g, v, grads)
    return new_params, new_m, new_v


def network(config: LMCDQNConfig) -> MLP:
    return MLP(tuple(config.hidden), config.num_actions, config.init_sd)


def td_loss(config: LMCDQNConfig, params: Any, target_params: Any, batch: dict) -> jax.Array:
    """L(theta): the mean squared TD error of ``params`` on ``batch`` (leaves (n, ...)) against the
    target network (DQN's loss; the bootstrap value carries no gradient)."""
    net = network(config)
    q_next_target = net.apply(target_params, batch["next_obs"])
    q_next_select = net.apply(params, batch["next_obs"]) if config.double_q else q_next_target
    q = net.apply(params, batch["obs"])
    td = legal_double_q_td(
        q, batch, config.gamma, q_next_target, jax.lax.stop_gradient(q_next_select)
    )
    return jnp.mean(td**2)


def lmcdqn_update(
    config: LMCDQNConfig, key: jax.Array, state: LMCDQNState, batch: dict
) -> LMCDQNState:
    """One training stage: J noisy steps (J = ``updates_per_stage``), step j on minibatch j (leaves
    (J, n, ...); with J = 1 also (n, ...)), then the periodic target sync.  The noise comes from
    the project's generator (:func:`lktd_ppl.rng.standard_normal`), one key per step."""
    j = config.updates_per_stage
    data = {k: x for k, x in batch.items() if k != "stage"}
    if data["reward"].ndim == 1:  # a single minibatch
        data = jax.tree.map(lambda x: x[None], data)
    if data["reward"].shape[0] != j:
        raise ValueError(
            f"updates_per_stage is {j} but the batch holds {data['reward'].shape[0]} minibatches"
        )
    grad_fn = jax.grad(td_loss, argnums=1)
    flat, unravel = ravel_pytree(state.params)

    def step(carry, xs):
        params, m, v = carry
        k, minibatch = xs
        grads = grad_fn(config, params, state.target_params, minibatch)
        noise = unravel(standard_normal(k, flat.shape, flat.dtype))
        return langevin_adam_step(config, params, m, v, grads, noise), None

    keys = jax.random.split(key, j)
    (params, m, v), _ = jax.lax.scan(step, (state.params, state.m, state.v), (keys, data))
    count = state.count + 1
    target = sync_target(state.target_params, params, count, config.target_every)
    return LMCDQNState(params, target, m, v, count)


def init_state(config: LMCDQNConfig, key: jax.Array) -> LMCDQNState:
    """Network parameters from ``key``, the target a copy, zero moments."""
    params = network(config).init(key, jnp.zeros((1, config.obs_dim), jnp.float32))
    zeros = jax.tree.map(jnp.zeros_like, params)
    return LMCDQNState(params, params, zeros, zeros, jnp.zeros((), jnp.int32))


def make_lmcdqn_learner(config: LMCDQNConfig | None = None) -> Learner:
    """The harness's :class:`Learner`: one member, J minibatches per stage."""
    config = config or LMCDQNConfig()
    if config.updates_per_stage < 1:
        raise ValueError(f"updates_per_stage must be at least 1, got {config.updates_per_stage}")
    for name in ("step_size", "inverse_temperature"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    net = network(config)

    def q_values(state, member, obs):
        return net.apply(state.params, obs)

    def q_grid(state, obs):
        return net.apply(state.params, obs)[None]

    def update(key, state, batch):
        return lmcdqn_update(config, key, state, batch)

    return Learner(
        members=1,
        init=lambda key: init_state(config, key),
        q_values=q_values,
        q_grid=q_grid,
        update=update,
        minibatches=config.updates_per_stage,
    )


make_learner = gamma_checked(make_lmcdqn_learner)  # the registry's factory
