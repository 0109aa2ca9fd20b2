"""Adam LMCDQN (lktd_ppl.agents.lmcdqn): two noisy steps against a NumPy hand computation, the
noise scale sqrt(2 eta / beta), CartPole learning through ``lktd train``'s spec, and an escape-room
run folder from ``lktd train --algo lmcdqn``."""

from __future__ import annotations

import csv
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_control import random_bar, run  # noqa: F401  (random_bar: a fixture)

from lktd_ppl import cli
from lktd_ppl.agents.harness import EscapeConfig, make_task
from lktd_ppl.agents.lmcdqn import (
    LMCDQNConfig,
    LMCDQNState,
    init_state,
    make_lmcdqn_learner,
    noise_scale,
)
from lktd_ppl.config import build_spec
from lktd_ppl.replay import example_transition

GAMMA = 0.9


def minibatches(obs_dim: int, num_actions: int, j: int, n: int, zero: bool = False) -> dict:
    """``j`` minibatches of ``n`` transitions, leaves (j, n, ...); random (fixed seed) or, with
    ``zero``, all-zero observations and rewards, nothing terminated, every action legal."""
    rng = np.random.default_rng(7)
    shape = (j, n)
    example = example_transition(obs_dim, num_actions)
    batch = {k: np.zeros(shape + v.shape, v.dtype) for k, v in example.items()}
    batch["next_mask"][:] = 1
    if not zero:
        batch["obs"] = rng.normal(size=(*shape, obs_dim)).astype(np.float32)
        batch["next_obs"] = rng.normal(size=(*shape, obs_dim)).astype(np.float32)
        batch["reward"] = rng.normal(size=shape).astype(np.float32)
        batch["action"] = (np.arange(n) % num_actions)[None].repeat(j, 0).astype(np.int32)
        batch["terminated"][:, ::4] = 1.0
        batch["next_mask"][:, 1::3, 0] = 0  # action 0 illegal at some s'
    return {k: jnp.asarray(v) for k, v in batch.items()}


def numpy_steps(config: LMCDQNConfig, w, b, batch: dict, moments_after: bool = False):
    """The noise-free steps of a linear Q = x W + b (no hidden layer) on the minibatches in turn,
    in float64: (W, b, [m_W, m_b], [v_W, v_b]).  ``moments_after``: the drift wrongly uses the
    moments with the step's own gradient folded in."""
    w0, b0 = np.float64(w), np.float64(b)  # the target network: the parameters at the start
    theta = [w0.copy(), b0.copy()]
    m = [np.zeros_like(w0), np.zeros_like(b0)]
    v = [np.zeros_like(w0), np.zeros_like(b0)]
    eta, a, lam = config.step_size, config.bias_factor, config.lam
    for k in range(batch["reward"].shape[0]):
        x, a_i = np.float64(batch["obs"][k]), np.asarray(batch["action"][k])
        q_next = np.float64(batch["next_obs"][k]) @ w0 + b0
        q_next = np.where(np.asarray(batch["next_mask"][k]) > 0, q_next, -np.inf)
        live = 1.0 - np.float64(batch["terminated"][k])
        y = np.float64(batch["reward"][k]) + config.gamma * live * q_next.max(axis=1)
        n = len(y)
        td = y - (x @ theta[0] + theta[1])[np.arange(n), a_i]
        onehot = np.eye(w0.shape[1])[a_i]
        grads = [-2.0 / n * x.T @ (td[:, None] * onehot), -2.0 / n * td @ onehot]
        new_m = [config.beta1 * mi + (1 - config.beta1) * g for mi, g in zip(m, grads, strict=True)]
        new_v = [
            config.beta2 * vi + (1 - config.beta2) * g * g for vi, g in zip(v, grads, strict=True)
        ]
        dm, dv = (new_m, new_v) if moments_after else (m, v)
        drift = [g + a * mi / (np.sqrt(vi) + lam) for g, mi, vi in zip(grads, dm, dv, strict=True)]
        theta = [t - eta * d for t, d in zip(theta, drift, strict=True)]
        m, v = new_m, new_v
    return theta, m, v


def test_two_steps_match_the_hand_computation():
    """Two noise-free steps (beta = inf, J = 2: one minibatch each) on a linear Q: params, m and v
    within 1e-6 of NumPy; the drift of step 2 uses the moments of step 1 only (the variant with the
    step's own gradient folded in is 1e-3 or more away); the target syncs every 2 stages."""
    config = LMCDQNConfig(
        obs_dim=3,
        num_actions=2,
        hidden=(),
        gamma=GAMMA,
        step_size=0.05,
        bias_factor=1.0,
        inverse_temperature=math.inf,
        updates_per_stage=2,
        target_every=2,
        init_sd=0.5,
    )
    learner = make_lmcdqn_learner(config)
    state = learner.init(jax.random.key(3))
    dense = state.params["params"]["Dense_0"]
    batch = minibatches(3, 2, j=2, n=16)
    update = jax.jit(learner.update)
    after = update(jax.random.key(4), state, {**batch, "stage": jnp.int32(0)})
    theta, m, v = numpy_steps(config, dense["kernel"], dense["bias"], batch)
    for name, tree, expected in (
        ("params", after.params, theta),
        ("m", after.m, m),
        ("v", after.v, v),
    ):
        leaves = [tree["params"]["Dense_0"][k] for k in ("kernel", "bias")]
        for leaf, want in zip(leaves, expected, strict=True):
            np.testing.assert_allclose(np.asarray(leaf), want, rtol=0, atol=1e-6, err_msg=name)
    assert np.abs(np.asarray(v[0])).min() > 0  # every weight got a gradient
    wrong, _, _ = numpy_steps(config, dense["kernel"], dense["bias"], batch, moments_after=True)
    assert np.abs(wrong[0] - theta[0]).max() > 1e-3
    assert int(after.count) == 1
    for old, new in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(after.target_params), strict=True
    ):
        np.testing.assert_array_equal(old, new)  # no sync after 1 stage
    again = update(jax.random.key(5), after, {**batch, "stage": jnp.int32(1)})
    for p, t in zip(
        jax.tree.leaves(again.params), jax.tree.leaves(again.target_params), strict=True
    ):
        np.testing.assert_array_equal(p, t)  # synced after 2


def test_noise_scale_on_a_flat_loss():
    """Zero parameters, zero rewards: every TD error and gradient is 0, so a step's increment is
    the noise alone: sd sqrt(2 eta / beta) within 5% over 4610 parameters, mean 0; J = 4 steps
    (drift off: a = 0) add four independent draws, sd 2 sqrt(2 eta / beta)."""
    for j, a, sd_factor in ((1, 0.1, 1.0), (4, 0.0, 2.0)):
        config = LMCDQNConfig(
            obs_dim=4,
            num_actions=2,
            hidden=(64, 64),
            gamma=0.99,
            step_size=1e-3,
            bias_factor=a,
            inverse_temperature=1e5,
            updates_per_stage=j,
        )
        base = init_state(config, jax.random.key(0))
        zeros = jax.tree.map(jnp.zeros_like, base.params)
        state = LMCDQNState(zeros, zeros, zeros, zeros, base.count)
        learner = make_lmcdqn_learner(config)
        batch = {**minibatches(4, 2, j=j, n=32, zero=True), "stage": jnp.int32(0)}
        after = jax.jit(learner.update)(jax.random.key(1), state, batch)
        step = np.asarray(ravel_pytree(after.params)[0])
        assert step.size == 4610
        expected = sd_factor * float(noise_scale(config))
        assert abs(expected / sd_factor - math.sqrt(2e-3 / 1e5)) < 1e-9
        assert abs(step.std() / expected - 1.0) < 0.05, (step.std(), expected)
        assert abs(step.mean()) < 4 * expected / math.sqrt(step.size)
        if j == 1:  # the gradient was 0: no moment moved
            assert not np.asarray(ravel_pytree(after.m)[0]).any()


def test_cartpole_learns(random_bar):  # noqa: F811
    """``lktd train --env CartPole-v1 --algo lmcdqn`` (the control defaults), 30 000 steps, 4
    vmapped seeds: mean final greedy return >= 100, every seed above the random policy's mean +
    3 sd."""
    spec = build_spec(
        algo="lmcdqn", env="CartPole-v1", steps=30_000, seeds=4, sets=["control.eval_every=10000"]
    )
    assert (spec.agent.step_size, spec.agent.hidden) == (1e-3, (64, 64))
    results = run(spec)
    final = results["eval_return"][:, -1]
    assert results["eval_return"].shape == (4, 3)
    assert final.mean() >= 100.0, final
    assert (final > random_bar).all(), (final, random_bar)


def test_escape_room_run_folder(tmp_path):
    """``lktd train --algo lmcdqn`` on the escape room, 4000 steps: the run folder's metrics are
    finite after the burn-in and the final MSE against the exact Q is below 85% of the MSE of a
    network that outputs 0 everywhere (41.6; after 4000 steps about 32)."""
    out = tmp_path / "run"
    args = ["train", "--algo", "lmcdqn", "--steps", "4000", "--out", str(out), "-q"]
    args += ["--set", "escape.window=2000", "--set", "escape.evals_per_window=2"]
    assert cli.main(args) == 0
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1000, 2000, 3000, 4000]
    mse = np.array([[float(r[f"mse_{a}"]) for a in "ENWS"] for r in rows])
    assert np.isfinite(mse).all()
    task = make_task(EscapeConfig())
    truth, mask = np.asarray(task.truth), np.asarray(task.mask)
    zero_mse = np.mean([np.mean(truth[:, a][mask[:, a]] ** 2) for a in range(4)])
    assert 41.0 < zero_mse < 42.0
    assert mse[-1].mean() < 0.85 * zero_mse, mse.mean(axis=1)
    assert mse[-1].mean() < mse[0].mean()


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="updates_per_stage must be at least 1, got 0"):
        make_lmcdqn_learner(LMCDQNConfig(updates_per_stage=0))
    with pytest.raises(ValueError, match="inverse_temperature must be positive"):
        make_lmcdqn_learner(LMCDQNConfig(inverse_temperature=0.0))
    with pytest.raises(ValueError, match="step_size must be positive, got -0.001"):
        make_lmcdqn_learner(LMCDQNConfig(step_size=-1e-3))
