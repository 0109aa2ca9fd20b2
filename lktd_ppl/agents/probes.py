"""Probe problems with known Q-values for the learners (rejax-style probe environments), and a tiny
loop that feeds a :class:`~lktd_ppl.agents.harness.Learner` minibatches drawn uniformly from a fixed
set of transitions (no environment, no harness).

The probe MDP (one-hot observations, ``NUM_STATES`` states, 2 actions, gamma 0.9): every state-action
pair in the table below is stored ``copies`` times (the Bernoulli state 10 rows per copy, 3 with
reward 1), except the rarely visited one (once).  ``DEAD`` is never trained on: terminal transitions
point at it, so a learner that bootstraps on termination reads its arbitrary value.

    state  transition                                              Q
    0      (a) one step: r = 1, terminated                         1, 1
    1 -> 2 (b) chain: r = 0, not terminated                        0.9, 0.9
    2      (b) r = 1, terminated                                   1, 1
    3 -> 4 (c) r = 0, not terminated; only action 0 legal at 4     0.45, 0.45  (not 0.9 * 2 = 1.8)
    4      (c) action 0: r = 0.5 terminated; action 1: r = 2        0.5, 2
    5 -> 6 (d) r = 1, truncated (terminated = 0): bootstraps       1.9, 1.9    (not 1)
    6      (d) r = 1, terminated                                   1, 1
    7      Bernoulli(0.3) reward, terminated                       0.3, 0.3 (quantiles 0 / 1)
    8      rarely visited: action 0 once, r = 3, terminated        3, -
    9      DEAD (never visited)                                    -, -
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lktd_ppl.agents.harness import Learner

NUM_STATES = 10
NUM_ACTIONS = 2
GAMMA = 0.9
RARE = 8
DEAD = 9
BERNOULLI = 7
BERNOULLI_P = 0.3


def probe_transitions(copies: int = 12) -> tuple[dict, np.ndarray]:
    """(transitions: dict of (T, ...) arrays, q_true (NUM_STATES, NUM_ACTIONS) with NaN where the
    value is not determined)."""
    both, only0 = [1, 1], [1, 0]
    rows = []  # (s, a, r, s', terminated, next_mask)
    for a in range(NUM_ACTIONS):
        rows += [(0, a, 1.0, DEAD, 1.0, both)] * copies
        rows += [(1, a, 0.0, 2, 0.0, both)] * copies
        rows += [(2, a, 1.0, DEAD, 1.0, both)] * copies
        rows += [(3, a, 0.0, 4, 0.0, only0)] * copies
        rows += [(5, a, 1.0, 6, 0.0, both)] * copies  # truncated: terminated stays 0
        rows += [(6, a, 1.0, DEAD, 1.0, both)] * copies
        for _ in range(copies):
            rows += [(BERNOULLI, a, 1.0, DEAD, 1.0, both)] * 3
            rows += [(BERNOULLI, a, 0.0, DEAD, 1.0, both)] * 7
    rows += [(4, 0, 0.5, DEAD, 1.0, both)] * copies
    rows += [(4, 1, 2.0, DEAD, 1.0, both)] * copies
    rows += [(RARE, 0, 3.0, DEAD, 1.0, both)]
    s, a, r, s2, term, mask = (np.array(c) for c in zip(*rows, strict=True))
    eye = np.eye(NUM_STATES, dtype=np.float32)
    transitions = {
        "obs": jnp.asarray(eye[s]),
        "action": jnp.asarray(a, jnp.int32),
        "reward": jnp.asarray(r, jnp.float32),
        "next_obs": jnp.asarray(eye[s2]),
        "next_action": jnp.zeros(len(rows), jnp.int32),
        "terminated": jnp.asarray(term, jnp.float32),
        "next_mask": jnp.asarray(mask, jnp.int8),
    }
    nan = np.nan
    q_true = np.array(
        [
            [1.0, 1.0],
            [0.9, 0.9],
            [1.0, 1.0],
            [0.45, 0.45],
            [0.5, 2.0],
            [1.9, 1.9],
            [1.0, 1.0],
            [BERNOULLI_P, BERNOULLI_P],
            [3.0, nan],
            [nan, nan],
        ]
    )
    return transitions, q_true


def probe_observations() -> jax.Array:
    """One-hot observations of every probe state, (NUM_STATES, NUM_STATES)."""
    return jnp.eye(NUM_STATES, dtype=jnp.float32)


def make_fit(
    learner: Learner,
    num_updates: int,
    batch_size: int = 100,
    evaluate: Callable[[Any], jax.Array] | None = None,
    average_last: int = 1,
) -> Callable[[jax.Array, dict], tuple[Any, jax.Array]]:
    """``fit(key, transitions) -> (learner state, mean evaluation)`` after ``num_updates`` updates
    on minibatches drawn uniformly (with replacement) from ``transitions``.

    Extras (``learner.extra_item``) are drawn once per transition, as the replay buffer stores them.
    ``evaluate(state)`` (default: ``learner.q_grid`` at every probe state, (members, S, A)) is
    averaged over the states after the last ``average_last`` updates, as the escape metrics average
    the stored samples (it smooths the optimiser's step noise).  Jitted; the loop is a ``lax.scan``.
    """
    if not 1 <= average_last <= num_updates:
        raise ValueError(f"average_last must be in [1, {num_updates}], got {average_last}")
    if evaluate is None:
        obs = probe_observations()

        def evaluate(state):
            return learner.q_grid(state, obs)

    def fit(key, transitions):
        k_init, k_extra, k_loop = jax.random.split(key, 3)
        size = transitions["reward"].shape[0]
        data = dict(transitions)
        if learner.extra_item is not None:
            data.update(jax.vmap(learner.extra_item)(jax.random.split(k_extra, size)))
        state = learner.init(k_init)
        shape = jax.eval_shape(evaluate, state)
        total = jnp.zeros(shape.shape, shape.dtype)

        def step(carry, xs):
            state, total = carry
            stage, k = xs
            k_idx, k_up = jax.random.split(k)
            idx = jax.random.randint(k_idx, (batch_size,), 0, size)
            batch = {name: v[idx] for name, v in data.items()}
            batch["stage"] = stage
            state = learner.update(k_up, state, batch)
            keep = stage >= num_updates - average_last
            total = total + jnp.where(keep, evaluate(state), 0.0)
            return (state, total), None

        xs = (jnp.arange(num_updates, dtype=jnp.int32), jax.random.split(k_loop, num_updates))
        (state, total), _ = jax.lax.scan(step, (state, total), xs)
        return state, total / average_last

    return jax.jit(fit)
