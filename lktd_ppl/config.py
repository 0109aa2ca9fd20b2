"""Run configuration: what defines a run (:class:`RunSpec`), read from presets, config files,
``--set KEY=VALUE`` strings and flags, checked once here before anything is compiled.

Settings are resolved in this order: a preset (``paper``: every setting written out), then a config
file (a run folder's ``config.json``), then ``--set`` strings, then the explicit arguments.  Keys:

- an agent field (``num_chains=4``); a field of a nested config by its path (``sampler.step_size``),
  or by its bare name where that is unambiguous (``step_size`` means ``sampler.step_size``);
- ``escape.FIELD`` for the escape protocol (``escape.window=5000``).

This module imports no JAX at import time (``lktd --help`` stays fast); resolving a spec imports the
algorithm's module through :mod:`lktd_ppl.registry`.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lktd_ppl import registry

ENVS = ("escape",)
TOP_LEVEL = ("env", "algo", "seeds", "first_seed", "max_draws", "agent", "escape", "model_source")


class RunError(ValueError):
    """A run that cannot be configured or read; the message is one line for the user."""


# -- field types and values --------------------------------------------------------------------


def _nested_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def field_types(cls: type) -> dict[str, Any]:
    """Settable fields of a config class and their types (callables, e.g. a schedule, are not)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp is collections.abc.Callable or typing.get_origin(tp) is collections.abc.Callable:
            continue
        out[f.name] = tp
    return out


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is tuple:
            inner = typing.get_args(args[0])
            kind = "pairs" if len(inner) == 2 else "tuples"
            names = ", ".join(_type_name(a) for a in inner)
            return f"{kind} ({names}), e.g. ((1, 0.5), (2, 0.1))"
        if args and args[-1] is not Ellipsis and len(args) > 1:
            return f"({', '.join(_type_name(a) for a in args)})"
        return f"comma-separated {_type_name(args[0])}s"
    return {bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(
        tp, "none" if tp is type(None) else getattr(tp, "__name__", str(tp))
    )


def _coerce_tuple(value: Any, args: tuple, key: str, bad: RunError) -> tuple:
    nested = any(typing.get_origin(a) is tuple for a in args)
    if isinstance(value, str) and nested:  # e.g. "((70000, 0.1), (88000, 0.01))"
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise bad from None
        if isinstance(value, tuple | list) and value and not isinstance(value[0], tuple | list):
            value = (value,)  # one pair given without the outer brackets
    if isinstance(value, str):
        items = [s for s in value.strip().strip("()[]").replace(" ", "").split(",") if s]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise bad
    if (len(args) == 2 and args[1] is Ellipsis) or len(args) == 1:  # tuple[X, ...]
        return tuple(coerce(v, args[0], key) for v in items)
    if len(items) != len(args):  # fixed length, e.g. tuple[int, float]
        raise bad
    return tuple(coerce(v, a, key) for v, a in zip(items, args, strict=True))


def _coerce_number(value: Any, tp: type, bad: RunError) -> Any:
    if isinstance(value, bool):
        raise bad
    if tp is int and isinstance(value, int):
        return value
    try:
        number = float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise bad from None
    if tp is int:
        if not number.is_integer():
            raise bad
        return int(number)
    return number


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (text from the command line, or a JSON value) as a value of type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = RunError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except RunError:
                pass
        raise bad
    if origin is tuple:
        return _coerce_tuple(value, args, key, bad)
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise bad
    if tp in (int, float):
        return _coerce_number(value, tp, bad)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise RunError(f"{key}: settings of type {tp} cannot be set")


# -- settings of one algorithm --------------------------------------------------------------------


def _escape_class() -> type:
    from lktd_ppl.agents.harness import EscapeConfig

    return EscapeConfig


def _leaf_keys(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> type of every settable leaf of ``cls`` (nested configs flattened)."""
    out = {}
    for name, tp in field_types(cls).items():
        if _nested_config(tp):
            out.update(_leaf_keys(tp, f"{prefix}{name}."))
        else:
            out[prefix + name] = tp
    return out


def agent_keys(algo: str) -> list[str]:
    """The agent settings ``--set`` accepts for ``algo`` (dotted paths; not the ``escape.`` ones)."""
    alg = registry.get(algo)
    fixed = {k for k, _ in alg.fixed}
    return [k for k in _leaf_keys(alg.config_class) if k not in fixed]


def valid_keys(algo: str) -> list[str]:
    """Every key ``--set`` accepts for ``algo``."""
    return agent_keys(algo) + [f"escape.{k}" for k in field_types(_escape_class())]


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
    if key == "escape":
        raise RunError("config key 'escape' cannot be set whole: set escape.FIELD=VALUE")
    matches = [k for k in valid if k.rsplit(".", 1)[-1] == key and not k.startswith("escape.")]
    if len(matches) == 1:
        return matches[0]
    bare = [k.rsplit(".", 1)[-1] for k in valid if "." in k and not k.startswith("escape.")]
    close = difflib.get_close_matches(key, [*valid, *bare], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return _raise(f"unknown config key {key!r} for {algo}{hint}; valid keys: {', '.join(valid)}")


def _raise(message: str) -> Any:
    raise RunError(message)


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (a config file's ``agent``) as dotted keys."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """An instance of ``cls`` from dotted ``values`` (already coerced), nested configs included."""
    kwargs = {}
    for name, tp in field_types(cls).items():
        if _nested_config(tp):
            sub = {k[len(name) + 1 :]: v for k, v in values.items() if k.startswith(name + ".")}
            kwargs[name] = _build(tp, sub, f"{prefix}{name}.")
        elif name in values:
            kwargs[name] = values[name]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise RunError(f"{prefix or cls.__name__}: {e}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-ready nested dicts of its settable fields."""
    out = {}
    for name, tp in field_types(type(config)).items():
        value = getattr(config, name)
        out[name] = to_dict(value) if _nested_config(tp) else value
    return out


# -- the run ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run: the algorithm, its config, the escape protocol, seeds and
    how many draws per chain the run folder keeps."""

    algo: str
    agent: Any
    escape: Any
    env: str = "escape"
    seeds: int = 1
    first_seed: int = 0
    max_draws: int = 1000

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
        return {
            "env": self.env,
            "algo": self.algo,
            "seeds": self.seeds,
            "first_seed": self.first_seed,
            "max_draws": self.max_draws,
            "agent": agent,
            "escape": to_dict(self.escape),
        }


def _collect_updates(
    algo: str, config: dict, sets: Iterable[str], where: str, config_dir: str | Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agent updates, escape updates) as dotted keys from ``config`` then ``sets``."""
    valid = valid_keys(algo)
    agent_updates: dict[str, Any] = {}
    for key, value in flatten(dict(config.get("agent", {}))).items():
        if key == "method":  # the algorithm's own; a config file of another algorithm is refused
            if value != dict(registry.get(algo).fixed).get("method"):
                raise RunError(f"{where}: agent.method differs from algo {algo!r}")
            continue
        agent_updates[_canonical(key, algo, valid)] = value
    escape_updates = dict(config.get("escape", {}))
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
        if key.startswith("escape."):
            escape_updates[key.removeprefix("escape.")] = value
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
    env: str = "escape",
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
) -> RunSpec:
    """Resolve a run (see the module docstring for the order).  A relative model path in
    ``config`` is relative to ``config_dir`` (the config file's folder); on the command line, to
    the working directory.  Every problem is a :class:`RunError` with a one-line message."""
    config = dict(config or {})
    if env not in ENVS:
        raise RunError(f"unknown environment {env!r}; supported: {', '.join(ENVS)}")
    if config.get("env", env) not in ENVS:
        raise RunError(f"{where}: unknown environment {config['env']!r}; supported: escape")
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
    agent_updates, escape_updates = _collect_updates(algo, config, sets, where, config_dir)
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

    escape_types = field_types(_escape_class())
    for key in escape_updates:
        if key not in escape_types:
            _canonical("escape." + key, algo, valid_keys(algo))
    escape_values = {
        k: coerce(v, escape_types[k], f"escape.{k}") for k, v in escape_updates.items()
    }
    escape = _build(_escape_class(), escape_values, "escape.")
    _check_escape(escape)
    types_ = _leaf_keys(alg.config_class)
    values = {k: coerce(v, types_[k], k) for k, v in agent_updates.items()}
    values.update(dict(alg.fixed))
    agent = _build(alg.config_class, values)
    _check_agent(alg, agent, escape)

    seeds = int(config.get("seeds", 1) if seeds is None else seeds)
    first_seed = int(config.get("first_seed", 0) if first_seed is None else first_seed)
    max_draws = int(config.get("max_draws", 1000) if max_draws is None else max_draws)
    if seeds < 1:
        raise RunError(f"--seeds must be at least 1, got {seeds}")
    if first_seed < 0:
        raise RunError(f"--seed must be non-negative, got {first_seed}")
    if max_draws < 2:
        raise RunError(f"--max-draws must be at least 2, got {max_draws}")
    return RunSpec(algo, agent, escape, env, seeds, first_seed, max_draws)


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


def _check_agent(alg: registry.Algorithm, agent: Any, escape: Any) -> None:
    if alg.samples_model:
        for key in ("num_chains",):
            if getattr(agent, key) < 1:
                raise RunError(f"{key} must be at least 1, got {getattr(agent, key)}")
        if agent.sampler.kappa < 1:
            raise RunError(f"sampler.kappa must be at least 1, got {agent.sampler.kappa}")
        for key in ("pseudo_population", "step_size"):
            if not getattr(agent.sampler, key) > 0:
                raise RunError(f"sampler.{key} must be positive, got {getattr(agent.sampler, key)}")
    elif agent.gamma != escape.gamma:
        raise RunError(
            f"gamma ({agent.gamma}) differs from escape.gamma ({escape.gamma}); set both"
        )
    if alg.members_field and alg.members(agent) < 1:
        raise RunError(f"{alg.members_field} must be at least 1, got {alg.members(agent)}")


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
    return build_spec(config=load_config(path), where=str(path), config_dir=path.parent)
