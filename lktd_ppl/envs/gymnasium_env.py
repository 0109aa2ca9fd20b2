"""Gymnasium environments for the host-loop harness (:mod:`lktd_ppl.agents.host_loop`).

An environment is named by its Gymnasium id: a registered one (``LunarLander-v3``, or any id a
package registered on import), or the ``module:EnvId-v0`` form, where the module (importable from
``sys.path`` or the working directory) registers ``EnvId-v0`` when imported, as
``gymnasium.make`` does itself.  ``gymnasium:CartPole-v1`` runs Gymnasium's CartPole through the
host loop (the bare ``CartPole-v1`` is gymnax's, in the jitted harness).

A control task needs discrete actions and a flat (1-D) ``Box`` observation, and a time limit (the
registered one or ``control.max_episode_steps``): every greedy evaluation episode must end.  Other
environments are refused with a one-line ValueError naming the environment and what is wrong.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from typing import Any, NamedTuple


class GymnasiumTask(NamedTuple):
    """What the host loop and the learners need to know about a Gymnasium environment."""

    name: str  # as given: a registered id or module:EnvId-v0
    obs_dim: int
    num_actions: int
    action_start: int  # Discrete(n, start): the actions are start, ..., start + n - 1
    max_steps: int  # steps after which an episode is truncated


def split_id(name: str) -> tuple[str | None, str]:
    """``(module, env_id)`` of ``module:EnvId-v0``; ``(None, name)`` for a plain id."""
    module, sep, env_id = name.rpartition(":")
    return (module, env_id) if sep else (None, name)


def _import(name: str, module: str) -> None:
    """Import ``module``, from ``sys.path`` or else the working directory (which a console script
    does not put on ``sys.path``); a one-line ValueError naming the environment if it fails."""
    cwd = os.getcwd()
    try:
        importlib.import_module(module)
        return
    except ModuleNotFoundError as e:
        if cwd in sys.path or "" in sys.path:
            raise ValueError(
                f"environment {name!r}: cannot import module {module!r} ({e})"
            ) from None
    except Exception as e:  # an error inside the module
        raise ValueError(
            f"environment {name!r}: importing {module!r} failed: {_first(e)}"
        ) from None
    sys.path.append(cwd)
    try:
        importlib.import_module(module)
    except Exception as e:
        raise ValueError(
            f"environment {name!r}: cannot import module {module!r} ({_first(e)})"
        ) from None


def _first(err: BaseException) -> str:
    """The first non-empty line of ``err``'s message (its type's name if none)."""
    return next((s.strip() for s in str(err).splitlines() if s.strip()), type(err).__name__)


def is_gymnasium_id(name: str) -> bool:
    """Whether Gymnasium knows ``name``: a registered id, or ``module:EnvId-v0`` whose module
    imports and registers the id.  A module that fails to import raises a ValueError naming it."""
    import gymnasium

    module, env_id = split_id(name)
    if module is not None:
        if not module or not env_id:
            return False
        _import(name, module)
    return env_id in gymnasium.registry


def make_env(name: str, max_episode_steps: int = 0) -> Any:
    """A new Gymnasium environment ``name`` (``max_episode_steps`` > 0 replaces its time limit)."""
    import gymnasium

    module, env_id = split_id(name)
    if module is not None:
        _import(name, module)
    kwargs = {"max_episode_steps": int(max_episode_steps)} if max_episode_steps > 0 else {}
    try:
        return gymnasium.make(env_id, **kwargs)
    except Exception as e:  # e.g. a missing dependency (Box2D)
        raise ValueError(f"environment {name!r} cannot be made: {_first(e)}") from None


def describe(name: str, max_episode_steps: int = 0) -> GymnasiumTask:
    """Make ``name`` once and check it is a control task (see the module docstring)."""
    from gymnasium import spaces

    env = make_env(name, max_episode_steps)
    try:
        act, obs = env.action_space, env.observation_space
        limit = env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()
    return GymnasiumTask(
        name=name,
        obs_dim=check_observations(name, obs, spaces),
        num_actions=check_actions(name, act, spaces),
        action_start=int(getattr(act, "start", 0)),
        max_steps=check_time_limit(name, max_episode_steps or limit),
    )


def check_actions(name: str, space: Any, spaces: Any) -> int:
    """The number of actions of a ``Discrete`` space; a ValueError otherwise."""
    if not isinstance(space, spaces.Discrete):
        raise ValueError(
            f"environment {name!r} has {type(space).__name__} actions; the control harness "
            "needs discrete ones"
        )
    return int(space.n)


def check_observations(name: str, space: Any, spaces: Any) -> int:
    """The size of a 1-D ``Box`` observation space; a ValueError otherwise."""
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"environment {name!r} has {type(space).__name__} observations; the control harness "
            "needs a flat Box"
        )
    if len(space.shape) != 1:
        raise ValueError(
            f"environment {name!r} has Box observations of shape {space.shape}; the control "
            "harness needs a flat (1-D) Box"
        )
    return int(math.prod(space.shape))


def check_time_limit(name: str, limit: int | None) -> int:
    """The time limit; a ValueError if there is none (a greedy episode might never end)."""
    if not limit or limit <= 0:
        raise ValueError(f"environment {name!r} has no time limit; set control.max_episode_steps")
    return int(limit)
