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


def _q_model(batch, prior, bootstrap):
    obs = batch["obs"]
    layers = mlp_sites(obs.shape[-1], HIDDEN, NUM_ACTIONS, prior(batch))
    numpyro.deterministic("q", mlp_apply(layers, obs))  # (n, A); computed only where it is read
    q_sa = mlp_apply_at(layers, obs, batch["action"])
    q_next = jax.lax.stop_gradient(bootstrap(layers, batch))
    not_done = 1.0 - batch["terminated"].astype(q_sa.dtype)
    loc = q_sa - GAMMA * not_done * q_next
    numpyro.sample("reward", dist.Normal(loc, SIGMA), obs=batch["reward"])


def _sarsa(layers, batch):
    return mlp_apply_at(layers, batch["next_obs"], batch["next_action"])


def _qlearning(layers, batch):
    q_next = mlp_apply(layers, batch["next_obs"])
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


def qlearning_spike_slab(batch):
    """Q-learning measurement (max over legal next actions), annealed spike-and-slab prior."""
    _q_model(batch, _spike_slab_prior, _qlearning)


def qlearning_gaussian(batch):
    """Q-learning measurement, Gaussian prior."""
    _q_model(batch, _gaussian_prior, _qlearning)
