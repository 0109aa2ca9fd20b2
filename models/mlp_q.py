"""MLP Q-network state-space models for RL (spec section 1).

Parameters: the weights and biases of an MLP  obs -> HIDDEN -> NUM_ACTIONS  (ReLU), each a sample
site with a prior; the measurement is the minibatch's rewards, Gaussian with known sd SIGMA.

Batch keys (what the replay buffer hands over, leading axis n):
  obs (n, d), action (n,), reward (n,), next_obs (n, d), next_action (n,), terminated (n,),
  next_mask (n, NUM_ACTIONS) legal actions at s' (Q-learning form), ``discount`` (n,):
  gamma (1 - terminated) with the protocol's gamma (the LKTD agent adds it; without it, GAMMA
  below), and ``stage`` (scalar int).

Measurements (semi-gradient: the bootstrap term is under stop-gradient):
  SARSA:       loc_i = Q(s_i, a_i) - gamma (1 - terminated_i) sg[Q(s'_i, a'_i)]
  Q-learning:  loc_i = Q(s_i, a_i) - gamma (1 - terminated_i) sg[max_{legal a} Q(s'_i, a)]
(bootstrap on truncation, never on termination).  The Q-learning target uses the current
parameters under stop-gradient (no target network, as LKTD's official code).

Priors: the official code's spike-and-slab 0.5 N(0, 0.5^2)-slab / N(0, 0.05^2)-spike mixture with
its weight lambda annealed 1.0 -> 0.5 over the first 10 000 stages, or a plain Gaussian (sd 0.5; or
2, a weak prior).

Networks: separate output heads (obs -> HIDDEN -> one value per action, the paper's), or one
network that takes the action as input and gives one value, so that every action's value goes
through the same hidden layers and output weight and a rarely taken action's value is tied to the
others' by the network itself rather than by its own scarce data. The action enters as
- a one-hot vector ((obs, one-hot a) -> HIDDEN -> 1): the four actions are unrelated inputs;
- its move (dx, dy) in cells ((obs, dx, dy) -> HIDDEN -> 1): W is the negative of E, S of N, so
  the first layer's response to W is that to E reversed;
- the afterstate, the centre of the cell the move aims at (obs + (dx, dy) / GRID_SIZE -> HIDDEN ->
  1): Q(s, a) = f(s + d_a), which holds exactly in the escape room (deterministic moves, a reward
  that does not depend on the move), so every transition into a cell informs every action that
  leads there. This one knows the room's dynamics; the other two know only the action set.

Every model also records ``q`` = Q(obs, .) (n, NUM_ACTIONS) as a deterministic site: the agents
read Q-values through it, so a copy of this file with another network or prior needs no code change.
"""

import jax
import jax.numpy as jnp
import numpyro
from numpyro import distributions as dist

from lktd_ppl.envs.escape import ACTION_DELTAS, DEFAULT_SIZE
from lktd_ppl.nets import bootstrap_discount, mlp_apply, mlp_apply_at, mlp_sites
from lktd_ppl.priors import annealed_lambda, spike_and_slab
from lktd_ppl.ssm import STAGE_KEY

HIDDEN = (32, 32)
NUM_ACTIONS = 4
GAMMA = 0.9
SIGMA = 0.1
GAUSSIAN_PRIOR_SD = 0.5
WIDE_PRIOR_SD = 2.0  # a weak prior: what the data alone say where they are scarce
GRID_SIZE = DEFAULT_SIZE  # the afterstate network's cell width is 1 / GRID_SIZE in obs units


def _spike_slab_prior(batch):
    lam = annealed_lambda(batch.get(STAGE_KEY, 0), start=1.0, end=0.5, num_stages=10_000)
    mixture = spike_and_slab(lam, slab_sd=0.5, spike_sd=0.05)
    return lambda name, shape: mixture.expand(shape).to_event(len(shape))


def _gaussian_prior(batch):
    return lambda name, shape: (
        dist.Normal(0.0, GAUSSIAN_PRIOR_SD).expand(shape).to_event(len(shape))
    )


def _wide_gaussian_prior(batch):
    return lambda name, shape: dist.Normal(0.0, WIDE_PRIOR_SD).expand(shape).to_event(len(shape))


class _Heads:
    """obs -> HIDDEN -> NUM_ACTIONS: one output per action (the paper's network)."""

    @staticmethod
    def sites(obs_dim, prior):
        return mlp_sites(obs_dim, HIDDEN, NUM_ACTIONS, prior)

    table = staticmethod(mlp_apply)  # (layers, obs (n, d)) -> (n, A)
    at = staticmethod(mlp_apply_at)  # (layers, obs (n, d), action (n,)) -> (n,)


class _ActionInput:
    """(obs, one-hot action) -> HIDDEN -> 1: the action enters the first layer."""

    action_dim = NUM_ACTIONS

    @staticmethod
    def encode(obs, action):
        return jnp.concatenate([obs, jax.nn.one_hot(action, NUM_ACTIONS, dtype=obs.dtype)], -1)

    @classmethod
    def sites(cls, obs_dim, prior):
        return mlp_sites(obs_dim + cls.action_dim, HIDDEN, 1, prior)

    @classmethod
    def at(cls, layers, obs, action):
        return mlp_apply(layers, cls.encode(obs, action))[..., 0]

    @classmethod
    def table(cls, layers, obs):
        n = obs.shape[0]
        actions = jnp.broadcast_to(jnp.arange(NUM_ACTIONS), (n, NUM_ACTIONS))
        obs_a = jnp.broadcast_to(obs[:, None, :], (n, NUM_ACTIONS, obs.shape[-1]))
        return cls.at(layers, obs_a, actions)


def _move(action, dtype):
    """(dx, dy) in cells of each action, shape action.shape + (2,)."""
    return jnp.asarray(ACTION_DELTAS, dtype)[action.astype(jnp.int32)]


class _MoveInput(_ActionInput):
    """(obs, dx, dy) -> HIDDEN -> 1: the action enters as its move."""

    action_dim = 2

    @staticmethod
    def encode(obs, action):
        return jnp.concatenate([obs, _move(action, obs.dtype)], -1)


class _AfterstateInput(_ActionInput):
    """obs + (dx, dy) / GRID_SIZE -> HIDDEN -> 1: the value of the cell the move aims at."""

    action_dim = 0

    @staticmethod
    def encode(obs, action):
        return obs + _move(action, obs.dtype) / GRID_SIZE


def _q_model(batch, prior, bootstrap, net=_Heads):
    obs = batch["obs"]
    layers = net.sites(obs.shape[-1], prior(batch))
    numpyro.deterministic("q", net.table(layers, obs))  # (n, A); computed only where it is read
    q_sa = net.at(layers, obs, batch["action"])
    q_next = jax.lax.stop_gradient(bootstrap(net, layers, batch))
    loc = q_sa - bootstrap_discount(batch, GAMMA, q_sa.dtype) * q_next
    numpyro.sample("reward", dist.Normal(loc, SIGMA), obs=batch["reward"])


def _sarsa(net, layers, batch):
    return net.at(layers, batch["next_obs"], batch["next_action"])


def _qlearning(net, layers, batch):
    q_next = net.table(layers, batch["next_obs"])
    return jnp.max(jnp.where(batch["next_mask"] > 0, q_next, -jnp.inf), axis=-1)


def sarsa_spike_slab(batch):
    """SARSA measurement, annealed spike-and-slab prior (the paper's escape model)."""
    _q_model(batch, _spike_slab_prior, _sarsa)


def sarsa_gaussian(batch):
    """SARSA measurement, N(0, GAUSSIAN_PRIOR_SD^2) prior on every weight."""
    _q_model(batch, _gaussian_prior, _sarsa)


def sarsa_wide_gaussian(batch):
    """SARSA measurement, N(0, WIDE_PRIOR_SD^2) prior on every weight (little shrinkage)."""
    _q_model(batch, _wide_gaussian_prior, _sarsa)


def sarsa_action_input_spike_slab(batch):
    """SARSA measurement, annealed spike-and-slab prior, the action-input network."""
    _q_model(batch, _spike_slab_prior, _sarsa, net=_ActionInput)


def sarsa_move_input_spike_slab(batch):
    """SARSA measurement, annealed spike-and-slab prior, the action entering as its move."""
    _q_model(batch, _spike_slab_prior, _sarsa, net=_MoveInput)


def sarsa_afterstate_spike_slab(batch):
    """SARSA measurement, annealed spike-and-slab prior, the afterstate network."""
    _q_model(batch, _spike_slab_prior, _sarsa, net=_AfterstateInput)


def qlearning_spike_slab(batch):
    """Q-learning measurement (max over legal next actions), annealed spike-and-slab prior."""
    _q_model(batch, _spike_slab_prior, _qlearning)


def qlearning_gaussian(batch):
    """Q-learning measurement, Gaussian prior."""
    _q_model(batch, _gaussian_prior, _qlearning)
