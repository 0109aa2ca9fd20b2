"""The indoor-escape grid (spec section 4): a Gymnasium env and a pure, jittable JAX twin.

The room is a ``size x size`` grid of cells ``(x, y)``, ``x, y in {0..size-1}``. The agent starts in
``(0, 0)``; entering the exit ``(size-1, size-1)`` terminates the episode. No inner walls.

- Observation: the cell centre ``((x + 0.5) / size, (y + 0.5) / size)`` as float32 (for ``size=10``
  that is ``(0.05 + 0.1 x, 0.05 + 0.1 y)``).
- Actions: ``0 = E (+1, 0)``, ``1 = N (0, +1)``, ``2 = W (-1, 0)``, ``3 = S (0, -1)``.
- Legal actions: a move into the outer wall is illegal. ``info["action_mask"]`` (int8, shape (4,))
  marks the legal actions of the cell the agent is in, after ``reset`` and after every ``step``. An
  illegal action bumps into the wall: the agent stays and the step reward is still paid. The Gymnasium
  env built with ``strict=True`` raises a ``ValueError`` naming the action and the cell instead; the
  JAX twin always bumps (nothing can raise inside ``jit``).
- Reward: ``-1 + reward_noise_sd * z`` with ``z ~ N(0, 1)`` on every step, the step into the exit
  included.
- Episode cap: after ``max_steps`` steps ``truncated`` is True (``terminated`` stays False). A step that
  reaches the exit on the last allowed step reports ``terminated=True, truncated=False``: termination
  takes precedence.
- No auto-reset in either implementation: after ``terminated`` or ``truncated`` call ``reset`` (a
  step past the end just keeps applying the dynamics).

Both implementations take the standard-normal reward noise explicitly in ``step_with_noise``; their
``step`` draws ``z`` (NumPy: the env's ``np_random``; JAX: ``jax.random.normal(key)``) and calls it, so
the same actions and the same ``z`` give the same trajectory in both.

Cell index order used by every grid-shaped array here and in :mod:`lktd_ppl.envs.truth`:
``index = x * size + y`` (so ``arr.reshape(size, size, ...)[x, y]`` is cell ``(x, y)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnasium import spaces

from lktd_ppl.names import ACTION_NAMES

ACTION_DELTAS: np.ndarray = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int32)
"""``(dx, dy)`` of each action, shape (4, 2)."""

START_CELL: int = 0
"""Index of the start cell ``(0, 0)`` (``x * size + y``, for every size)."""

DEFAULT_SIZE = 10
DEFAULT_REWARD_NOISE_SD = 0.1
DEFAULT_MAX_STEPS = 200


# --------------------------------------------------------------------------------------------
# Grid helpers (NumPy, for metrics and ground truth)
# --------------------------------------------------------------------------------------------


def cell_index(x: int, y: int, size: int = DEFAULT_SIZE) -> int:
    """Index of cell ``(x, y)`` in every grid-shaped array: ``x * size + y``."""
    return int(x) * size + int(y)


def exit_cell(size: int = DEFAULT_SIZE) -> int:
    """Index of the exit cell ``(size-1, size-1)``, i.e. ``size * size - 1``."""
    return size * size - 1


def _centres(size: int) -> np.ndarray:
    """Float32 cell-centre coordinates ``(i + 0.5) / size``, shape (size,)."""
    return ((np.arange(size, dtype=np.float64) + 0.5) / size).astype(np.float32)


def cell_observations(size: int = DEFAULT_SIZE) -> np.ndarray:
    """All cell-centre observations, float32 of shape (size*size, 2); row ``x * size + y``."""
    c = _centres(size)
    xs, ys = np.meshgrid(c, c, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def _mask_of(x: int, y: int, size: int) -> np.ndarray:
    """Legal-action mask (bool, (4,)) of cell ``(x, y)``."""
    return np.array([x < size - 1, y < size - 1, x > 0, y > 0], dtype=bool)


def legal_mask_grid(size: int = DEFAULT_SIZE) -> np.ndarray:
    """Legal actions of every cell, bool of shape (size*size, 4); row ``x * size + y``.

    This is the env's ``action_mask`` of each cell (wall legality only; the exit cell keeps its two
    legal moves W and S). For metrics against the ground truth use :func:`evaluation_mask`.
    """
    x, y = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x, y = x.ravel(), y.ravel()
    return np.stack([x < size - 1, y < size - 1, x > 0, y > 0], axis=-1)


def evaluation_mask(size: int = DEFAULT_SIZE) -> np.ndarray:
    """The (cell, action) pairs that carry a ground-truth Q, bool (size*size, 4).

    Legal actions of non-terminal cells: :func:`legal_mask_grid` with the exit cell's row set to False
    (as the official code's legal-action map). It equals ``np.isfinite`` of the arrays returned by
    :mod:`lktd_ppl.envs.truth`. For ``size = 10`` it holds 358 pairs.
    """
    mask = legal_mask_grid(size)
    mask[exit_cell(size)] = False
    return mask


# --------------------------------------------------------------------------------------------
# Gymnasium env
# --------------------------------------------------------------------------------------------


class EscapeEnv(gymnasium.Env):
    """Gymnasium indoor-escape room (spec section 4); see the module docstring.

    Args:
        size: side of the square grid.
        reward_noise_sd: sd of the Gaussian noise added to the -1 step reward.
        max_steps: episode cap; the step that reaches it returns ``truncated=True``.
        strict: raise ``ValueError`` on an illegal action instead of bumping into the wall.
        render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        reward_noise_sd: float = DEFAULT_REWARD_NOISE_SD,
        max_steps: int = DEFAULT_MAX_STEPS,
        strict: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if size < 2:
            raise ValueError(f"size must be at least 2, got {size}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode {render_mode!r} not supported; use one of "
                f"{self.metadata['render_modes']} or None"
            )
        self.size = int(size)
        self.reward_noise_sd = float(reward_noise_sd)
        self.max_steps = int(max_steps)
        self.strict = bool(strict)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        self._centre = _centres(self.size)
        self._x = 0
        self._y = 0
        self._t = 0

    @property
    def params(self) -> EscapeParams:
        """The same configuration as parameters of the JAX twin."""
        return EscapeParams(
            size=self.size, reward_noise_sd=self.reward_noise_sd, max_steps=self.max_steps
        )

    @property
    def cell(self) -> tuple[int, int]:
        """Current cell ``(x, y)``."""
        return self._x, self._y

    @property
    def elapsed_steps(self) -> int:
        """Steps taken since the last reset."""
        return self._t

    def action_mask(self) -> np.ndarray:
        """Legal actions of the current cell, int8 of shape (4,)."""
        return _mask_of(self._x, self._y, self.size).astype(np.int8)

    def _obs(self) -> np.ndarray:
        return np.array([self._centre[self._x], self._centre[self._y]], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Put the agent in (0, 0); ``info["action_mask"]`` holds the legal actions."""
        super().reset(seed=seed)
        self._x, self._y, self._t = 0, 0, 0
        return self._obs(), {"action_mask": self.action_mask()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move; the reward noise ``z`` is drawn from the env's ``np_random``."""
        z = float(self.np_random.standard_normal())
        return self.step_with_noise(action, z)

    def step_with_noise(
        self, action: int, z: float
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move with the given standard-normal reward noise: reward ``-1 + reward_noise_sd * z``."""
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space}")
        a = int(action)
        legal = _mask_of(self._x, self._y, self.size)
        if not legal[a]:
            if self.strict:
                names = [f"{i} ({ACTION_NAMES[i]})" for i in np.flatnonzero(legal)]
                raise ValueError(
                    f"illegal action {a} ({ACTION_NAMES[a]}) at cell (x={self._x}, y={self._y}): "
                    f"it moves into the outer wall; legal actions here: {', '.join(names)}"
                )
        else:
            self._x += int(ACTION_DELTAS[a, 0])
            self._y += int(ACTION_DELTAS[a, 1])
        self._t += 1
        reward = -1.0 + self.reward_noise_sd * float(z)
        terminated = self._x == self.size - 1 and self._y == self.size - 1
        truncated = (not terminated) and self._t >= self.max_steps
        return self._obs(), reward, terminated, truncated, {"action_mask": self.action_mask()}

    def render(self) -> np.ndarray | None:
        """RGB uint8 image (H, W, 3) of the room: exit in green, agent in red. None without a mode."""
        if self.render_mode != "rgb_array":
            return None
        px = 20
        side = self.size * px
        img = np.full((side, side, 3), 255, dtype=np.uint8)
        img[::px, :] = 180  # grid lines
        img[:, ::px] = 180
        img[-1, :] = 180
        img[:, -1] = 180

        def fill(x: int, y: int, colour: tuple[int, int, int], pad: int) -> None:
            row = (self.size - 1 - y) * px  # y grows upwards (N), image rows grow downwards
            col = x * px
            img[row + pad : row + px - pad + 1, col + pad : col + px - pad + 1] = colour

        fill(self.size - 1, self.size - 1, (40, 170, 60), 2)
        fill(self._x, self._y, (210, 40, 40), 5)
        return img


# --------------------------------------------------------------------------------------------
# JAX-functional twin (gymnax style: pure functions over explicit params and state)
# --------------------------------------------------------------------------------------------


class EscapeParams(struct.PyTreeNode):
    """Parameters of the JAX twin: ``size`` is static, the others are pytree leaves."""

    size: int = struct.field(pytree_node=False, default=DEFAULT_SIZE)
    reward_noise_sd: float = DEFAULT_REWARD_NOISE_SD
    max_steps: int = DEFAULT_MAX_STEPS


class EscapeState(NamedTuple):
    """State of the JAX twin: cell ``(x, y)`` and steps ``t`` since reset (int32 scalars)."""

    x: jax.Array
    y: jax.Array
    t: jax.Array


def obs_of(state: EscapeState, params: EscapeParams) -> jax.Array:
    """Cell-centre observation of ``state``, float32 (2,), bit-identical to the Gymnasium env's."""
    centre = jnp.asarray(_centres(params.size))
    return jnp.stack([centre[state.x], centre[state.y]])


def action_mask(state: EscapeState, params: EscapeParams) -> jax.Array:
    """Legal actions of the cell of ``state``, int8 (4,)."""
    last = params.size - 1
    legal = jnp.stack([state.x < last, state.y < last, state.x > 0, state.y > 0])
    return legal.astype(jnp.int8)


def reset(key: jax.Array, params: EscapeParams) -> tuple[jax.Array, EscapeState]:
    """Start in (0, 0). ``key`` is unused (the start is deterministic); kept for the gymnax API."""
    del key
    zero = jnp.zeros((), jnp.int32)
    state = EscapeState(x=zero, y=zero, t=zero)
    return obs_of(state, params), state


def step_with_noise(
    state: EscapeState, action: jax.Array, z: jax.Array, params: EscapeParams
) -> tuple[jax.Array, EscapeState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """One step with the given standard-normal reward noise ``z``.

    Returns ``(obs, state, reward, terminated, truncated, info)`` with ``info["action_mask"]`` the
    legal actions of the new cell. Illegal actions bump (the agent stays). No auto-reset.
    """
    action = jnp.asarray(action, jnp.int32)
    legal = action_mask(state, params)[action].astype(jnp.int32)
    delta = jnp.asarray(ACTION_DELTAS)[action]
    x = state.x + legal * delta[0]
    y = state.y + legal * delta[1]
    t = state.t + 1
    new = EscapeState(x=x.astype(jnp.int32), y=y.astype(jnp.int32), t=t.astype(jnp.int32))
    sd = jnp.asarray(params.reward_noise_sd, jnp.float32)
    reward = -1.0 + sd * jnp.asarray(z, jnp.float32)
    last = params.size - 1
    terminated = (new.x == last) & (new.y == last)
    truncated = jnp.logical_not(terminated) & (new.t >= params.max_steps)
    info = {"action_mask": action_mask(new, params)}
    return obs_of(new, params), new, reward, terminated, truncated, info


def step(
    key: jax.Array, state: EscapeState, action: jax.Array, params: EscapeParams
) -> tuple[jax.Array, EscapeState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """One step; the reward noise is ``jax.random.normal(key)``. See :func:`step_with_noise`."""
    z = jax.random.normal(key, (), jnp.float32)
    return step_with_noise(state, action, z, params)
