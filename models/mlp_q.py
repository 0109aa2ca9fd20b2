"""MLP Q-network state-space models for RL (spec section 1).

Parameters: the weights and biases of an MLP  obs -> HIDDEN -> NUM_ACTIONS  (ReLU), each a sample
site with a prior; the measurement is the minibatch's rewards, Gaussian with known sd SIGMA.

Batch keys (what the replay buffer hands over, leading axis n):
  obs (n, d), action (n,), reward (n,), next_obs (n, d), next_action (n,), terminated (n,),
  next_mask (n, NUM_ACTIONS) legal actions at s' (Q-learning form), and ``stage`` (scalar int).

Measurements (semi-gradient: the bootstrap term is under stop-gradient):
  SARSA:       loc_i = Q(s_i, a_i) - GAMMA (1 - terminated_i) sg[Q(s'_i, a'_i)]
  Q-learning:  loc_i = Q(s_i, a_i) - GAMMA (1 - terminated_i) sg[max_{legal a} Q(s'_i, a)]
(bootstrap on truncation, never on termination).  The Q-learning target uses the current
parameters under stop-gradient (no target network, as LKTD's official code).

Priors: the official code's spike-and-slab 0.5 N(0, 0.5^2)-slab / N(0, 0.05^2)-spike mixture with
its weight lambda annealed 1.0 -> 0.5 over the first 10 000 stages, or a plain Gaussian (sd 0.5; or
2, a weak prior).

Networks: separate output heads (obs -> HIDDEN -> one value per action, the paper's), or one
action-input network ((obs, one-hot action) -> HIDDEN -> one value): every action's value then goes
through the same hidden layers and output weight, so a rarely taken action's value is tied to the
others' by the network itself rather than by its own scarce data.

Every model also records ``q`` = Q(obs, .) (n, NUM_ACTIONS) as a deterministic site: the agents
read Q-values through it, so a copy of this file with another network or prior needs no code change.
"""

import jax
import jax.numpy as jnp
import numpyro
from numpyro import distributions as dist

from lktd_ppl.nets import mlp_apply, mlp_apply_at, mlp_sites
from lktd_ppl.priors import annealed_lambda, spike_and_slab
from lktd_ppl.ssm import STAGE_KEY

HIDDEN = (32, 32)
NUM_ACTIONS = 4
GAMMA = 0.9
SIGMA = 0.1
GAUSSIAN_PRIOR_SD = 0.5
WIDE_PRIOR_SD = 2.0  # a weak prior: what the data alone say where they are scarce


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

    @staticmethod
    def sites(obs_dim, prior):
        return mlp_sites(obs_dim + NUM_ACTIONS, HIDDEN, 1, prior)

    @staticmethod
    def at(layers, obs, action):
        onehot = jax.nn.one_hot(action, NUM_ACTIONS, dtype=obs.dtype)
        return mlp_apply(layers, jnp.concatenate([obs, onehot], axis=-1))[..., 0]

    @staticmethod
    def table(layers, obs):
        n = obs.shape[0]
        actions = jnp.broadcast_to(jnp.arange(NUM_ACTIONS), (n, NUM_ACTIONS))
        obs_a = jnp.broadcast_to(obs[:, None, :], (n, NUM_ACTIONS, obs.shape[-1]))
        return _ActionInput.at(layers, obs_a, actions)


def _q_model(batch, prior, bootstrap, net=_Heads):
    obs = batch["obs"]
    layers = net.sites(obs.shape[-1], prior(batch))
    numpyro.deterministic("q", net.table(layers, obs))  # (n, A); computed only where it is read
    q_sa = net.at(layers, obs, batch["action"])
    q_next = jax.lax.stop_gradient(bootstrap(net, layers, batch))
    not_done = 1.0 - batch["terminated"].astype(q_sa.dtype)
    loc = q_sa - GAMMA * not_done * q_next
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


def qlearning_spike_slab(batch):
    """Q-learning measurement (max over legal next actions), annealed spike-and-slab prior."""
    _q_model(batch, _spike_slab_prior, _qlearning)


def qlearning_gaussian(batch):
    """Q-learning measurement, Gaussian prior."""
    _q_model(batch, _gaussian_prior, _qlearning)
