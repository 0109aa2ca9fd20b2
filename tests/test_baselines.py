"""Baselines (DQN, BootDQN, QR-DQN, KOVA) on probe problems with known Q-values
(``lktd_ppl.agents.probes``), BootDQN's disagreement, QR-DQN's quantiles, KOVA's EKF step against
the closed-form Kalman update, KOVA's memory refusal, and one short escape-harness run each."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from lktd_ppl.agents import kova as kova_mod
from lktd_ppl.agents import probes, qrdqn
from lktd_ppl.agents.bootdqn import BootDQNConfig, make_bootdqn_learner
from lktd_ppl.agents.dqn import DQNConfig, make_dqn_learner
from lktd_ppl.agents.harness import EscapeConfig, make_train
from lktd_ppl.agents.kova import (
    KOVAConfig,
    first_difference,
    kova_memory_bytes,
    kova_network,
    kova_q_std,
    kova_update,
    make_kova_learner,
)
from lktd_ppl.agents.qrdqn import (
    QRDQNConfig,
    make_qrdqn_learner,
    quantile_fn,
    quantile_loss_grad,
    quantile_midpoints,
)

PROBE = {"obs_dim": probes.NUM_STATES, "num_actions": probes.NUM_ACTIONS, "gamma": probes.GAMMA}
TOL = 0.1

# (learner, updates, states averaged over): defaults of the spec's table except the probe sizes
# (and a [16, 16] KOVA net: p = 482, so that its p x p filter is quick on 2 cores).
LEARNERS = {
    "dqn": lambda: (make_dqn_learner(DQNConfig(**PROBE)), 4000, 500),
    "bootdqn": lambda: (make_bootdqn_learner(BootDQNConfig(**PROBE)), 4000, 500),
    "qrdqn": lambda: (make_qrdqn_learner(QRDQNConfig(**PROBE)), 4000, 1000),
    "kova": lambda: (make_kova_learner(KOVAConfig(hidden=(16, 16), **PROBE)), 600, 50),
}

_FITS: dict = {}


def fitted(name: str):
    """(learner, state, time-averaged Q-grid (members, S, A)), fitted once per session."""
    if name not in _FITS:
        learner, updates, last = LEARNERS[name]()
        transitions, _ = probes.probe_transitions()
        fit = probes.make_fit(learner, updates, average_last=last)
        state, grid = fit(jax.random.key(0), transitions)
        _FITS[name] = (learner, state, np.asarray(grid))
    return _FITS[name]


PROBE_CHECKS = {  # name: (state, action, value, what a wrong learner would give)
    "(a) one step, terminated": [(0, 0, 1.0, None), (0, 1, 1.0, None)],
    "(b) discounted chain": [(1, 0, 0.9, 0.0), (1, 1, 0.9, 0.0), (2, 0, 1.0, None)],
    "(c) legal max only": [(3, 0, 0.45, 1.8), (3, 1, 0.45, 1.8), (4, 0, 0.5, None)],
    "(d) truncation bootstraps": [(5, 0, 1.9, 1.0), (5, 1, 1.9, 1.0), (6, 0, 1.0, None)],
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_probes(name):
    _, _, grid = fitted(name)
    q = grid.mean(axis=0)  # BootDQN: mean of heads; QR-DQN: q_grid is already the quantile mean
    _, q_true = probes.probe_transitions()
    for probe, checks in PROBE_CHECKS.items():
        for s, a, value, wrong in checks:
            assert abs(q[s, a] - value) < TOL, f"{name} {probe}: Q({s},{a}) = {q[s, a]:.3f}"
            if wrong is not None:
                assert abs(q[s, a] - value) < abs(q[s, a] - wrong)
    # every determined entry but the rarely visited one (the Bernoulli state: mean reward 0.3;
    # QR-DQN with kappa = 1 learns expectiles there, whose mean is 0.361, see below)
    determined = np.isfinite(q_true)
    determined[probes.RARE] = False
    err = np.abs(q - q_true)[determined]
    assert err.max() < TOL, f"{name}: max error {err.max():.3f}\n{np.round(q, 3)}"


def test_bootdqn_heads_disagree_on_rare_states():
    learner, _, grid = fitted("bootdqn")
    assert learner.members == 10 and grid.shape == (10, probes.NUM_STATES, probes.NUM_ACTIONS)
    std = grid.std(axis=0)
    visited = [0, 1, 2, 3, 5, 6]  # deterministic, many copies of each transition
    baseline = std[visited].mean()
    assert std[probes.RARE, 0] > 5 * baseline, (std[probes.RARE, 0], baseline)
    assert std[probes.DEAD].min() > 5 * baseline, (std[probes.DEAD], baseline)


def test_bootdqn_masks_and_acting_head():
    cfg = BootDQNConfig(**PROBE)
    learner = make_bootdqn_learner(cfg)
    masks = jax.vmap(learner.extra_item)(jax.random.split(jax.random.key(1), 4000))["boot_mask"]
    assert masks.shape == (4000, cfg.heads) and masks.dtype == jnp.int8
    assert abs(float(masks.mean()) - 0.5) < 0.02
    _, state, _ = fitted("bootdqn")
    head = learner.acting_member(jnp.float32(0.99), state)
    assert 0 <= int(head) < cfg.heads
    obs = probes.probe_observations()
    np.testing.assert_allclose(
        learner.q_values(state, jnp.int32(0), obs), learner.q_grid(state, obs)[head], rtol=1e-6
    )


def _bernoulli_quantiles(kappa: float) -> np.ndarray:
    cfg = QRDQNConfig(kappa=kappa, **PROBE)
    learner = make_qrdqn_learner(cfg)
    quantiles = quantile_fn(cfg)
    obs = probes.probe_observations()[probes.BERNOULLI][None]
    fit = probes.make_fit(
        learner, 4000, evaluate=lambda s: quantiles(s.params, obs)[0], average_last=1000
    )
    transitions, _ = probes.probe_transitions()
    return np.asarray(fit(jax.random.key(2), transitions)[1])  # (A, N)


def test_qrdqn_recovers_bernoulli_quantiles():
    """Pure quantile loss (kappa = 0): quantiles at tau_i = (2i+1)/20 of Bernoulli(0.3) are 0 for
    tau < 0.7 and 1 above."""
    z = _bernoulli_quantiles(0.0)
    tau = (2 * np.arange(10) + 1) / 20
    expected = (tau > 1 - probes.BERNOULLI_P).astype(float)
    assert np.abs(z - expected).max() < TOL, np.round(z, 3)


@pytest.mark.parametrize("kappa", [1.0, 0.3, 0.0])
@pytest.mark.parametrize("scale", [1.0, 200.0])
def test_quantile_loss_grad_is_the_rlax_losss_gradient(kappa, scale):
    """The closed-form gradient (sorted targets, prefix sums) against autodiff of the pairwise
    loss, with ties between and within sources and targets, and returns of LunarLander's size."""
    k1, k2 = jax.random.split(jax.random.key(0))
    source = scale * jax.random.normal(k1, (16, 7))
    target = scale * jax.random.normal(k2, (16, 9))
    target = target.at[:, 4].set(target[:, 2]).at[:, :3].set(source[:, :3])  # ties
    tau = quantile_midpoints(7)

    def loss(src):
        per = jax.vmap(lambda s, t: rlax.quantile_regression_loss(s, tau, t, huber_param=kappa))(
            src, target
        )
        return jnp.mean(per)

    want = jax.grad(loss)(source)
    got = quantile_loss_grad(source, target, tau, kappa)
    assert float(jnp.abs(want).max()) > 1e-3  # not a zero gradient
    np.testing.assert_allclose(got, want, atol=2e-6 * max(1.0, kappa))


def test_sort_floats_sorts_as_numpy_does():
    """Integer keys order floats as floats: signs, zeros, infinities, subnormals and ties."""
    x = 100.0 * jax.random.normal(jax.random.key(1), (16, 37))
    x = x.at[:, :4].set(jnp.array([-0.0, 0.0, jnp.inf, -jnp.inf])).at[:, 5].set(x[:, 6])
    x = x.at[:, 7:9].set(jnp.array([1e-40, -1e-40]))
    np.testing.assert_array_equal(qrdqn.sort_floats(x), np.sort(np.asarray(x), axis=-1))


def _random_escape_batch(key: jax.Array, n: int) -> dict:
    """n escape-room transitions at random points, random actions and rewards, every move legal."""
    k = jax.random.split(key, 4)
    return {
        "obs": jax.random.uniform(k[0], (n, 2)),
        "next_obs": jax.random.uniform(k[1], (n, 2)),
        "action": jax.random.randint(k[2], (n,), 0, 4),
        "next_action": jnp.zeros(n, jnp.int32),
        "reward": 5.0 * jax.random.normal(k[3], (n,)),
        "terminated": jnp.zeros(n),
        "next_mask": jnp.ones((n, 4), jnp.int8),
    }


def test_qrdqn_update_with_the_closed_form_is_the_autodiff_update(monkeypatch):
    """Above ``CLOSED_FORM_ABOVE`` quantiles the update pulls the closed-form gradient back through
    the network: one update lands where the autodiff update lands."""
    cfg = QRDQNConfig(hidden=(8,), num_quantiles=qrdqn.CLOSED_FORM_ABOVE + 2, target_every=1)
    batch = _random_escape_batch(jax.random.key(5), 32)
    state = make_qrdqn_learner(cfg).init(jax.random.key(0))
    closed = jax.jit(make_qrdqn_learner(cfg).update)(jax.random.key(1), state, batch)
    monkeypatch.setattr(qrdqn, "CLOSED_FORM_ABOVE", 10_000)
    autodiff = jax.jit(make_qrdqn_learner(cfg).update)(jax.random.key(1), state, batch)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), closed.params, state.params)
    assert max(jax.tree.leaves(moved)) > 1e-3
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), closed.params, autodiff.params
    )


def test_qrdqn_kappa_one_learns_expectiles():
    """With kappa = 1 every TD error of a {0, 1} reward lies in the Huber loss's quadratic branch,
    where the tau-asymmetric loss is minimised by the tau-expectile: 0.3 tau / (0.3 tau + 0.7 (1 -
    tau)), not the quantile.  Pinned here because the spec's default QR-DQN (kappa = 1) does this."""
    z = _bernoulli_quantiles(1.0)
    tau = (2 * np.arange(10) + 1) / 20
    p = probes.BERNOULLI_P
    expectiles = p * tau / (p * tau + (1 - p) * (1 - tau))
    assert np.abs(z - expectiles).max() < 0.05, np.round(z, 3)


def test_kova_update_matches_closed_form_kalman():
    """Linear model y = H theta + v, v ~ N(0, R), prior N(theta0, P / (1 - eta)): the EKF step
    equals the information-form posterior (float64, 1e-6)."""
    rng = np.random.default_rng(0)
    n, p, eta = 6, 9, 0.05
    a = rng.normal(size=(p, p))
    P = a @ a.T / p + 0.1 * np.eye(p)
    H = rng.normal(size=(n, p))
    b = rng.normal(size=(n, n))
    R = b @ b.T / n + 0.5 * np.eye(n)
    theta0 = rng.normal(size=p)
    y = rng.normal(size=n)
    prior = P / (1 - eta)
    cov = np.linalg.inv(np.linalg.inv(prior) + H.T @ np.linalg.solve(R, H))
    mean = theta0 + cov @ H.T @ np.linalg.solve(R, y - H @ theta0)
    with jax.enable_x64(True):
        args = [jnp.asarray(x, jnp.float64) for x in (theta0, P, H, y - H @ theta0)]
        theta1, P1 = kova_update(*args, eta, jnp.asarray(R), 1.0)
        assert theta1.dtype == jnp.float64
        np.testing.assert_allclose(theta1, mean, atol=1e-6, rtol=0)
        np.testing.assert_allclose(P1, cov, atol=1e-6, rtol=0)
        np.testing.assert_allclose(P1, P1.T, atol=0)
        # lr scales the step and the K S K^T term
        lr = 0.3
        S = H @ prior @ H.T + R
        K = prior @ H.T @ np.linalg.inv(S)
        theta2, P2 = kova_update(*args, eta, jnp.asarray(R), lr)
        np.testing.assert_allclose(theta2, theta0 + lr * K @ (y - H @ theta0), atol=1e-6, rtol=0)
        np.testing.assert_allclose(P2, prior - lr * K @ S @ K.T, atol=1e-6, rtol=0)


def test_kova_compat_differences_the_jacobian_only():
    cfg = KOVAConfig(hidden=(8,), compat=True, **PROBE)
    learner = make_kova_learner(cfg)
    transitions, _ = probes.probe_transitions()
    batch = {k: v[::41] for k, v in transitions.items()}  # 10 transitions
    n = batch["reward"].shape[0]
    state = learner.init(jax.random.key(3))
    new = learner.update(jax.random.key(4), state, {**batch, "stage": jnp.int32(0)})
    net, unravel = kova_network(cfg)

    def h(theta):
        q = net.apply(unravel(theta), batch["obs"])
        return q[jnp.arange(n), batch["action"]]

    H = jax.jacrev(h)(state.theta)
    q_next = net.apply(unravel(state.theta), batch["next_obs"])
    v_next = jnp.max(jnp.where(batch["next_mask"] > 0, q_next, -jnp.inf), axis=1)
    y = batch["reward"] + cfg.gamma * (1 - batch["terminated"]) * v_next  # target = online at t=0
    D = first_difference(n)
    np.testing.assert_array_equal(D[:3, :3], [[1, 0, 0], [-1, 1, 0], [0, -1, 1]])
    R = cfg.obs_noise * n * jnp.eye(n)
    theta, P = kova_update(state.theta, state.P, D @ H, y - h(state.theta), cfg.eta, R, cfg.lr)
    np.testing.assert_allclose(new.theta, theta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new.P, P, rtol=1e-4, atol=1e-5)


def test_kova_own_covariance_is_wider_off_data():
    """The delta-method sd sqrt(diag(J P J^T)) is larger at the never-visited state."""
    _, state, _ = fitted("kova")
    cfg = KOVAConfig(hidden=(16, 16), **PROBE)
    sd = np.asarray(kova_q_std(cfg, state, probes.probe_observations()))
    assert sd.shape == (probes.NUM_STATES, probes.NUM_ACTIONS) and np.isfinite(sd).all()
    assert sd[probes.DEAD].min() > 3 * sd[[0, 1, 2, 3, 5, 6, 7]].max(), np.round(sd, 3)


def test_kova_memory_refusal(monkeypatch):
    assert kova_memory_bytes(1284) == 1284 * 1284 * 4  # the escape net: 6.6 MB
    monkeypatch.setattr(kova_mod, "physical_memory_bytes", lambda: 16 * 2**30)
    big = KOVAConfig(obs_dim=4, num_actions=2, hidden=(256, 256))  # CartPole [256, 256]
    p = 4 * 256 + 256 + 256 * 256 + 256 + 256 * 2 + 2
    with pytest.raises(ValueError, match=rf"p = {p}.*{p * p * 4:,} bytes.*limit of {4 * 2**30:,}"):
        make_kova_learner(big)
    with pytest.raises(ValueError, match="memory_limit_bytes"):
        make_kova_learner(KOVAConfig(memory_limit_bytes=1_000_000))  # p = 1284 needs 6.6 MB
    make_kova_learner(KOVAConfig())  # fits


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_bootdqn_learner(BootDQNConfig(hidden=(8,))),
        lambda: make_qrdqn_learner(QRDQNConfig(hidden=(8,))),
        lambda: make_kova_learner(KOVAConfig(hidden=(8,))),
    ],
    ids=["bootdqn", "qrdqn", "kova"],
)
def test_runs_in_escape_harness(make):
    """The harness accepts each learner (extras in the buffer, acting member, sample shapes)."""
    learner = make()
    cfg = EscapeConfig(
        total_steps=2000, train_start=1000, window=1000, evals_per_window=1, sample_size=20
    )
    out = make_train(cfg, learner)(jax.random.split(jax.random.key(0), 1), progress=False)
    assert out["final"]["valid"].sum() == 20 * learner.members
    assert np.isfinite(out["metrics"]["mse"][:, -1]).all()


@pytest.mark.parametrize(
    "make, cfg", [(make_dqn_learner, DQNConfig), (make_qrdqn_learner, QRDQNConfig)]
)
def test_official_initialisation(make, cfg):
    """Default: every weight and bias N(0, 0.1^2), as the official networks; None: flax's."""
    leaves = jax.tree.leaves(make(cfg()).init(jax.random.key(0)).params)
    values = np.concatenate([np.ravel(x) for x in leaves])
    assert values.size > 1000
    assert abs(values.std() - 0.1) < 0.01 and abs(values.mean()) < 0.01
    biases = [np.asarray(x) for x in leaves if np.ndim(x) == 1]
    assert all(np.abs(b).max() > 0 for b in biases)
    flax_leaves = jax.tree.leaves(make(cfg(init_sd=None)).init(jax.random.key(0)).params)
    assert all(np.all(np.asarray(x) == 0) for x in flax_leaves if np.ndim(x) == 1)


def test_bootdqn_torch_initialisation():
    """BootDQN's default is PyTorch's nn.Linear init, U(+-1/sqrt(fan_in)), as the official net."""
    params = make_bootdqn_learner(BootDQNConfig()).init(jax.random.key(0)).params["params"]
    for layer, fan_in in ((params["core"]["Dense_0"], 2), (params["core"]["Dense_1"], 32)):
        for x in (np.asarray(layer["kernel"]), np.asarray(layer["bias"])):
            bound = 1 / np.sqrt(fan_in)
            assert np.abs(x).max() <= bound and np.abs(x).max() > 0.8 * bound
    w = np.asarray(params["heads"]["Dense_0"]["kernel"])  # (heads, 32, A), one draw per head
    assert abs(w.std() - 1 / np.sqrt(32) / np.sqrt(3)) < 0.01
    assert not np.allclose(w[0], w[1])
