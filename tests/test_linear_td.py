"""Linear TD (Kalman TD): the full-gradient SARSA measurement on a small random MDP is linear-Gaussian,
so the posterior of theta over a fixed set of transitions is known in closed form (spec section 5)."""

import arviz_stats as azs
import jax
import jax.numpy as jnp
import numpy as np
from conftest import MODELS, draws, rel_frobenius

import lktd_ppl
from lktd_ppl.exact import linear_gaussian_posterior, linear_td_design

GAMMA, PRIOR_SD, NOISE_SD = 0.9, 5.0, 1.0  # as in models/linear_td.py


def random_mdp_transitions(seed=0, states=6, actions=2, d=3, m=300):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(states, actions, d))
    trans = rng.dirichlet(np.ones(states), size=(states, actions))
    rewards = rng.normal(size=(states, actions))
    s = rng.integers(states, size=m)
    a = rng.integers(actions, size=m)
    s2 = np.array([rng.choice(states, p=trans[i, j]) for i, j in zip(s, a, strict=True)])
    a2 = rng.integers(actions, size=m)
    terminated = (rng.random(m) < 0.1).astype(np.float32)
    r = rewards[s, a] + NOISE_SD * rng.normal(size=m)
    f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
    return {
        "phi": f32(feats[s, a]),
        "phi_next": f32(feats[s2, a2]),
        "reward": f32(r),
        "terminated": terminated,
    }


def test_lktd_matches_kalman_td_posterior():
    data = random_mdp_transitions()
    design = linear_td_design(
        jnp.asarray(data["phi"]),
        jnp.asarray(data["phi_next"]),
        jnp.asarray(data["terminated"]),
        GAMMA,
    )
    exact = linear_gaussian_posterior(
        design, jnp.asarray(data["reward"]), NOISE_SD, jnp.zeros(3), PRIOR_SD**2 * jnp.eye(3)
    )
    precision = np.linalg.inv(np.asarray(exact.cov))
    assert np.linalg.cond(precision) < 10  # a well-conditioned test problem

    model = lktd_ppl.load_model(f"{MODELS}/linear_td.py:model")
    dt = lktd_ppl.sample(
        model,
        data,
        key=jax.random.key(0),
        num_chains=4,
        num_samples=12000,
        num_warmup=1000,
        step_size=5e-4,
    )
    samples = draws(dt, "theta")
    sd = np.sqrt(np.diag(exact.cov))
    err = np.abs(samples.mean(0) - np.asarray(exact.mean)) / sd
    assert np.all(err < 0.1), err
    rel = rel_frobenius(np.cov(samples.T), exact.cov)
    assert rel < 0.10, rel
    assert np.all(azs.rhat(dt)["theta"].values < 1.01)
