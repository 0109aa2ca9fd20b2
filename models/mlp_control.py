"""MLP Q-network state-space models for control tasks (spec sections 1 and 7): any observation
size and action count, read from the batch.

Parameters: the weights and biases of an MLP  obs (d) -> HIDDEN -> A  (ReLU), each a sample site
with a Gaussian prior N(0, PRIOR_SD^2); d is ``batch["obs"].shape[-1]`` and A the width of
``batch["next_mask"]`` (the legal actions at s'), so one file serves CartPole, Acrobot,
MountainCar, ...  The measurement is the minibatch's rewards, Gaussian with known sd SIGMA.

Batch keys (the replay buffer's, leading axis n): obs (n, d), action (n,), reward (n,),
next_obs (n, d), next_action (n,), terminated (n,), next_mask (n, A), ``discount`` (n,):
gamma (1 - terminated) with the protocol's gamma (the LKTD agent adds it; without it, GAMMA
below), and ``stage`` (scalar).

Measurements (semi-gradient: the bootstrap term is under stop-gradient; it uses the current
parameters, no target network, as LKTD's official code):
  SARSA:       loc_i = Q(s_i, a_i) - gamma (1 - terminated_i) sg[Q(s'_i, a'_i)]
  Q-learning:  loc_i = Q(s_i, a_i) - gamma (1 - terminated_i) sg[Q(s'_i, argmax_{legal a} Q(s'_i, a))]
(the double-Q form with one network: the action chosen and valued by the current parameters over
the legal actions).  Bootstrap on truncation, never on termination: ``terminated`` is set on true
termination only.

With LKTD's target network (``target_every`` > 0) the learner puts the target copy's Q-values at
s' into ``batch["next_q_target"]`` (n, A); the bootstrap reads them from there (Q-learning: the
current parameters choose the greedy a', the target values it).

SIGMA sets the likelihood's weight against the step size: LKTD's drift on the weights is
eps/(2 SIGMA^2) times the summed TD-error gradient, whatever the pseudo-population N (N sets the
injected noise and the prior's weight).  Returns of control tasks are in the hundreds, so SIGMA is
1 here (the escape models' 0.1 with eps0 = 2.5e-5 would take steps a hundred times larger).

Every model records ``q`` = Q(obs, .) (n, A) as a deterministic site: the agents act on it.
"""

import jax
import jax.numpy as jnp
import numpyro
from numpyro import distributions as dist

from lktd_ppl.nets import bootstrap_discount, mlp_apply, mlp_sites, take_action

HIDDEN = (64, 64)
TARGET_KEY = "next_q_target"  # the target network's Q at s' (present only with a target network)
GAMMA = 0.99
SIGMA = 1.0
PRIOR_SD = 1.0


def _gaussian_prior(name, shape):
    return dist.Normal(0.0, PRIOR_SD).expand(shape).to_event(len(shape))


def _q_model(batch, bootstrap):
    obs = batch["obs"]
    num_actions = batch["next_mask"].shape[-1]
    layers = mlp_sites(obs.shape[-1], HIDDEN, num_actions, _gaussian_prior)
    q = mlp_apply(layers, obs)
    numpyro.deterministic("q", q)
    q_sa = take_action(q, batch["action"])
    q_next = jax.lax.stop_gradient(bootstrap(layers, batch))
    loc = q_sa - bootstrap_discount(batch, GAMMA, q_sa.dtype) * q_next
    numpyro.sample("reward", dist.Normal(loc, SIGMA), obs=batch["reward"])


def _sarsa(layers, batch):
    q_next = batch.get(TARGET_KEY, None)
    if q_next is None:
        q_next = mlp_apply(layers, batch["next_obs"])
    return take_action(q_next, batch["next_action"])


def _qlearning(layers, batch):
    q_next = mlp_apply(layers, batch["next_obs"])
    greedy = jnp.argmax(jnp.where(batch["next_mask"] > 0, q_next, -jnp.inf), axis=-1)
    # with a target network (LKTD's target_every), the current parameters choose a' and the
    # target values it
    values = batch.get(TARGET_KEY, q_next)
    return take_action(values, greedy)  # finite even where no action is legal (a blank row)


def sarsa_gaussian(batch):
    """SARSA measurement, N(0, PRIOR_SD^2) prior on every weight."""
    _q_model(batch, _sarsa)


def qlearning_gaussian(batch):
    """Q-learning measurement (greedy legal action at s'), N(0, PRIOR_SD^2) prior."""
    _q_model(batch, _qlearning)
