"""Run configuration: what defines a run (:class:`RunSpec`), read from presets, config files,
``--set KEY=VALUE`` strings and flags, checked once here before anything is compiled.

Settings are resolved in this order: a preset (``paper``, ``recommended``, ``demo``: every setting
written out; on the escape room without ``--preset``, LKTD starts from ``recommended``,
:data:`lktd_ppl.presets.DEFAULT_PRESETS`), then a config file (a run folder's ``config.json``), then
``--set`` strings, then the explicit arguments.  Keys:

- an agent field (``num_chains=4``); a field of a nested config by its path (``sampler.step_size``),
  or by its bare name where that is unambiguous (``step_size`` means ``sampler.step_size``);
- ``escape.FIELD`` for the escape protocol (``escape.window=5000``), ``control.FIELD`` for a control
  task's (``control.eval_every=2000``; a gymnax environment, ``--env CartPole-v1``, or a
  Gymnasium one, ``--env LunarLander-v3`` or ``--env mypkg.envs:MyEnv-v0``).

The environment's name is resolved once, by :func:`lktd_ppl.envs.gymnax_env.env_kind`: ``escape``
runs the escape harness, a gymnax id the control harness, another Gymnasium id (registered, or
``module:EnvId-v0``) the host loop (:mod:`lktd_ppl.agents.host_loop`), with the same control
settings.  For a control task the agent's ``obs_dim`` and ``num_actions`` come from the
environment, its ``gamma`` defaults to the protocol's, and the other agent settings start from
:data:`lktd_ppl.presets.CONTROL_DEFAULTS` (networks and, for the LKTD family, the model and sampler
settings measured on CartPole).

This module imports no JAX at import time (``lktd --help`` stays fast); resolving a spec imports the
algorithm's module through :mod:`lktd_ppl.registry`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lktd_ppl import memory, registry, validation
from lktd_ppl.settings import (
    RunError,
    _build,
    _leaf_keys,
    coerce,
    field_types,
    flatten,
    to_dict,
)

__all__ = [
    "RunError",
    "RunSpec",
    "build_spec",
    "coerce",
    "field_types",
    "flatten",
    "load_config",
    "spec_from_folder",
    "to_dict",
]

TOP_LEVEL = (
    "env",
    "algo",
    "seeds",
    "first_seed",
    "max_draws",
    "agent",
    "escape",
    "control",
    "model_source",
)


# -- settings of one algorithm --------------------------------------------------------------------


def _escape_class() -> type:
    from lktd_ppl.agents.harness import EscapeConfig

    return EscapeConfig


def _control_class(kind: str = "gymnax") -> type:
    """The control protocol's class: the gymnax harness's, or the host loop's on Gymnasium."""
    if kind == "gymnasium":
        from lktd_ppl.agents.host_loop import GymnasiumConfig

        return GymnasiumConfig
    from lktd_ppl.agents.control import ControlConfig

    return ControlConfig


def env_kind(env: str) -> str:
    """How ``env`` runs: ``"escape"``, ``"gymnax"`` or ``"gymnasium"`` (a RunError naming the
    choices otherwise)."""
    if env == "escape":  # without importing gymnax
        return "escape"
    from lktd_ppl.envs.gymnax_env import env_kind as kind

    try:
        return kind(env)
    except ValueError as e:
        raise RunError(str(e)) from None


def protocol_name(env: str) -> str:
    """The config key of the protocol of ``env``: ``escape`` or ``control``."""
    return "escape" if env_kind(env) == "escape" else "control"


def _protocol_class(env: str) -> type:
    kind = env_kind(env)
    return _escape_class() if kind == "escape" else _control_class(kind)


def agent_keys(algo: str) -> list[str]:
    """The agent settings ``--set`` accepts for ``algo`` (dotted paths; not the ``escape.`` ones)."""
    alg = registry.get(algo)
    fixed = {k for k, _ in alg.fixed}
    return [k for k in _leaf_keys(alg.config_class) if k not in fixed]


def valid_keys(algo: str, env: str = "escape") -> list[str]:
    """Every key ``--set`` accepts for ``algo`` on ``env``."""
    name = protocol_name(env)
    fields = [k for k in field_types(_protocol_class(env)) if k != "env_id"]
    return agent_keys(algo) + [f"{name}.{k}" for k in fields]


def _canonical(key: str, algo: str, valid: Sequence[str]) -> str:
    """The dotted path of ``key`` (a bare nested name resolves when unambiguous)."""
    if key in valid:
        return key
    alg = registry.get(algo)
    if key in dict(alg.fixed):
        raise RunError(
            f"config key {key!r} cannot be set: it is chosen by --algo "
            f"({', '.join(registry.ALGORITHMS)})"
        )
    if key in PROTOCOLS:
        raise RunError(f"config key {key!r} cannot be set whole: set {key}.FIELD=VALUE")
    if key.split(".", 1)[0] in PROTOCOLS:
        other = [p for p in PROTOCOLS if any(k.startswith(p + ".") for k in valid)]
        if other and not key.startswith(other[0] + "."):
            raise RunError(
                f"config key {key!r} does not apply to this environment; its protocol's keys "
                f"are {other[0]}.FIELD ({', '.join(k for k in valid if k.startswith(other[0]))})"
            )
    matches = [k for k in valid if k.rsplit(".", 1)[-1] == key and not _protocol_key(k)]
    if len(matches) == 1:
        return matches[0]
    bare = [k.rsplit(".", 1)[-1] for k in valid if "." in k and not _protocol_key(k)]
    close = difflib.get_close_matches(key, [*valid, *bare], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return _raise(f"unknown config key {key!r} for {algo}{hint}; valid keys: {', '.join(valid)}")


PROTOCOLS = ("escape", "control")


def _protocol_key(key: str) -> bool:
    return key.split(".", 1)[0] in PROTOCOLS


def _raise(message: str) -> Any:
    raise RunError(message)


# -- the run ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run: the algorithm, its config, the protocol (the escape room's,
    or a control task's in ``control``), seeds and how many draws per chain the run folder keeps."""

    algo: str
    agent: Any
    escape: Any
    env: str = "escape"
    seeds: int = 1
    first_seed: int = 0
    max_draws: int = 1000
    control: Any = None  # a control task's protocol (ControlConfig); None on the escape room

    @property
    def protocol(self) -> Any:
        """The protocol the harness runs: ``control`` on a control task, else ``escape``."""
        return self.escape if self.control is None else self.control

    @property
    def algorithm(self) -> registry.Algorithm:
        return registry.get(self.algo)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def members(self) -> int:
        """Members per seed: LKTD chains, BootDQN heads, or 1."""
        return self.algorithm.members(self.agent)

    def to_dict(self) -> dict:
        agent = to_dict(self.agent)
        for key, _ in self.algorithm.fixed:
            agent.pop(key, None)
        if self.control is not None:  # filled from the environment, not settings
            for key in ("obs_dim", "num_actions"):
                agent.pop(key, None)
        name = "escape" if self.control is None else "control"
        protocol = to_dict(self.protocol)
        protocol.pop("env_id", None)  # the run's env
        return {
            "env": self.env,
            "algo": self.algo,
            "seeds": self.seeds,
            "first_seed": self.first_seed,
            "max_draws": self.max_draws,
            "agent": agent,
            name: protocol,
        }


def _collect_updates(
    algo: str,
    config: dict,
    sets: Iterable[str],
    where: str,
    config_dir: str | Path | None,
    env: str = "escape",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agent updates, protocol updates) as dotted keys from ``config`` then ``sets``."""
    valid = valid_keys(algo, env)
    name = protocol_name(env)
    agent_updates: dict[str, Any] = {}
    for key, value in flatten(dict(config.get("agent", {}))).items():
        if key == "method":  # the algorithm's own; a config file of another algorithm is refused
            if value != dict(registry.get(algo).fixed).get("method"):
                raise RunError(f"{where}: agent.method differs from algo {algo!r}")
            continue
        agent_updates[_canonical(key, algo, valid)] = value
    other = "control" if name == "escape" else "escape"
    if config.get(other):
        raise RunError(f"{where}: settings {other!r} do not apply to environment {env!r}")
    escape_updates = dict(config.get(name, {}))
    model = agent_updates.get("model")
    if model and config_dir is not None:
        path, sep, name = str(model).rpartition(":")
        if sep and path.endswith(".py") and not Path(path).expanduser().is_absolute():
            agent_updates["model"] = f"{Path(config_dir) / path}:{name}"
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RunError(f"--set {item!r}: expected KEY=VALUE (e.g. --set escape.window=5000)")
        if key.startswith(name + "."):
            escape_updates[key.removeprefix(name + ".")] = value
        else:
            agent_updates[_canonical(key, algo, valid)] = value
    return agent_updates, escape_updates


def _resolve_model(spec: str) -> str:
    """A model spec with its file made absolute (shipped names stay as they are)."""
    from lktd_ppl.api import resolve_model
    from lktd_ppl.ssm import ModelError

    try:
        file, name = resolve_model(spec)
    except ModelError as e:
        raise RunError(str(e)) from None
    path = spec.rpartition(":")[0]
    return spec if "/" not in path and not path.endswith(".py") else f"{file.resolve()}:{name}"


def build_spec(
    *,
    algo: str | None = None,
    env: str | None = None,
    preset: str | None = None,
    config: dict | None = None,
    sets: Iterable[str] = (),
    model: str | None = None,
    seeds: int | None = None,
    first_seed: int | None = None,
    steps: int | None = None,
    max_draws: int | None = None,
    where: str = "config",
    config_dir: str | Path | None = None,
    check_memory: bool = True,
) -> RunSpec:
    """Resolve a run (see the module docstring for the order).  A relative model path in
    ``config`` is relative to ``config_dir`` (the config file's folder); on the command line, to
    the working directory.  Every setting is checked against its allowed range
    (:mod:`lktd_ppl.validation`) and, with ``check_memory``, the run's memory estimate against the
    machine's available memory (:mod:`lktd_ppl.memory`), before anything is compiled.  Every
    problem is a :class:`RunError` with a one-line message."""
    config = dict(config or {})
    file_env = config.get("env")
    if env is None:
        env = file_env or "escape"
    elif file_env is not None and file_env != env:
        raise RunError(f"--env {env} differs from the environment of {where} ({file_env})")
    kind = env_kind(env)
    if algo is None:
        algo = config.get("algo")
        if algo is None:
            choices = ", ".join(registry.ALGORITHMS)
            raise RunError(f"give --algo (one of {choices}) or --config FILE.json")
    elif "algo" in config and config["algo"] != algo:
        raise RunError(
            f"--algo {algo} differs from the algorithm of {where} ({config['algo']}); the agent "
            "settings there belong to that algorithm"
        )
    try:
        alg = registry.get(algo)
    except ValueError as e:
        raise RunError(str(e)) from None
    extra = set(config) - set(TOP_LEVEL)
    if extra:
        raise RunError(f"{where}: unknown top-level key(s) {', '.join(sorted(extra))}")
    if preset is not None and kind != "escape":
        raise RunError(f"--preset {preset} is a configuration of the escape room, not of {env}")
    if preset is None and kind == "escape":
        from lktd_ppl.presets import DEFAULT_PRESETS

        preset = DEFAULT_PRESETS.get(algo)
    if preset is not None:
        from lktd_ppl.presets import preset as preset_values

        try:
            base = preset_values(preset, algo)
        except ValueError as e:
            raise RunError(str(e)) from None
        config = {
            **config,
            "agent": {
                **{k: v for k, v in base.items() if k != "escape"},
                **config.get("agent", {}),
            },
            "escape": {**base["escape"], **config.get("escape", {})},
        }
    agent_updates, escape_updates = _collect_updates(algo, config, sets, where, config_dir, env)
    if kind != "escape":
        from lktd_ppl.presets import control_defaults

        agent_updates = {**control_defaults(algo), **agent_updates}
    if model is not None:
        if not alg.samples_model:
            family = ", ".join(a for a, x in registry.ALGORITHMS.items() if x.samples_model)
            raise RunError(
                f"--model applies to the LKTD family ({family}), which samples a NumPyro model; "
                f"{algo} trains its own flax network (settings: {', '.join(agent_keys(algo))})"
            )
        agent_updates["model"] = model
    if agent_updates.get("model"):
        agent_updates["model"] = _resolve_model(str(agent_updates["model"]))
    if steps is not None:
        if steps <= 0:
            raise RunError(f"--steps must be a positive number of environment steps, got {steps}")
        escape_updates["total_steps"] = steps

    name = protocol_name(env)
    escape_types = field_types(_protocol_class(env))
    for key in escape_updates:
        if key not in escape_types or key == "env_id":
            _canonical(f"{name}.{key}", algo, valid_keys(algo, env))
    escape_values = {
        k: coerce(v, escape_types[k], f"{name}.{k}") for k, v in escape_updates.items()
    }
    control = None
    if kind == "escape":
        escape = _build(_escape_class(), escape_values, "escape.")
        validation.check(escape, "escape.")  # ranges first: the checks below divide by them
        _check_escape(escape)
    else:
        escape = None
        control = _build(_control_class(kind), {**escape_values, "env_id": env}, "control.")
        validation.check(control, "control.")
        _check_control(control)
        agent_updates = _from_environment(alg, agent_updates, control)
    types_ = _leaf_keys(alg.config_class)
    values = {k: coerce(v, types_[k], k) for k, v in agent_updates.items()}
    values.update(dict(alg.fixed))
    agent = _build(alg.config_class, values)
    validation.check(agent)
    _check_agent(alg, agent, control or escape, name)

    seeds = coerce(config.get("seeds", 1) if seeds is None else seeds, int, "seeds")
    first_seed = coerce(
        config.get("first_seed", 0) if first_seed is None else first_seed, int, "first_seed"
    )
    max_draws = coerce(
        config.get("max_draws", 1000) if max_draws is None else max_draws, int, "max_draws"
    )
    if seeds < 1:
        raise RunError(f"--seeds must be at least 1, got {seeds}")
    if first_seed < 0:
        raise RunError(f"--seed must be non-negative, got {first_seed}")
    if max_draws < 2:
        raise RunError(f"--max-draws must be at least 2, got {max_draws}")
    spec = RunSpec(algo, agent, escape, env, seeds, first_seed, max_draws, control)
    facts = validation.check_spec(spec)  # every range, across fields, the model: nothing compiled
    if check_memory:
        memory.check_fits(spec, None if facts is None else facts.p)
    return spec


def _from_environment(alg: registry.Algorithm, updates: dict, control: Any) -> dict:
    """The agent settings that a control task fixes (the network's ``obs_dim`` and
    ``num_actions``) or defaults (``gamma``, the protocol's), added to ``updates``."""
    types_ = _leaf_keys(alg.config_class)
    updates = dict(updates)
    for key in ("obs_dim", "num_actions"):
        if key not in types_:
            continue
        value = getattr(control, key)
        if key in updates and coerce(updates[key], int, key) != value:
            raise RunError(f"{key} is {value} on {control.env_id} (it comes from the environment)")
        updates[key] = value
    if "gamma" in types_:
        updates.setdefault("gamma", control.gamma)
    return updates


def _check_control(c: Any) -> None:
    try:
        c.validate()
        _ = c.task  # makes the environment: unsupported action or observation spaces fail here
    except ValueError as err:
        raise RunError(str(err)) from None


def _check_escape(e: Any) -> None:
    if e.total_steps <= 0:
        raise RunError(f"steps must be positive, got {e.total_steps}")
    if e.evals_per_window <= 0 or e.window <= 0 or e.window % e.evals_per_window:
        raise RunError(
            f"escape.window ({e.window}) must be a positive multiple of escape.evals_per_window "
            f"({e.evals_per_window})"
        )
    if e.total_steps % e.chunk_steps:
        raise RunError(
            f"steps ({e.total_steps}) must be a multiple of the evaluation interval "
            f"escape.window / escape.evals_per_window = {e.chunk_steps}"
        )
    if e.total_steps <= e.train_start:
        raise RunError(
            f"steps ({e.total_steps}) must exceed escape.train_start ({e.train_start}), or "
            "nothing is trained"
        )
    try:
        e.validate()
    except ValueError as err:
        raise RunError(str(err)) from None


def _check_agent(alg: registry.Algorithm, agent: Any, escape: Any, name: str = "escape") -> None:
    """The baselines' discount must be the protocol's (each field's range is checked before, by
    :func:`lktd_ppl.validation.check`; the LKTD family's discount is its model's)."""
    if not alg.samples_model and agent.gamma != escape.gamma:
        raise RunError(
            f"gamma ({agent.gamma}) differs from {name}.gamma ({escape.gamma}); set both"
        )


# -- config files ----------------------------------------------------------------------------------


def config_path(path: str | Path) -> Path:
    """``path``, or ``path/config.json`` if ``path`` is a folder."""
    path = Path(path)
    return path / "config.json" if path.is_dir() else path


def load_config(path: str | Path) -> dict:
    """A ``config.json`` (a run folder's, or one written by hand) as a dict."""
    path = config_path(path)
    if not path.is_file():
        raise RunError(f"config file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"config file {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"config file {str(path)!r} must hold a JSON object")
    return data


def spec_from_folder(folder: str | Path) -> RunSpec:
    """The :class:`RunSpec` of a run folder (its ``config.json``)."""
    path = config_path(folder)
    return build_spec(
        config=load_config(path), where=str(path), config_dir=path.parent, check_memory=False
    )
