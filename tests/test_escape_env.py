"""Indoor-escape room: Gymnasium env, JAX twin, and exact DP ground truth (spec section 4)."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lktd_ppl.envs import (
    ESCAPE_ENV_ID,
    START_CELL,
    EscapeEnv,
    EscapeParams,
    EscapeState,
    action_mask,
    cell_index,
    cell_observations,
    evaluation_mask,
    exit_cell,
    legal_mask_grid,
    obs_of,
    optimal_actions,
    q_epsilon_greedy,
    q_epsilon_optimal,
    q_star,
    reset,
    step,
    step_with_noise,
)

E, N, W, S = 0, 1, 2, 3


def _place(env: EscapeEnv, x: int, y: int) -> None:
    """Walk a freshly reset env from (0, 0) to (x, y) with noise-free steps."""
    env.reset(seed=0)
    for _ in range(x):
        env.step_with_noise(E, 0.0)
    for _ in range(y):
        env.step_with_noise(N, 0.0)
    assert env.cell == (x, y)


def _q(q: np.ndarray, x: int, y: int, a: int, size: int = 10) -> float:
    return float(q[cell_index(x, y, size), a])


# ------------------------------------------------------------------ Gymnasium env


def test_reset_observation_and_mask():
    env = EscapeEnv()
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (2,)
    np.testing.assert_array_equal(obs, np.array([0.05, 0.05], np.float32))
    assert info["action_mask"].dtype == np.int8
    np.testing.assert_array_equal(info["action_mask"], [1, 1, 0, 0])
    assert env.cell == (0, 0) and env.elapsed_steps == 0


@pytest.mark.parametrize(("action", "cell"), [(E, (5, 4)), (N, (4, 5)), (W, (3, 4)), (S, (4, 3))])
def test_each_action_moves_one_cell(action, cell):
    env = EscapeEnv()
    _place(env, 4, 4)
    obs, reward, terminated, truncated, info = env.step_with_noise(action, 0.0)
    assert env.cell == cell
    np.testing.assert_allclose(obs, [0.05 + 0.1 * cell[0], 0.05 + 0.1 * cell[1]], atol=1e-7)
    assert reward == -1.0 and not terminated and not truncated
    np.testing.assert_array_equal(info["action_mask"], [1, 1, 1, 1])


@pytest.mark.parametrize(
    ("cell", "mask"),
    [
        ((0, 0), [1, 1, 0, 0]),
        ((9, 0), [0, 1, 1, 0]),
        ((0, 9), [1, 0, 0, 1]),
        ((9, 9), [0, 0, 1, 1]),
        ((5, 0), [1, 1, 1, 0]),
        ((0, 5), [1, 1, 0, 1]),
        ((9, 5), [0, 1, 1, 1]),
        ((5, 9), [1, 0, 1, 1]),
        ((5, 5), [1, 1, 1, 1]),
    ],
)
def test_action_mask_corners_edges(cell, mask):
    env = EscapeEnv()
    _place(env, *cell)
    np.testing.assert_array_equal(env.action_mask(), mask)
    np.testing.assert_array_equal(legal_mask_grid(10)[cell_index(*cell)], np.array(mask, bool))
    state = EscapeState(*(jnp.int32(v) for v in (*cell, 0)))
    np.testing.assert_array_equal(action_mask(state, EscapeParams()), mask)


def test_grid_helpers():
    obs = cell_observations(10)
    assert obs.shape == (100, 2) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[cell_index(3, 7)], [0.35, 0.75], atol=1e-7)
    assert START_CELL == 0 and cell_index(0, 0) == START_CELL and exit_cell(10) == 99
    np.testing.assert_array_equal(obs[START_CELL], np.float32([0.05, 0.05]))
    mask = legal_mask_grid(10)
    assert mask.shape == (100, 4) and mask.dtype == bool and mask.sum() == 360
    ev = evaluation_mask(10)
    assert ev.sum() == 358 and not ev[99].any() and (ev[:99] == mask[:99]).all()
    # Every cell's observation and mask agree with the env's.
    env = EscapeEnv(size=4)
    for x in range(4):
        for y in range(4):
            _place(env, x, y)
            np.testing.assert_array_equal(env._obs(), cell_observations(4)[cell_index(x, y, 4)])
            np.testing.assert_array_equal(env.action_mask(), legal_mask_grid(4)[x * 4 + y])


def test_illegal_action_bumps_and_pays():
    env = EscapeEnv()
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step_with_noise(W, 0.5)
    assert env.cell == (0, 0) and env.elapsed_steps == 1
    np.testing.assert_array_equal(obs, np.float32([0.05, 0.05]))
    assert reward == pytest.approx(-0.95, abs=1e-12)
    assert not terminated and not truncated


def test_strict_mode_raises_naming_action_and_cell():
    env = EscapeEnv(strict=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"illegal action 3 \(S\) at cell \(x=0, y=0\)"):
        env.step(S)
    _place(env, 9, 4)
    with pytest.raises(ValueError, match=r"illegal action 0 \(E\) at cell \(x=9, y=4\)"):
        env.step(E)
    assert env.cell == (9, 4)
    env.step(N)  # legal moves still work
    assert env.cell == (9, 5)


def test_action_outside_space_raises():
    env = EscapeEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in the action space"):
        env.step(4)


def test_reward_noise_injected_and_sampled():
    env = EscapeEnv()
    env.reset(seed=0)
    for z in (-2.0, 0.0, 0.3, 1.7):
        _, reward, *_ = env.step_with_noise(W, z)
        assert reward == pytest.approx(-1.0 + 0.1 * z, abs=1e-15)
    # Sampled noise: mean -1, sd 0.1 (n = 4000 bumps; 5-sigma bands), and seeding reproduces it.
    env = EscapeEnv(max_steps=10**6)

    def rewards(seed):
        env.reset(seed=seed)
        return np.array([env.step(W)[1] for _ in range(4000)])

    r = rewards(3)
    assert abs(r.mean() + 1.0) < 5 * 0.1 / np.sqrt(4000)
    assert abs(r.std(ddof=1) - 0.1) < 5 * 0.1 / np.sqrt(2 * 4000)
    np.testing.assert_array_equal(r, rewards(3))
    assert not np.array_equal(r, rewards(4))
    quiet = EscapeEnv(reward_noise_sd=0.0)
    quiet.reset(seed=0)
    assert quiet.step(E)[1] == -1.0


def test_truncation_at_exactly_200_steps():
    env = EscapeEnv()
    env.reset(seed=0)
    for t in range(1, 200):
        _, _, terminated, truncated, _ = env.step(W if t % 2 else S)
        assert not terminated and not truncated, t
    _, _, terminated, truncated, _ = env.step(W)
    assert env.elapsed_steps == 200
    assert truncated is True and terminated is False


def test_termination_on_reaching_exit():
    env = EscapeEnv()
    env.reset(seed=0)
    path = [E] * 9 + [N] * 9
    for i, a in enumerate(path):
        obs, reward, terminated, truncated, info = env.step(a)
        assert terminated == (i == len(path) - 1)
        assert not truncated
    assert env.cell == (9, 9) and env.elapsed_steps == 18
    np.testing.assert_allclose(obs, [0.95, 0.95], atol=1e-7)
    assert reward != 0.0  # the step into the exit is paid
    np.testing.assert_array_equal(info["action_mask"], [0, 0, 1, 1])


def test_termination_wins_on_the_last_step():
    env = EscapeEnv(size=2, max_steps=2)
    env.reset(seed=0)
    assert env.step(W)[2:4] == (False, False)
    assert env.step(E)[2:4] == (False, True)  # reached the cap at (1, 0): truncated
    env.reset(seed=0)
    env.step(E)
    assert env.step(N)[2:4] == (True, False)  # exit on the last allowed step: terminated only


def test_check_env_passes():
    check_env(EscapeEnv(), skip_render_check=True)
    check_env(gymnasium.make(ESCAPE_ENV_ID, render_mode="rgb_array").unwrapped)
    check_env(gymnasium.make(ESCAPE_ENV_ID, size=3, max_steps=7).unwrapped)
    # strict=True is for agents that mask; check_env steps random actions, so it is not checked.


def test_gymnasium_make():
    env = gymnasium.make(ESCAPE_ENV_ID, max_steps=5, render_mode="rgb_array")
    assert isinstance(env.unwrapped, EscapeEnv) and env.unwrapped.max_steps == 5
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(4):
        assert not env.step(E)[3]
    _, _, terminated, truncated, _ = env.step(E)
    assert truncated and not terminated
    env.close()


def test_render_rgb_array():
    env = EscapeEnv(render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (200, 200, 3) and img.dtype == np.uint8
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= 3  # background, lines, exit, agent
    agent = np.all(img == (210, 40, 40), axis=-1)
    exit_ = np.all(img == (40, 170, 60), axis=-1)
    assert agent.any() and exit_.any()
    assert agent[190, 10] and exit_[10, 190]  # agent bottom-left, exit top-right
    env.step(E)
    assert not np.array_equal(env.render(), img)
    assert EscapeEnv().render() is None


# ------------------------------------------------------------------ JAX twin


def _run_gym(actions, zs, size=10):
    env = EscapeEnv(size=size)
    obs, info = env.reset(seed=0)
    out = {"obs": [], "reward": [], "terminated": [], "truncated": [], "mask": []}
    for a, z in zip(actions, zs, strict=True):
        obs, r, term, trunc, info = env.step_with_noise(int(a), float(z))
        for k, v in zip(out, (obs, r, term, trunc, info["action_mask"]), strict=True):
            out[k].append(v)
    return {k: np.array(v) for k, v in out.items()}, obs


@jax.jit
def _run_twin(actions, zs):
    params = EscapeParams()
    _, state = reset(jax.random.key(0), params)

    def body(state, az):
        obs, state, r, term, trunc, info = step_with_noise(state, az[0], az[1], params)
        return state, (obs, r, term, trunc, info["action_mask"])

    _, ys = jax.lax.scan(body, state, (actions, zs))
    return dict(zip(("obs", "reward", "terminated", "truncated", "mask"), ys, strict=True))


def _assert_same(gym_out, twin_out):
    np.testing.assert_array_equal(gym_out["obs"], np.asarray(twin_out["obs"]))
    np.testing.assert_allclose(gym_out["reward"], np.asarray(twin_out["reward"]), atol=1e-6)
    for k in ("terminated", "truncated", "mask"):
        np.testing.assert_array_equal(gym_out[k], np.asarray(twin_out[k]), err_msg=k)


def test_twin_matches_gym_until_truncation():
    rng = np.random.default_rng(0)
    # Random actions (illegal ones included) that stay in the lower-left: never reach the exit.
    actions = rng.integers(0, 4, 200).astype(np.int32)
    actions[::2] = rng.choice([W, S], 100)
    zs = rng.standard_normal(200).astype(np.float32)
    gym_out, _ = _run_gym(actions, zs)
    twin_out = _run_twin(jnp.asarray(actions), jnp.asarray(zs))
    _assert_same(gym_out, twin_out)
    assert not gym_out["terminated"].any()
    assert gym_out["truncated"].tolist() == [False] * 199 + [True]
    assert (gym_out["mask"].sum(axis=1) < 4).any()  # visited walls


def test_twin_matches_gym_until_termination():
    actions = np.array([S, W] + [E] * 10 + [N] * 9, np.int32)  # bumps at both walls, then exits
    zs = np.random.default_rng(1).standard_normal(len(actions)).astype(np.float32)
    gym_out, last_obs = _run_gym(actions, zs)
    twin_out = _run_twin(jnp.asarray(actions), jnp.asarray(zs))
    _assert_same(gym_out, twin_out)
    assert gym_out["terminated"].tolist() == [False] * (len(actions) - 1) + [True]
    assert not gym_out["truncated"].any()
    np.testing.assert_array_equal(last_obs, np.float32([0.95, 0.95]))


def test_twin_step_draws_normal_from_key_and_jits_over_params():
    params = EscapeParams(reward_noise_sd=0.25, max_steps=3)
    obs0, state = reset(jax.random.key(0), params)
    np.testing.assert_array_equal(obs0, np.float32([0.05, 0.05]))
    assert state.x.dtype == jnp.int32 and state.t.dtype == jnp.int32
    key = jax.random.key(7)
    out = jax.jit(step)(key, state, jnp.int32(E), params)
    z = jax.random.normal(key, (), jnp.float32)
    ref = step_with_noise(state, E, z, params)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    _, new, reward, *_ = out
    assert (int(new.x), int(new.y), int(new.t)) == (1, 0, 1)
    np.testing.assert_allclose(reward, -1.0 + 0.25 * z, rtol=1e-6)
    np.testing.assert_allclose(obs_of(new, params), [0.15, 0.05], atol=1e-7)
    # Sampled rewards have mean -1 and sd reward_noise_sd.
    keys = jax.random.split(jax.random.key(1), 20000)
    r = jax.vmap(lambda k: step(k, state, W, params)[2])(keys)
    assert abs(float(r.mean()) + 1.0) < 5 * 0.25 / np.sqrt(20000)
    assert abs(float(r.std()) - 0.25) < 5 * 0.25 / np.sqrt(2 * 20000)


# ------------------------------------------------------------------ DP ground truth


def test_truth_hand_checked_cells():
    q = q_epsilon_greedy(size=10, gamma=0.9, epsilon=0.01)
    assert q.dtype == np.float64 and q.shape == (100, 4)
    assert _q(q, 0, 0, E) == pytest.approx(-8.5233, abs=1e-3)
    assert _q(q, 8, 9, W) == pytest.approx(-2.7286, abs=1e-3)
    assert _q(q, 8, 9, E) == pytest.approx(-1.0, abs=1e-12)
    assert _q(q_star(), 0, 0, E) == pytest.approx(-8.4991, abs=1e-3)
    assert _q(q_epsilon_greedy(epsilon=0.0), 0, 0, E) == _q(q_star(), 0, 0, E)
    # Tighter than the spec's 4 digits: these are the exact DP values.
    assert _q(q, 0, 0, E) == pytest.approx(-8.52330103, abs=1e-8)
    assert _q(q, 8, 9, W) == pytest.approx(-2.72863840, abs=1e-8)


def test_truth_nan_exactly_off_the_evaluation_mask():
    for q in (q_epsilon_greedy(), q_star(), q_epsilon_greedy(size=4, epsilon=0.3)):
        size = int(np.sqrt(q.shape[0]))
        np.testing.assert_array_equal(np.isfinite(q), evaluation_mask(size))


def test_q_star_closed_form():
    q = q_star()
    x, y = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    x, y = x.ravel(), y.ravel()
    for a, (dx, dy) in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)]):
        nx, ny = x + dx, y + dy
        steps = 1 + (9 - nx) + (9 - ny)  # this move, then the Manhattan distance to the exit
        expected = -(1 - 0.9**steps) / (1 - 0.9)
        ok = evaluation_mask()[:, a]
        np.testing.assert_allclose(q[ok, a], expected[ok], rtol=0, atol=1e-12)


def test_spec_policy_is_greedy_for_q_star_but_not_epsilon_optimal():
    best = optimal_actions(10)
    live = np.flatnonzero(best >= 0)
    assert best[exit_cell(10)] == -1 and best[cell_index(3, 3)] == E and best[cell_index(4, 3)] == N
    qs = q_star()
    qmax = np.nanmax(qs[live], axis=1)
    np.testing.assert_allclose(qs[live, best[live]], qmax, rtol=0, atol=1e-12)
    # With epsilon-exploration over legal actions only, running along walls is better: the spec's
    # truth is the Q of its stated policy, slightly below the best epsilon-greedy policy's.
    q = q_epsilon_greedy()
    q_opt, act_opt = q_epsilon_optimal()
    diff = q_opt - q
    assert np.nanmin(diff) > -1e-12
    assert np.nanmax(diff) == pytest.approx(3.235e-3, abs=1e-5)
    assert _q(q_opt, 0, 0, E) == pytest.approx(-8.52007, abs=1e-5)
    qm = np.where(np.isfinite(q_opt), q_opt, -np.inf)
    np.testing.assert_allclose(qm[live, act_opt[live]], qm[live].max(axis=1), atol=1e-12)


def test_truth_matches_monte_carlo_of_the_twin():
    """Rollouts of the JAX twin under the epsilon-greedy policy agree with the DP truth."""
    eps, n = 0.3, 20000
    size, params = 5, EscapeParams(size=5, max_steps=200)
    legal = jnp.asarray(legal_mask_grid(size))
    best = jnp.asarray(np.maximum(optimal_actions(size), 0), jnp.int32)

    def rollout(key, first_action):
        state = EscapeState(jnp.int32(1), jnp.int32(2), jnp.int32(0))

        def body(carry, key):
            state, action, ret, disc, done = carry
            k_noise, k_explore, k_act = jax.random.split(key, 3)
            _, state, r, term, trunc, _ = step(k_noise, state, action, params)
            ret = ret + jnp.where(done, 0.0, disc * r)
            done = done | term | trunc
            cell = state.x * size + state.y
            rand = jax.random.categorical(k_act, jnp.where(legal[cell], 0.0, -jnp.inf))
            action = jnp.where(jax.random.uniform(k_explore) < eps, rand, best[cell])
            action = action.astype(jnp.int32)
            return (state, action, ret, disc * 0.9, done), None

        init = (state, first_action, 0.0, 1.0, False)
        (_, _, ret, _, _), _ = jax.lax.scan(body, init, jax.random.split(key, 60))
        return ret

    truth = q_epsilon_greedy(size=size, gamma=0.9, epsilon=eps)
    keys = jax.random.split(jax.random.key(0), n)
    for a in (E, S):
        ret = np.asarray(jax.jit(jax.vmap(rollout, (0, None)))(keys, jnp.int32(a)))
        se = ret.std() / np.sqrt(n)
        assert abs(ret.mean() - _q(truth, 1, 2, a, size)) < 5 * se, (a, ret.mean(), se)
