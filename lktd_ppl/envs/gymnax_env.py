"""gymnax environments for the control-task harness (:mod:`lktd_ppl.agents.control`), and the one
place where an environment name is resolved to the harness that runs it.

A control task here has discrete actions and a flat ``Box`` observation; :func:`make_env` makes it by
its gymnax id (``CartPole-v1``, ``Acrobot-v1``, ``MountainCar-v0``, ...) and refuses the others with
a one-line message.  gymnax 1.x's ``step`` returns ``(obs, state, reward, terminated, truncated,
info)`` and resets automatically: when an episode ends, ``obs`` is already the next episode's first
observation and ``info["final_observation"]`` the last one of the episode that ended.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

ESCAPE = "escape"
# how each kind of environment runs: the escape room's harness, the control harness over a
# gymnax environment (in JAX, jitted), or the host loop over a Gymnasium environment (stepped in
# Python, the learner jitted; lktd_ppl.agents.host_loop)
KINDS = ("escape", "gymnax", "gymnasium")


class ControlEnv(NamedTuple):
    """A gymnax environment and what the harness and the learners need to know about it."""

    name: str
    env: Any  # gymnax Environment
    params: Any  # its EnvParams (max_steps_in_episode possibly overridden)
    obs_dim: int
    num_actions: int
    max_steps: int  # steps after which an episode is truncated


def gymnax_ids() -> list[str]:
    import gymnax

    return list(gymnax.registered_envs)


def env_kind(name: str) -> str:
    """``"escape"`` for the escape room, ``"gymnax"`` for a gymnax id (which wins where Gymnasium
    has the same id), ``"gymnasium"`` for another id Gymnasium knows or the ``module:EnvId-v0``
    form (:mod:`lktd_ppl.envs.gymnasium_env`); a ValueError naming the three kinds otherwise."""
    if name == ESCAPE:
        return "escape"
    if ":" not in name and name in gymnax_ids():  # module:EnvId-v0 is never a gymnax id
        return "gymnax"
    from lktd_ppl.envs.gymnasium_env import is_gymnasium_id

    if is_gymnasium_id(name):
        return "gymnasium"
    raise ValueError(
        f"unknown environment {name!r}; supported: escape, a gymnax id with discrete actions "
        "and flat observations (e.g. CartPole-v1, Acrobot-v1, MountainCar-v0), or a Gymnasium "
        "id, registered or as module:EnvId-v0 (e.g. LunarLander-v3, mypkg.envs:MyEnv-v0)"
    )


def make_env(name: str, max_episode_steps: int = 0) -> ControlEnv:
    """The gymnax environment ``name``; ``max_episode_steps`` > 0 overrides its time limit."""
    import gymnax
    from gymnax.environments import spaces

    if name not in gymnax.registered_envs:
        env_kind(name)  # raises with the list
    env, params = gymnax.make(name)
    if max_episode_steps > 0:
        params = params.replace(max_steps_in_episode=int(max_episode_steps))
    action_space = env.action_space(params)
    obs_space = env.observation_space(params)
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"environment {name!r} has {type(action_space).__name__} actions; the control "
            "harness needs discrete ones"
        )
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(
            f"environment {name!r} has {type(obs_space).__name__} observations; the control "
            "harness needs a flat Box"
        )
    return ControlEnv(
        name=name,
        env=env,
        params=params,
        obs_dim=int(math.prod(obs_space.shape)),
        num_actions=int(action_space.n),
        max_steps=int(params.max_steps_in_episode),
    )
