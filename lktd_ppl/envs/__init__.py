"""Environments: the indoor-escape room (Gymnasium env, JAX twin) and its exact ground truth.

Importing this package registers the Gymnasium id ``lktd_ppl/Escape-v0``.
"""

import gymnasium

from lktd_ppl.envs.escape import (
    ACTION_DELTAS,
    ACTION_NAMES,
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
    reset,
    step,
    step_with_noise,
)
from lktd_ppl.envs.truth import (
    epsilon_greedy_policy,
    evaluate_policy,
    optimal_actions,
    q_epsilon_greedy,
    q_epsilon_greedy_of,
    q_epsilon_optimal,
    q_star,
)

ESCAPE_ENV_ID = "lktd_ppl/Escape-v0"

if ESCAPE_ENV_ID not in gymnasium.registry:
    # No TimeLimit wrapper: the env truncates itself at ``max_steps`` (a make() keyword).
    gymnasium.register(id=ESCAPE_ENV_ID, entry_point="lktd_ppl.envs.escape:EscapeEnv")

__all__ = [
    "ACTION_DELTAS",
    "ACTION_NAMES",
    "ESCAPE_ENV_ID",
    "START_CELL",
    "EscapeEnv",
    "EscapeParams",
    "EscapeState",
    "action_mask",
    "cell_index",
    "cell_observations",
    "epsilon_greedy_policy",
    "evaluate_policy",
    "evaluation_mask",
    "exit_cell",
    "legal_mask_grid",
    "obs_of",
    "optimal_actions",
    "q_epsilon_greedy",
    "q_epsilon_greedy_of",
    "q_epsilon_optimal",
    "q_star",
    "reset",
    "step",
    "step_with_noise",
]
