"""A chain of states with a known Q*, registered as ``Chain-v0`` when this module is imported (so
``--env chain_env:Chain-v0`` works wherever the module is importable).

States 0..SIZE-1, observed one-hot; an episode starts in a uniformly drawn state.  Action 1 moves
right, action 0 left.  Moving right from the last state ends the episode (terminated) with reward
GOAL; moving left from state 0 ends it (terminated) with reward 0; every other step costs STEP.
The time limit (truncation) is MAX_STEPS.  :func:`transitions` gives the dynamics as arrays for
value iteration.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

SIZE = 5
GOAL = 1.0
STEP = -0.1
MAX_STEPS = 20
ENV_ID = "Chain-v0"


def transitions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(next_state, reward, terminal)``, each (SIZE, 2): the deterministic dynamics."""
    nxt = np.zeros((SIZE, 2), np.int64)
    reward = np.full((SIZE, 2), STEP)
    terminal = np.zeros((SIZE, 2), bool)
    for s in range(SIZE):
        nxt[s] = max(s - 1, 0), min(s + 1, SIZE - 1)
    terminal[0, 0], reward[0, 0] = True, 0.0
    terminal[SIZE - 1, 1], reward[SIZE - 1, 1] = True, GOAL
    return nxt, reward, terminal


class Chain(gymnasium.Env):
    """The chain (see the module docstring)."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (SIZE,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.next_state, self.rewards, self.terminal = transitions()
        self.state = 0

    def _obs(self) -> np.ndarray:
        return np.eye(SIZE, dtype=np.float32)[self.state]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = int(self.np_random.integers(SIZE))
        return self._obs(), {}

    def step(self, action):
        a = int(action)
        reward = float(self.rewards[self.state, a])
        terminated = bool(self.terminal[self.state, a])
        self.state = int(self.next_state[self.state, a])
        return self._obs(), reward, terminated, False, {}


if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point=Chain, max_episode_steps=MAX_STEPS)
