"""Gymnasium environments through the host loop: the ``module:EnvId-v0`` form, LKTD's posterior
mean of Q on a chain with known Q*, no stored transition across an episode boundary, and the
refusals of unknown and continuous-action environments."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lktd_ppl.models.mlp_control import GAMMA

from lktd_ppl import cli, training
from lktd_ppl.agents.host_loop import GymnasiumConfig
from lktd_ppl.config import RunError, build_spec, spec_from_folder
from lktd_ppl.envs.gymnasium_env import check_observations
from lktd_ppl.envs.gymnax_env import env_kind

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # chain_env:Chain-v0 imports the module from the tests folder
    sys.path.insert(0, HERE)
chain_env = importlib.import_module("chain_env")

CHAIN = "chain_env:Chain-v0"


def chain_q_star(gamma: float) -> np.ndarray:
    """Q* of the chain (SIZE, 2) by value iteration to convergence."""
    nxt, reward, terminal = chain_env.transitions()
    q = np.zeros_like(reward)
    for _ in range(10_000):
        new = reward + gamma * np.where(terminal, 0.0, q.max(axis=1)[nxt])
        if np.max(np.abs(new - q)) < 1e-12:
            return new
        q = new
    raise AssertionError("value iteration did not converge")


def test_chain_q_star_by_value_iteration():
    """The chain's Q* (gamma 0.99): the goal's 1 at the right end, the step costs before it."""
    q = chain_q_star(GAMMA)
    assert q[4, 1] == pytest.approx(1.0)
    assert q[3, 1] == pytest.approx(-0.1 + GAMMA * 1.0)
    assert q[0, 0] == pytest.approx(0.0)
    assert q[1, 0] == pytest.approx(-0.1 + GAMMA * q[0, 1])
    assert q.max() - q.min() >= 0.5


def test_env_kinds_and_refusals(capsys):
    """gymnax ids stay gymnax; other Gymnasium ids and module:Id go to the host loop; unknown ids,
    missing modules, continuous actions and image observations are refused in one line naming
    the environment."""
    assert env_kind("CartPole-v1") == "gymnax"
    assert env_kind("gymnasium:CartPole-v1") == "gymnasium"
    assert env_kind("LunarLander-v3") == "gymnasium"
    assert env_kind(CHAIN) == "gymnasium"
    with pytest.raises(RunError, match=r"unknown environment 'NoSuchEnv-v0'.*Gymnasium id"):
        build_spec(algo="dqn", env="NoSuchEnv-v0")
    with pytest.raises(RunError, match=r"'no_such_module_xyz:Foo-v0'.*cannot import module"):
        build_spec(algo="dqn", env="no_such_module_xyz:Foo-v0")
    with pytest.raises(RunError, match=r"environment 'gymnasium:Pendulum-v1' has Box actions"):
        build_spec(algo="dqn", env="gymnasium:Pendulum-v1")
    from gymnasium import spaces

    with pytest.raises(ValueError, match=r"'img-v0' has Box observations of shape \(2, 3\)"):
        check_observations("img-v0", spaces.Box(0, 1, (2, 3)), spaces)
    assert check_observations("flat-v0", spaces.Box(0, 1, (7,)), spaces) == 7
    for env in ("NoSuchEnv-v0", "gymnasium:Pendulum-v1"):
        assert cli.main(["train", "--env", env, "--algo", "dqn"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and repr(env) in err, err
    spec = build_spec(algo="dqn", env=CHAIN)
    assert (spec.agent.obs_dim, spec.agent.num_actions) == (chain_env.SIZE, 2)
    assert spec.control.task.max_steps == chain_env.MAX_STEPS


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_lktd_posterior_mean_matches_chain_q_star(tmp_path):
    """LKTD (Q-learning measurement, uniform random behaviour) trained through the CLI on
    chain_env:Chain-v0: the posterior mean of Q at every probed state-action pair (mean over the
    chains and the evaluations of the second half, read back from samples.nc) within 0.1 of Q*."""
    from lktd_ppl.diagnostics.export import load_datatree

    out = tmp_path / "chain"
    args = ["train", "--env", CHAIN, "--algo", "lktd", "--model", "mlp_control:qlearning_gaussian"]
    args += ["--steps", "3000", "--seed", "3", "--out", str(out), "-q"]
    for s in (
        "control.eps_end=1.0",  # Q-learning is off-policy: uniform behaviour visits every pair
        "control.train_start=200",
        "control.eval_every=200",
        "control.eval_episodes=2",
        "control.best_eval_episodes=2",
        "control.num_probes=20",
        "sampler.step_size=3e-3",
    ):
        args += ["--set", s]
    assert cli.main(args) == 0
    tree = load_datatree(out / "samples.nc")
    q = tree.posterior["q"].values  # (chains, evaluations, probes, actions)
    assert q.shape == (1, 15, 20, 2)
    states = tree["probe_states"]["obs"].values[0].argmax(axis=1)
    assert len(set(states.tolist())) >= 4  # the probes visit most of the chain
    mean = q[:, q.shape[1] // 2 :].mean(axis=(0, 1))
    error = np.abs(mean - chain_q_star(GAMMA)[states])
    assert error.max() < 0.1, (error.max(), states)
    rows = read_csv(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(200, 3001, 200))
    assert {r["seed"] for r in rows} == {"3"}
    reloaded = spec_from_folder(out)  # the folder's config.json runs the host loop again
    assert isinstance(reloaded.control, GymnasiumConfig) and reloaded.env == CHAIN
    assert (reloaded.control.eval_every, reloaded.control.eps_end) == (200, 1.0)


def stored(results: dict, seed_index: int) -> dict[str, np.ndarray]:
    """The transitions in a seed's replay buffer, in the order they were added."""
    buf = results["state"].replay
    size = int(buf.current_index[seed_index])  # the buffer is not full in these runs
    return {k: np.asarray(v[seed_index, 0, :size]) for k, v in buf.experience.items()}


# a time limit of 3 steps (many truncations), random actions (also test_resume's)
CHAIN_SETS = [
    "hidden=8",
    "control.max_episode_steps=3",
    "control.eps_end=1.0",
    "control.train_start=200",
    "control.eval_every=300",
    "control.eval_episodes=2",
    "control.best_eval_episodes=5",  # three rounds of two episodes, the last one cut
    "control.num_probes=8",
]


def test_host_loop_transitions_never_span_episodes():
    """DQN on the chain with a time limit of 3 steps (many truncations) and random actions:
    every stored next_obs is the chain's successor of (obs, action), never the next episode's
    first observation; ``terminated`` is 1 exactly on the chain's terminal moves and 0 on
    time-limit truncations; a' is the action taken next within an episode.  Runs are seeded by
    their key (two keys swapped give the swapped runs) and the jitted functions are traced once."""
    spec = build_spec(
        algo="dqn",
        env=CHAIN,
        steps=600,
        seeds=2,
        sets=CHAIN_SETS,
    )
    train = training.make_train(spec)
    results = train(jnp.stack([jax.random.key(0), jax.random.key(1)]), progress=False)
    nxt, _, terminal = chain_env.transitions()
    eye = np.eye(chain_env.SIZE, dtype=np.float32)
    items = stored(results, 0)
    assert len(items["obs"]) == 600  # every step but the last (still pending)
    s, a = items["obs"].argmax(axis=1), items["action"]
    np.testing.assert_array_equal(items["next_obs"], eye[nxt[s, a]])
    np.testing.assert_array_equal(items["terminated"], terminal[s, a].astype(np.float32))
    # episode ends from the episode table (lengths in order), then what ended each
    ep = results["episodes"]
    lengths = ep["length"][ep["seed_index"] == 0]
    ends = np.cumsum(lengths) - 1
    ends = ends[ends < len(s)]
    end_mask = np.zeros(len(s), bool)
    end_mask[ends] = True
    terminated = items["terminated"] > 0
    assert not (terminated & ~end_mask).any()  # termination always ends the episode
    truncated = end_mask & ~terminated
    np.testing.assert_array_equal(lengths[: len(ends)][~terminated[ends]], 3)  # the time limit
    assert truncated.sum() > 20 and terminated.sum() > 20, (truncated.sum(), terminated.sum())
    inside = ~end_mask[:-1]
    np.testing.assert_array_equal(items["next_obs"][:-1][inside], items["obs"][1:][inside])
    np.testing.assert_array_equal(items["next_action"][:-1][inside], items["action"][1:][inside])
    assert lengths.max() <= 3 and lengths.min() >= 1
    assert results["eval_return"].shape == (2, 2) and results["probe_q"].shape == (2, 2, 1, 8, 2)
    # the best evaluated learner: its evaluation's return, and a finite re-evaluation
    np.testing.assert_array_equal(
        results["best_eval_return"], results["eval_return"].max(axis=1).astype(np.float32)
    )
    assert results["best_return"].shape == (2,) and np.isfinite(results["best_return"]).all()

    swapped = train(jnp.stack([jax.random.key(1), jax.random.key(0)]), progress=False)
    np.testing.assert_array_equal(stored(swapped, 1)["obs"], items["obs"])
    np.testing.assert_array_equal(swapped["probe_q"][1], results["probe_q"][0])
    assert not np.array_equal(stored(results, 1)["obs"], items["obs"])
    assert train.traces == {
        "init": 1,
        "first": 1,
        "act": 1,
        "train": 1,
        "greedy": 1,
        "probe_q": 1,
        "best": 1,
    }
