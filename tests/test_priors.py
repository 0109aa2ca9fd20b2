"""The annealed spike-and-slab prior: NumPyro's gradient against the closed form, lambda's schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MODELS
from scipy.stats import norm

import lktd_ppl
from lktd_ppl.priors import annealed_lambda, spike_and_slab, spike_and_slab_mixture


def closed_form_grad(theta, lam, s1=0.5, s0=0.05):
    n1, n0 = lam * norm.pdf(theta, 0, s1), (1 - lam) * norm.pdf(theta, 0, s0)
    return -(n1 * theta / s1**2 + n0 * theta / s0**2) / (n1 + n0)


@pytest.mark.parametrize("lam", [1.0, 0.9, 0.5])
@pytest.mark.parametrize("form", [spike_and_slab, spike_and_slab_mixture])
def test_spike_and_slab_gradient_equals_closed_form(lam, form):
    """Both the NumPyro MixtureSameFamily form and the fast form used by the models."""
    theta = np.linspace(-1.0, 1.0, 41)
    grad = jax.vmap(jax.grad(lambda t: form(jnp.float32(lam)).log_prob(t)))(
        jnp.asarray(theta, jnp.float32)
    )
    np.testing.assert_allclose(grad, closed_form_grad(theta, lam), rtol=2e-4, atol=2e-4)
    s1, s0 = 0.5, 0.05
    density = lam * norm.pdf(theta, 0, s1) + (1 - lam) * norm.pdf(theta, 0, s0)
    np.testing.assert_allclose(
        form(jnp.float32(lam)).log_prob(jnp.asarray(theta, jnp.float32)), np.log(density), rtol=1e-5
    )


def test_spike_and_slab_samples():
    x = spike_and_slab(jnp.float32(0.3)).sample(jax.random.key(0), (200_000,))
    # variance lam s1^2 + (1 - lam) s0^2
    assert abs(float(jnp.var(x)) / (0.3 * 0.25 + 0.7 * 0.0025) - 1) < 0.02


def test_lambda_schedule():
    stages = jnp.array([0, 2500, 5000, 10_000, 50_000])
    np.testing.assert_allclose(annealed_lambda(stages), [1.0, 0.875, 0.75, 0.5, 0.5], atol=1e-7)


def _rl_batch(n=5, stage=0):
    rng = np.random.default_rng(0)
    return {
        "obs": rng.random((n, 2), dtype=np.float32),
        "action": rng.integers(4, size=n),
        "reward": -np.ones(n, np.float32),
        "next_obs": rng.random((n, 2), dtype=np.float32),
        "next_action": rng.integers(4, size=n),
        "terminated": np.zeros(n, np.float32),
        "next_mask": np.ones((n, 4), np.int8),
        "stage": jnp.int32(stage),
    }


def test_model_prior_follows_the_stage():
    """log pi(theta) of the escape model equals the sum of closed-form mixture densities with
    lambda(stage), and its gradient the closed-form gradient."""
    model = lktd_ppl.load_model(f"{MODELS}/mlp_q.py:sarsa_spike_slab")
    ssm = lktd_ppl.from_numpyro(model, _rl_batch())
    assert ssm.p == 2 * 32 + 32 + 32 * 32 + 32 + 32 * 4 + 4  # 1284, the paper's network
    theta = 0.1 * jax.random.normal(jax.random.key(0), (ssm.p,))
    for stage in [0, 5000, 20_000]:
        lam = float(annealed_lambda(stage))
        batch = _rl_batch(stage=stage)
        t = np.asarray(theta, np.float64)
        expected = np.sum(np.log(lam * norm.pdf(t, 0, 0.5) + (1 - lam) * norm.pdf(t, 0, 0.05)))
        np.testing.assert_allclose(ssm.log_prior(theta, batch), expected, rtol=1e-5)
        grad = jax.grad(ssm.log_prior)(theta, batch)
        np.testing.assert_allclose(grad, closed_form_grad(t, lam), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name, sd", [("sarsa_gaussian", 0.5), ("sarsa_wide_gaussian", 2.0)])
def test_gaussian_models_prior_is_iid_normal_with_their_sd(name, sd):
    model = lktd_ppl.load_model(f"{MODELS}/mlp_q.py:{name}")
    ssm = lktd_ppl.from_numpyro(model, _rl_batch())
    theta = 0.3 * jax.random.normal(jax.random.key(1), (ssm.p,))
    expected = np.sum(norm.logpdf(np.asarray(theta, np.float64), 0, sd))
    np.testing.assert_allclose(ssm.log_prior(theta, _rl_batch()), expected, rtol=1e-5)


def _assert_network_is(ssm, theta, batch, encode):
    """The model's Q-table and SARSA measurement equal the network (encode(obs, a) -> 32 -> 32
    -> 1, ReLU) written out with numpy, one action at a time; returns the Q-table."""
    w = ssm.constrain(theta)

    def q_closed(obs, a):
        h = np.maximum(encode(obs, a) @ w["W0"] + w["b0"], 0.0)
        h = np.maximum(h @ w["W1"] + w["b1"], 0.0)
        return (h @ w["W2"] + w["b2"])[..., 0]

    q = ssm.deterministic(theta, batch, "q")
    n = len(batch["action"])
    for a in range(4):
        np.testing.assert_allclose(q[:, a], q_closed(batch["obs"], np.full(n, a)), rtol=1e-5)
    loc = ssm.measure(theta, batch).loc
    expected = q_closed(batch["obs"], batch["action"]) - 0.9 * q_closed(
        batch["next_obs"], batch["next_action"]
    )
    np.testing.assert_allclose(loc, expected, rtol=1e-4, atol=1e-5)
    return q


def test_action_input_model_ties_actions_through_one_network():
    """The action-input network: (x, y, one-hot a) -> 32 -> 32 -> 1 (p = 1313); its Q-table and
    its SARSA measurement are the same function, loc_i = Q(s_i, a_i) - gamma Q(s'_i, a'_i), and its
    prior is the escape model's spike-and-slab."""
    model = lktd_ppl.load_model(f"{MODELS}/mlp_q.py:sarsa_action_input_spike_slab")
    batch = _rl_batch(n=7)
    ssm = lktd_ppl.from_numpyro(model, batch)
    assert ssm.p == (2 + 4) * 32 + 32 + 32 * 32 + 32 + 32 + 1
    theta = 0.3 * jax.random.normal(jax.random.key(2), (ssm.p,))
    q = _assert_network_is(
        ssm, theta, batch, lambda obs, a: np.concatenate([obs, np.eye(4)[a]], -1)
    )
    rows = np.arange(7)
    assert np.all(q[rows, batch["action"]] != q[rows, (batch["action"] + 1) % 4])
    lam = float(annealed_lambda(0))
    t = np.asarray(theta, np.float64)
    density = lam * norm.pdf(t, 0, 0.5) + (1 - lam) * norm.pdf(t, 0, 0.05)
    np.testing.assert_allclose(ssm.log_prior(theta, batch), np.sum(np.log(density)), rtol=1e-5)


MOVES = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)  # E, N, W, S in cells


@pytest.mark.parametrize(
    "name, in_dim, encode",
    [
        ("sarsa_move_input_spike_slab", 4, lambda obs, a: np.concatenate([obs, MOVES[a]], -1)),
        ("sarsa_afterstate_spike_slab", 2, lambda obs, a: obs + MOVES[a] / 10),
    ],
)
def test_structured_action_networks(name, in_dim, encode):
    """The move-input network (x, y, dx, dy) -> 32 -> 32 -> 1 and the afterstate network
    (x + dx / 10, y + dy / 10) -> 32 -> 32 -> 1: the Q-table and the SARSA measurement are that
    function written out with numpy; the afterstate network gives E from a cell and W from two
    cells east of it (the same cell aimed at) one value."""
    model = lktd_ppl.load_model(f"{MODELS}/mlp_q.py:{name}")
    batch = _rl_batch(n=7)
    ssm = lktd_ppl.from_numpyro(model, batch)
    assert ssm.p == in_dim * 32 + 32 + 32 * 32 + 32 + 32 + 1
    theta = 0.3 * jax.random.normal(jax.random.key(3), (ssm.p,))
    _assert_network_is(ssm, theta, batch, encode)
    cells = {
        **_rl_batch(n=2),
        "obs": np.array([[0.25, 0.45], [0.45, 0.45]], np.float32),
    }  # (2,4), (4,4)
    q2 = np.asarray(ssm.deterministic(theta, cells, "q"))
    same_cell = np.isclose(q2[0, 0], q2[1, 2], rtol=1e-5)  # both aim at (3, 4)
    assert same_cell == (name == "sarsa_afterstate_spike_slab")
