"""The LKTD family as an RL learner (LKTD, and the SGLD / SGHMC ablations on the same model).

The Q-network and its prior and measurement come from a NumPyro model file (default
``mlp_q:sarsa_spike_slab``, the paper's, shipped as ``models/mlp_q.py``); the model must record the
Q-values of ``batch["obs"]`` as the deterministic site ``q``.  ``num_chains`` chains share the
replay buffer and the minibatch (the spec's; ``own_minibatches=True``: each chain its own draw from
the shared buffer), each with its own noise; the harness draws the acting chain per episode.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lktd_ppl import scale
from lktd_ppl.agents.harness import EscapeConfig, Learner, make_train
from lktd_ppl.api import DEFAULT_MODEL, KERNELS, load_model
from lktd_ppl.filter import Kernel, SamplerConfig, lktd_only_options_error
from lktd_ppl.replay import example_transition
from lktd_ppl.ssm import (
    STAGE_KEY,
    ModelError,
    StateSpaceModel,
    from_numpyro,
    outputs_computed_from,
)


class LKTDAgentConfig(struct.PyTreeNode):
    """An LKTD-family agent: the model, the sampler (:class:`SamplerConfig`, declared once there)
    and how the chains run.  Continuous settings are pytree leaves; counts and switches are static.
    """

    model: str = struct.field(pytree_node=False, default=DEFAULT_MODEL)  # "file.py:fn" or shipped
    method: str = struct.field(pytree_node=False, default="lktd")  # lktd | sgld | sghmc
    sampler: SamplerConfig = struct.field(default_factory=SamplerConfig)
    num_chains: int = struct.field(pytree_node=False, default=1)
    init_sd: float = 0.1  # initial weights N(0, init_sd^2), as the official code
    shared_init: bool = struct.field(pytree_node=False, default=False)  # one start for all chains
    # beyond the spec: every chain draws its own minibatch from the shared buffer (the spec's chains
    # share one), so the minibatch's gradient noise is independent across chains, not common to all
    own_minibatches: bool = struct.field(pytree_node=False, default=False)
    # eps0 annealed over training stages t: step_size * (1 + t / step_size_decay_stages)^-decay
    # (0: constant, the paper's).  The inner schedule eps0 k^-0.9 still restarts every stage.
    step_size_decay: float = struct.field(pytree_node=False, default=0.0)
    step_size_decay_stages: float = 10_000.0
    # beyond the paper: eps0 times a piecewise-constant factor, ((stage, factor), ...) with stages
    # increasing: from each stage on, that factor (before the first, 1).  E.g. ((85_000, 0.1),
    # (90_000, 0.01)) lowers the step for the last stages only, while the sample window fills
    step_size_drops: tuple[tuple[int, float], ...] = struct.field(pytree_node=False, default=())
    # how the chains of a stage run: "map" (one after the other), "vmap" (side by side) or "auto"
    # (map on CPU, where a vmapped stage costs more per chain; vmap on an accelerator, whose cost per
    # step is launch latency).  Same keys and arithmetic either way.
    chain_batching: str = struct.field(pytree_node=False, default="auto")
    # beyond the paper (no target network): every chain's bootstrap values at s' come from a copy
    # of its parameters refreshed every ``target_every`` training stages (0: none).  The model
    # must read them from batch[TARGET_KEY] (models/mlp_control.py's models do)
    target_every: int = struct.field(pytree_node=False, default=0)
    # the chains of every seed split over this many local devices (lktd_ppl.scale.chain_mesh):
    # each device steps its share of the chains; the rest of the run sees all of them
    chain_devices: int = struct.field(pytree_node=False, default=1)

    def __post_init__(self) -> None:
        if any(len(pair) != 2 for pair in self.step_size_drops):
            raise ValueError(
                "LKTDAgentConfig.step_size_drops: give (stage, factor) pairs, got "
                f"{self.step_size_drops}"
            )
        drops = tuple((int(st), float(f)) for st, f in self.step_size_drops)  # JSON gives lists
        object.__setattr__(self, "step_size_drops", drops)
        stages = [st for st, _ in drops]
        if any(st < 0 for st in stages) or stages != sorted(set(stages)):
            raise ValueError(
                "LKTDAgentConfig.step_size_drops: stages must be non-negative and increasing, "
                f"got {stages}"
            )
        if any(not f > 0.0 for _, f in drops):
            raise ValueError(
                f"LKTDAgentConfig.step_size_drops: factors must be positive, got {drops}"
            )


TARGET_KEY = "next_q_target"  # (n, A): the target network's Q-values at the next states
# (n,): gamma (1 - terminated), the protocol's discount of each transition's bootstrap term; the
# shipped models read it (a model without it discounts by its own constant, checked against the
# protocol's gamma by lktd_ppl.validation)
DISCOUNT_KEY = "discount"


class TargetState(NamedTuple):
    """The chains' sampler states and, per chain, the target copy of its parameters (m, p)."""

    chains: Any
    target: jax.Array


def chain_states(state: Any) -> Any:
    """The chains' sampler states of a learner state (with or without a target network)."""
    return state.chains if isinstance(state, TargetState) else state


def _rows(example: dict, k: int) -> dict:
    return {key: jnp.broadcast_to(v, (k, *v.shape)) for key, v in example.items()}


def with_discount(batch: dict, gamma: float) -> dict:
    """``batch`` with ``batch[DISCOUNT_KEY]`` = gamma (1 - terminated): 0 where the episode
    terminated, the protocol's ``gamma`` elsewhere (truncation bootstraps)."""
    not_done = 1.0 - batch["terminated"].astype(jnp.float32)
    return {**batch, DISCOUNT_KEY: gamma * not_done}


def q_batch(obs: jax.Array, num_actions: int = 4) -> dict:
    """A batch whose deterministic site ``q`` holds Q(obs, .): ``obs`` (k, d) as both the states and
    the next states, every other field zero."""
    b = _rows(example_transition(obs.shape[-1], num_actions), obs.shape[0])
    return {**b, "obs": obs, "next_obs": obs, STAGE_KEY: jnp.int32(0)}


def stage_step_size(config: LKTDAgentConfig, stage: jax.Array) -> jax.Array:
    """eps0 of training stage ``stage`` (0 at the first): ``step_size``, annealed by
    ``(1 + t / step_size_decay_stages)^-step_size_decay``, times the ``step_size_drops`` factor
    in force at that stage."""
    t = jnp.maximum(stage, 0).astype(jnp.float32)
    eps0 = config.sampler.step_size * (1.0 + t / config.step_size_decay_stages) ** (
        -config.step_size_decay
    )
    factor = jnp.float32(1.0)
    for start, f in config.step_size_drops:
        factor = jnp.where(t >= start, jnp.float32(f), factor)
    return eps0 * factor


def lktd_kernel(
    config: LKTDAgentConfig, batch_size: int, num_actions: int = 4, obs_dim: int = 2
) -> tuple[StateSpaceModel, Kernel, SamplerConfig]:
    """(state-space model, kernel, sampler settings) of the agent's model and method, for batches
    of ``batch_size`` transitions with ``obs_dim`` observations and ``num_actions`` actions (the
    escape room's 2 and 4 by default): what every chain of the agent steps with."""
    if config.method not in KERNELS:
        raise ModelError(f"unknown method {config.method!r}; choose one of {', '.join(KERNELS)}")
    sampler = config.sampler
    error = lktd_only_options_error(config.method, sampler.temperature, sampler.precondition_max)
    if error:
        raise ValueError(f"LKTDAgentConfig.sampler.{error}")
    model = load_model(config.model)
    example = example_transition(obs_dim, num_actions)
    batch = with_discount({**_rows(example, batch_size), STAGE_KEY: jnp.int32(0)}, 1.0)
    if config.target_every:
        batch[TARGET_KEY] = jnp.zeros((batch_size, num_actions), jnp.float32)
    ssm = from_numpyro(model, batch)
    if config.target_every:
        _require_target_reader(ssm, batch, config.model)
    if not ssm.has_site("q", batch):
        raise ModelError(
            f"model {config.model} records no deterministic site 'q' (the Q-values of "
            "batch['obs'], shape (n, actions)); add numpyro.deterministic('q', ...)"
        )
    q_shape = jax.eval_shape(lambda th: ssm.deterministic(th, batch, "q"), jnp.zeros(ssm.p)).shape
    if q_shape != (batch_size, num_actions):
        raise ModelError(
            f"model {config.model} records q of shape {q_shape} for {batch_size} observations of "
            f"size {obs_dim}; the environment needs ({batch_size}, {num_actions}) ({num_actions} "
            "actions): pick a model for this environment (e.g. mlp_control:... for control tasks)"
        )
    return ssm, KERNELS[config.method](ssm, sampler), sampler


def _require_target_reader(ssm: StateSpaceModel, batch: dict, name: str) -> None:
    """A ModelError unless the model's measurement is computed from ``batch[TARGET_KEY]`` (read
    off its jaxpr, as :mod:`lktd_ppl.model_facts` checks the discount)."""
    theta = jnp.zeros(ssm.p)
    computed = outputs_computed_from(
        lambda target: ssm.measure(theta, {**batch, TARGET_KEY: target}), batch[TARGET_KEY]
    )
    if computed is not None and not any(computed):
        raise ModelError(
            f"target_every needs a model that reads the target network's Q-values at s' from "
            f"batch[{TARGET_KEY!r}]; model {name} does not (e.g. mlp_control:qlearning_gaussian "
            "does)"
        )


def protocol_dims(protocol: Any) -> tuple[int, int]:
    """(obs_dim, num_actions) of a protocol: a control task's (its environment's), or the escape
    room's (2, 4)."""
    return getattr(protocol, "obs_dim", 2), getattr(protocol, "num_actions", 4)


def lktd_learner(
    config: LKTDAgentConfig, escape: Any = None, num_actions: int | None = None
) -> Learner:
    """The harness's :class:`Learner` for ``config`` on the protocol ``escape`` (an
    :class:`EscapeConfig`, or a control task's config, whose environment gives the observation
    size and the action count)."""
    escape = escape or EscapeConfig()
    obs_dim, env_actions = protocol_dims(escape)
    num_actions = env_actions if num_actions is None else num_actions
    ssm, kernel, sampler = lktd_kernel(config, escape.batch_size, num_actions, obs_dim)
    gamma = float(escape.gamma)  # the protocol's discount, handed to the model in every minibatch
    m = config.num_chains
    if config.chain_batching not in ("auto", "map", "vmap"):
        raise ValueError(
            f"LKTDAgentConfig.chain_batching must be 'auto', 'map' or 'vmap', got "
            f"{config.chain_batching!r}"
        )
    batching = config.chain_batching
    if batching == "auto":
        batching = "map" if jax.default_backend() == "cpu" else "vmap"

    def init(key):
        shape = (1 if config.shared_init else m, ssm.p)
        positions = jnp.broadcast_to(config.init_sd * jax.random.normal(key, shape), (m, ssm.p))
        chains = jax.vmap(kernel.init)(positions)
        return TargetState(chains, positions) if config.target_every else chains

    def q_of(theta, obs):
        return ssm.deterministic(theta, q_batch(obs, num_actions), "q")

    def q_values(state, member, obs):
        return q_of(chain_states(state).position[member], obs)

    def q_grid(state, obs):
        return jax.vmap(lambda th: q_of(th, obs))(chain_states(state).position)

    def stage_kernel(batch):
        if config.step_size_decay == 0.0 and not config.step_size_drops:
            return kernel
        eps0 = stage_step_size(config, batch[STAGE_KEY])
        return KERNELS[config.method](ssm, sampler.replace(step_size=eps0))

    def update(key, state, batch):
        batch = with_discount(batch, gamma)
        if not config.target_every:
            return update_chains(key, state, batch)
        # each chain's minibatch carries its own target copy's Q at s'; the copies are refreshed
        # after every target_every-th stage
        rows = batch if own else jax.tree.map(lambda x: jnp.broadcast_to(x, (m, *x.shape)), batch)
        next_obs = rows["next_obs"]  # (m, n, d)
        targets = jax.vmap(q_of)(state.target, next_obs)  # (m, n, A)
        chains = update_chains(
            key, state.chains, {**batch, TARGET_KEY: targets if own or m > 1 else targets[0]}
        )
        refresh = (batch[STAGE_KEY] + 1) % config.target_every == 0
        return TargetState(chains, jnp.where(refresh, chains.position, state.target))

    def update_chains(key, state, batch):
        step = stage_kernel(batch).step
        if m == 1:
            new, _ = step(key, jax.tree.map(lambda x: x[0], state), batch)
            return jax.tree.map(lambda x: x[None], new)
        # each chain its own key; one shared minibatch, or its own (config.own_minibatches);
        # chains run as config.chain_batching says
        keys = jax.random.split(key, m)
        stage = batch[STAGE_KEY]
        rows = {k: v for k, v in batch.items() if k != STAGE_KEY}
        # mapped over with the chains, or closed over; the target's values are per chain
        per_chain = rows if own else {k: v for k, v in rows.items() if k == TARGET_KEY}

        def one(k, s, b):
            return step(k, s, {**rows, **b, STAGE_KEY: stage})[0]

        def chains(keys, state, per_chain):
            if batching == "map":
                return jax.lax.map(lambda x: one(*x), (keys, state, per_chain))
            return jax.vmap(one)(keys, state, per_chain)

        if mesh is None:
            return chains(keys, state, per_chain)
        return scale.chain_split(chains, mesh)(keys, state, per_chain)

    own = config.own_minibatches and m > 1
    mesh = scale.chain_mesh(config.chain_devices, m)
    return Learner(
        members=m,
        init=init,
        q_values=q_values,
        q_grid=q_grid,
        update=update,
        minibatches=m if own else 1,
    )


def flat_parameters(state) -> tuple[list[str], np.ndarray]:
    """Every chain's final parameters, seed-major: (["chain", "param"], (seeds * chains, p))."""
    pos = np.asarray(chain_states(state).position)  # (seeds, chains, p)
    return ["chain", "param"], pos.reshape(-1, pos.shape[-1])


def make_lktd_train(config: LKTDAgentConfig, escape: EscapeConfig | None = None):
    """``train(keys, progress=True, log=None) -> results`` for the escape room."""
    escape = escape or EscapeConfig()
    return make_train(escape, lktd_learner(config, escape))
