"""Exact ground-truth Q-values of the indoor-escape room, by dynamic programming (float64).

The truth of the spec (section 4) is the action value of the epsilon-greedy optimal policy: with
probability ``epsilon`` an action uniform over the LEGAL actions of the cell, otherwise the optimal
action, E if ``x <= y`` else N. The reward is the deterministic mean ``-1`` on every step (the step into
the exit included), ``gamma`` discounts, the exit is terminal (its value is 0), and there is no
episode cap (infinite-horizon policy evaluation; the cap of 200 steps changes Q by at most
``gamma**200``). The linear system ``(I - gamma P) V = r`` of the policy is solved exactly.

Array conventions (shared with :mod:`lktd_ppl.envs.escape`): shape ``(size*size, 4)``, row
``x * size + y``, column = action (0 E, 1 N, 2 W, 3 S). Entries with no ground truth are NaN: illegal
actions (moves into the outer wall) and every action of the terminal exit cell. So
``np.isfinite(q) == escape.evaluation_mask(size)``.
"""

from __future__ import annotations

import numpy as np

from lktd_ppl.envs.escape import ACTION_DELTAS, DEFAULT_SIZE, evaluation_mask, exit_cell


def optimal_actions(size: int = DEFAULT_SIZE) -> np.ndarray:
    """The spec's optimal action of every cell, int (size*size,): 0 (E) if ``x <= y`` else 1 (N).

    -1 at the exit. It is optimal for the MDP (greedy with respect to ``q_star``, which ties every
    move towards the exit). It is NOT the best epsilon-greedy policy for ``epsilon > 0``: with
    exploration over legal actions only, hugging a wall pays (fewer backward moves to explore), see
    :func:`q_epsilon_optimal`.
    """
    x, y = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    actions = np.where(x.ravel() <= y.ravel(), 0, 1)
    actions[exit_cell(size)] = -1
    return actions


def _next_cells(size: int) -> np.ndarray:
    """Successor cell index of every (cell, action), int (size*size, 4); illegal moves stay put."""
    x, y = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x, y = x.ravel()[:, None], y.ravel()[:, None]
    nx = np.clip(x + ACTION_DELTAS[:, 0], 0, size - 1)
    ny = np.clip(y + ACTION_DELTAS[:, 1], 0, size - 1)
    return nx * size + ny


def evaluate_policy(
    policy: np.ndarray,
    size: int = DEFAULT_SIZE,
    gamma: float = 0.9,
    reward: float = -1.0,
) -> np.ndarray:
    """Exact Q of a stationary policy, float64 (size*size, 4), NaN off ``evaluation_mask(size)``.

    Args:
        policy: action probabilities (size*size, 4), rows summing to 1 over the legal actions of each
            non-exit cell (the exit row is ignored).
        size: side of the grid.
        gamma: discount, in [0, 1) (1 is allowed when the policy reaches the exit surely).
        reward: deterministic reward of every step.
    """
    n = size * size
    end = exit_cell(size)
    valid = evaluation_mask(size)
    policy = np.asarray(policy, dtype=np.float64)
    if policy.shape != (n, 4):
        raise ValueError(f"policy must have shape {(n, 4)}, got {policy.shape}")
    live = np.arange(n) != end
    if np.any(policy[~valid & live[:, None]] != 0.0):
        raise ValueError("policy puts probability on illegal actions")
    if not np.allclose(policy[live].sum(axis=1), 1.0, rtol=0.0, atol=1e-12):
        raise ValueError("policy rows of non-exit cells must sum to 1")

    nxt = _next_cells(size)
    # Transition matrix of the policy between cells; the exit is absorbing with value 0, so its
    # column is dropped by zeroing the probability of entering it (V(exit) = 0).
    trans = np.zeros((n, n))
    rows = np.repeat(np.arange(n), 4)
    np.add.at(trans, (rows, nxt.ravel()), policy.ravel())
    trans[:, end] = 0.0
    trans[end, :] = 0.0
    r = np.where(live, reward, 0.0)
    v = np.linalg.solve(np.eye(n) - gamma * trans, r)
    v[end] = 0.0
    q = reward + gamma * v[nxt]
    return np.where(valid, q, np.nan)


def epsilon_greedy_policy(
    size: int = DEFAULT_SIZE, epsilon: float = 0.01, actions: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities (size*size, 4) of an epsilon-greedy policy (exit row all zero).

    With probability ``epsilon`` uniform over the legal actions, else ``actions[cell]`` (default:
    :func:`optimal_actions`, the spec's policy).
    """
    valid = evaluation_mask(size).astype(np.float64)
    n_legal = np.maximum(valid.sum(axis=1, keepdims=True), 1.0)
    policy = epsilon * valid / n_legal
    best = optimal_actions(size) if actions is None else np.asarray(actions)
    live = best >= 0
    policy[np.flatnonzero(live), best[live]] += 1.0 - epsilon
    return policy


def q_epsilon_greedy(
    size: int = DEFAULT_SIZE,
    gamma: float = 0.9,
    epsilon: float = 0.01,
    reward: float = -1.0,
) -> np.ndarray:
    """Q of the epsilon-greedy optimal policy, float64 (size*size, 4); NaN where no truth exists.

    The spec's truth for SARSA-type methods (``epsilon = 0.01``). Row ``x * size + y``; NaN for
    illegal actions and at the exit cell. E.g. ``Q(0,0,E) = -8.5233``, ``Q(8,9,W) = -2.7286``.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    return evaluate_policy(epsilon_greedy_policy(size, epsilon), size, gamma, reward)


def q_star(size: int = DEFAULT_SIZE, gamma: float = 0.9, reward: float = -1.0) -> np.ndarray:
    """Optimal Q (the ``epsilon = 0`` case), the target of DQN-type methods. Same layout."""
    return q_epsilon_greedy(size, gamma, 0.0, reward)


def q_epsilon_optimal(
    size: int = DEFAULT_SIZE,
    gamma: float = 0.9,
    epsilon: float = 0.01,
    reward: float = -1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Q of the best epsilon-greedy policy (policy iteration), and its greedy actions.

    Not the spec's truth (that is :func:`q_epsilon_greedy`) but the fixed point an on-policy SARSA
    learner with epsilon-greedy behaviour tends to. It prefers paths along the walls (where
    exploration has fewer backward moves); for the defaults it differs from the spec's truth by at
    most 3.3e-3 (``Q(0,0,E) = -8.5201`` against -8.5233), mean squared difference 7.5e-7 over the
    evaluated pairs. Returns ``(q, actions)`` in the layout of :func:`q_epsilon_greedy`.
    """
    actions = optimal_actions(size)
    live = actions >= 0
    rows = np.flatnonzero(live)
    for _ in range(10 * size * size):
        q = q_epsilon_greedy_of(actions, size, gamma, epsilon, reward)
        qm = np.where(np.isfinite(q), q, -np.inf)
        keep = qm[rows, actions[rows]] >= qm[rows].max(axis=1) - 1e-12
        if keep.all():
            return q, actions
        actions = actions.copy()
        actions[rows[~keep]] = qm[rows[~keep]].argmax(axis=1)
    raise RuntimeError("policy iteration did not converge")


def q_epsilon_greedy_of(
    actions: np.ndarray,
    size: int = DEFAULT_SIZE,
    gamma: float = 0.9,
    epsilon: float = 0.01,
    reward: float = -1.0,
) -> np.ndarray:
    """Exact Q of the epsilon-greedy policy around ``actions`` (int (size*size,), -1 at the exit)."""
    return evaluate_policy(epsilon_greedy_policy(size, epsilon, actions), size, gamma, reward)
