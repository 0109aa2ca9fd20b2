"""Run folders: configure, train, write, reload and diagnose one escape-room run.

A run is one algorithm on one environment over ``seeds`` seeds (vmapped), described by a
:class:`RunSpec` (the algorithm's config dataclass, the escape protocol, seeds, thinning).
:func:`execute` trains it and writes the folder; the ``lktd`` command is a thin layer over this
module.

A run folder holds:

- ``config.json``: the resolved :class:`RunSpec` (``lktd train --config DIR/config.json``
  reproduces the run: same config and seeds give the same metrics);
- ``metrics.csv``: one row per seed x evaluation: ``step, seed, episodes, mean_return`` (NaN when no
  episode ended since the previous evaluation), then every metric per action (``mse_E``,
  ``coverage_E``, ``coverage_equal_tailed_E``, ``width_E``, ``calibration50_E``,
  ``start_sq_error_E``, ...); NaN before the burn-in ends;
- ``samples.nc``: ArviZ DataTree (netCDF): group ``posterior`` with ``q`` dims
  ``(chain, draw, cell, action)``, the sampled Q-grids of the last ``sample_size`` training stages,
  in time order, thinned to at most ``max_draws`` draws per chain; chains are seed-major
  ``(seed, member)`` pairs (member = LKTD chain, BootDQN head; 1 for the point-estimate
  baselines); group ``constant_data`` with the truth ``q_true`` and the scored-entry ``mask``;
  group ``final_parameters`` with the final flat parameter vector (``theta``, dims
  ``(chain, param)`` for the LKTD family, ``(seed, param)`` otherwise); root attributes name the
  algorithm, the seeds, members per seed and the environment step of each draw
  (``first_draw_step + draw * draw_step``);
- ``checkpoint.npz``: the final learner state of every seed, one array per pytree leaf named by its
  path (leading axis = seed); :func:`load_checkpoint` rebuilds the pytree. The replay buffer and the
  sample ring are not saved: it is a final state to inspect or start from, not a resume point;
- ``summary.md``: the table the command prints (last window, mean over seeds);
- ``model.py`` (LKTD family): the run's copy of the NumPyro model file; ``config.json``'s
  ``agent.model`` points at it (a relative model path in a config file is relative to the file's
  folder) and ``model_source`` records where it was copied from, so a rerun uses the model as it
  was, whatever happened to the original since;
- plots (PNG): ``coverage_over_time``, ``learning_curve`` (median and IQR over seeds),
  ``interval_heatmaps`` (first seed), ``policy_quiver`` (mean over seeds).

:func:`diagnose` reads a folder back and adds ``diagnose.md``, ``diagnostics.csv`` (the ArviZ
summary of every scored entry) and ``calibration``, ``trace``, ``interval_heatmaps`` and (with
several chains) ``rhat_over_time`` plots.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import difflib
import json
import math
import shutil
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENVS = ("escape",)
LKTD_FAMILY = ("lktd", "sgld", "sghmc")
BASELINES = ("dqn", "bootdqn", "qrdqn", "kova")
ALGORITHMS = LKTD_FAMILY + BASELINES
ACTION_NAMES = ("E", "N", "W", "S")
LEVELS = (0.5, 0.8, 0.9, 0.95)  # lktd_ppl.metrics.LEVELS (kept here so the module imports no JAX)
PER_ACTION = (
    "mse",
    "coverage",
    "coverage_equal_tailed",
    "width",
    "start_sq_error",
    "start_coverage",
    "start_coverage_equal_tailed",
)
RUN_FILES = ("config.json", "metrics.csv", "samples.nc", "checkpoint.npz", "summary.md")
MAX_PARAMS_SAVED = 5_000_000  # final parameters go into samples.nc below this many floats
_NOT_SETTABLE = {
    "escape": "set escape fields as escape.FIELD=VALUE",
    "method": "the method is chosen by --algo (lktd, sgld or sghmc)",
}


class RunError(ValueError):
    """A run that cannot be configured or read; the message is one line for the user."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def agent_config_class(algo: str) -> type:
    """The config dataclass of ``algo`` (imports the agent module, hence JAX)."""
    if algo in LKTD_FAMILY:
        from lktd_ppl.agents.lktd import LKTDAgentConfig

        return LKTDAgentConfig
    if algo == "dqn":
        from lktd_ppl.agents.dqn import DQNConfig

        return DQNConfig
    if algo == "bootdqn":
        from lktd_ppl.agents.bootdqn import BootDQNConfig

        return BootDQNConfig
    if algo == "qrdqn":
        from lktd_ppl.agents.qrdqn import QRDQNConfig

        return QRDQNConfig
    if algo == "kova":
        from lktd_ppl.agents.kova import KOVAConfig

        return KOVAConfig
    raise RunError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")


def _escape_class() -> type:
    from lktd_ppl.agents.harness import EscapeConfig

    return EscapeConfig


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def agent_keys(algo: str) -> list[str]:
    """The agent settings ``--set`` accepts for ``algo`` (without the ``escape.`` ones)."""
    return [k for k in _field_types(agent_config_class(algo)) if k not in _NOT_SETTABLE]


def valid_keys(algo: str) -> list[str]:
    """Every key ``--set`` accepts for ``algo``."""
    escape = [f"escape.{k}" for k in _field_types(_escape_class())]
    return agent_keys(algo) + escape


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
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        try:
            number = float(str(value).replace("_", ""))
        except ValueError:
            raise bad from None
        if not number.is_integer():
            raise bad
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:
            number = float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise bad from None
        return number
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise RunError(f"{key}: settings of type {tp} cannot be set")


def _unknown_key(key: str, algo: str, valid: Sequence[str]) -> RunError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if key in _NOT_SETTABLE:
        return RunError(f"config key {key!r} cannot be set: {_NOT_SETTABLE[key]}")
    return RunError(f"unknown config key {key!r} for {algo}{hint}; valid keys: {', '.join(valid)}")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run.  ``agent``: the algorithm's config dataclass (for the LKTD
    family its ``escape`` and ``method`` fields always equal ``escape`` and ``algo``)."""

    algo: str
    agent: Any
    escape: Any
    env: str = "escape"
    seeds: int = 1
    first_seed: int = 0
    max_draws: int = 1000

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict:
        agent = dataclasses.asdict(self.agent)
        for key in _NOT_SETTABLE:
            agent.pop(key, None)
        return {
            "env": self.env,
            "algo": self.algo,
            "seeds": self.seeds,
            "first_seed": self.first_seed,
            "max_draws": self.max_draws,
            "agent": agent,
            "escape": dataclasses.asdict(self.escape),
        }


def _apply(
    cls: type, base: dict, updates: dict, algo: str, valid: Sequence[str], prefix: str = ""
) -> Any:
    types_ = _field_types(cls)
    values = dict(base)
    for key, value in updates.items():
        if key not in types_ or key in _NOT_SETTABLE:
            raise _unknown_key(prefix + key, algo, valid)
        values[key] = coerce(value, types_[key], prefix + key)
    return cls(**values)


def build_spec(
    *,
    algo: str | None = None,
    env: str = "escape",
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
    """Resolve a run: ``config`` (a loaded ``config.json``, optional), then ``sets``
    (``KEY=VALUE`` strings), then the explicit arguments.  A relative model path in ``config``
    is relative to ``config_dir`` (the config file's folder); on the command line, to the
    working directory.  Every problem is a :class:`RunError` with a one-line message; nothing
    is allocated or trained."""
    config = dict(config or {})
    if env not in ENVS:
        raise RunError(f"unknown environment {env!r}; supported: {', '.join(ENVS)}")
    if config.get("env", env) not in ENVS:
        raise RunError(f"{where}: unknown environment {config['env']!r}; supported: escape")
    if algo is None:
        algo = config.get("algo")
        if algo is None:
            raise RunError(f"give --algo (one of {', '.join(ALGORITHMS)}) or --config FILE.json")
    elif "algo" in config and config["algo"] != algo:
        raise RunError(
            f"--algo {algo} differs from the algorithm of {where} ({config['algo']}); the agent "
            "settings there belong to that algorithm"
        )
    if algo not in ALGORITHMS:
        raise RunError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")
    known = {"env", "algo", "seeds", "first_seed", "max_draws", "agent", "escape", "model_source"}
    extra = set(config) - known
    if extra:
        raise RunError(f"{where}: unknown top-level key(s) {', '.join(sorted(extra))}")
    valid = valid_keys(algo)

    agent_updates = dict(config.get("agent", {}))
    if "method" in agent_updates:
        if agent_updates.pop("method") != algo:
            raise RunError(f"{where}: agent.method differs from algo {algo!r}")
    escape_updates = dict(config.get("escape", {}))
    if agent_updates.get("model") and config_dir is not None:
        path, sep, name = str(agent_updates["model"]).rpartition(":")
        if sep and path and not Path(path).expanduser().is_absolute():
            agent_updates["model"] = f"{Path(config_dir) / path}:{name}"
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RunError(f"--set {item!r}: expected KEY=VALUE (e.g. --set escape.window=5000)")
        if key.startswith("escape."):
            escape_updates[key.removeprefix("escape.")] = value
        elif key in valid:
            agent_updates[key] = value
        else:
            raise _unknown_key(key, algo, valid)

    if model is not None:
        if algo not in LKTD_FAMILY:
            raise RunError(
                f"--model applies to the LKTD family ({', '.join(LKTD_FAMILY)}), which samples a "
                f"NumPyro model; {algo} trains its own flax network (settings: "
                f"{', '.join(agent_keys(algo))})"
            )
        agent_updates["model"] = model
    if "model" in agent_updates and agent_updates["model"]:
        agent_updates["model"] = _resolve_model(str(agent_updates["model"]))
    if steps is not None:
        if steps <= 0:
            raise RunError(f"--steps must be a positive number of environment steps, got {steps}")
        escape_updates["total_steps"] = steps

    escape = _apply(_escape_class(), {}, escape_updates, algo, valid, prefix="escape.")
    _check_escape(escape)
    agent_cls = agent_config_class(algo)
    base = {"escape": escape, "method": algo} if algo in LKTD_FAMILY else {}
    agent = _apply(agent_cls, base, agent_updates, algo, valid)
    _check_agent(algo, agent, escape)

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


def _resolve_model(spec: str) -> str:
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise RunError(f"model {spec!r} must look like path/to/file.py:function")
    file = Path(path).expanduser()
    if not file.is_file():
        raise RunError(f"model file {path!r} does not exist")
    return f"{file.resolve()}:{name}"


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


def _check_agent(algo: str, agent: Any, escape: Any) -> None:
    if algo in LKTD_FAMILY:
        for key in ("num_chains", "kappa"):
            if getattr(agent, key) < 1:
                raise RunError(f"{key} must be at least 1, got {getattr(agent, key)}")
        for key in ("pseudo_population", "step_size"):
            if not getattr(agent, key) > 0:
                raise RunError(f"{key} must be positive, got {getattr(agent, key)}")
    elif agent.gamma != escape.gamma:
        raise RunError(
            f"gamma ({agent.gamma}) differs from escape.gamma ({escape.gamma}); set both"
        )
    if algo == "bootdqn" and agent.heads < 1:
        raise RunError(f"heads must be at least 1, got {agent.heads}")


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
    path = config_path(folder)
    return build_spec(config=load_config(path), where=str(path), config_dir=path.parent)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def make_train(spec: RunSpec) -> Callable[..., dict]:
    """The harness's ``train(keys, progress, log)`` for ``spec``: builds the learner, which loads
    and checks the model (LKTD family) or the KOVA memory need, before anything runs."""
    algo = spec.algo
    if algo in LKTD_FAMILY:
        from lktd_ppl.agents.lktd import make_lktd_train

        return make_lktd_train(dataclasses.replace(spec.agent, escape=spec.escape, method=algo))
    if algo == "dqn":
        from lktd_ppl.agents.dqn import make_dqn_train as make
    elif algo == "bootdqn":
        from lktd_ppl.agents.bootdqn import make_bootdqn_train as make
    elif algo == "qrdqn":
        from lktd_ppl.agents.qrdqn import make_qrdqn_train as make
    else:
        from lktd_ppl.agents.kova import make_kova_train as make
    return make(spec.agent, spec.escape)


def make_learner(spec: RunSpec) -> Any:
    """The :class:`~lktd_ppl.agents.harness.Learner` of ``spec``."""
    algo = spec.algo
    if algo in LKTD_FAMILY:
        from lktd_ppl.agents.lktd import lktd_learner

        agent = dataclasses.replace(spec.agent, escape=spec.escape, method=algo)
        return lktd_learner(agent, spec.escape.batch_size)
    if algo == "dqn":
        from lktd_ppl.agents.dqn import make_dqn_learner as make
    elif algo == "bootdqn":
        from lktd_ppl.agents.bootdqn import make_bootdqn_learner as make
    elif algo == "qrdqn":
        from lktd_ppl.agents.qrdqn import make_qrdqn_learner as make
    else:
        from lktd_ppl.agents.kova import make_kova_learner as make
    return make(spec.agent)


def prepare_folder(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {str(out)!r} exists and is not a folder")
    if (out / "config.json").exists() and not overwrite:
        raise RunError(
            f"{str(out)!r} already holds a run (config.json); pick another --out or pass "
            "--overwrite"
        )
    return out


def execute(
    spec: RunSpec,
    out: str | Path,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    train: Callable[..., dict] | None = None,
) -> dict:
    """Train ``spec`` and write the run folder ``out``; returns the harness's results.

    ``train``: ``make_train(spec)`` if already built (it loads and checks the model)."""
    import jax
    import jax.numpy as jnp

    out = prepare_folder(out, overwrite)
    if train is None:  # model / memory problems surface here, before the folder exists
        train = make_train(spec)
    keys = jnp.stack([jax.random.key(s) for s in spec.seed_list])
    results = train(keys, progress=progress, log=log)
    write_run(out, spec, results)
    return results


# --------------------------------------------------------------------------------------------
# Writing a run folder
# --------------------------------------------------------------------------------------------


def metric_rows(spec: RunSpec, results: dict) -> list[dict]:
    """One dict per (seed, evaluation), in the order of ``metrics.csv``."""
    m = results["metrics"]
    steps = np.asarray(results["eval_steps"])
    episodes = np.asarray(results["episodes"])
    returns = np.where(episodes > 0, np.asarray(results["mean_return"], np.float64), np.nan)
    rows = []
    for i, seed in enumerate(spec.seed_list):
        for j, step in enumerate(steps):
            row: dict[str, Any] = {
                "step": int(step),
                "seed": seed,
                "episodes": int(episodes[i, j]),
                "mean_return": float(returns[i, j]),
            }
            for name in PER_ACTION:
                for a, action in enumerate(ACTION_NAMES):
                    row[f"{name}_{action}"] = float(m[name][i, j, a])
            for li, lv in enumerate(LEVELS):
                for a, action in enumerate(ACTION_NAMES):
                    row[f"calibration{round(lv * 100)}_{action}"] = float(
                        m["calibration"][i, j, li, a]
                    )
            rows.append(row)
    return rows


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def read_metrics(folder: str | Path) -> dict[str, np.ndarray]:
    """``metrics.csv`` as columns (float arrays; ``step``, ``seed``, ``episodes`` as integers)."""
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        raise RunError(f"{str(path)!r} does not exist: is {str(folder)!r} a run folder?")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RunError(f"{str(path)!r} holds no rows")
    cols = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    for k in ("step", "seed", "episodes"):
        cols[k] = cols[k].astype(np.int64)
    return cols


def last_window_means(cols: dict[str, np.ndarray], total_steps: int, window: int) -> dict:
    """Metric -> mean over seeds of the per-seed mean over the last window's evaluations."""
    last = cols["step"] > total_steps - window
    seeds = np.unique(cols["seed"])
    out = {}
    for k, v in cols.items():
        if k in ("step", "seed"):
            continue
        per_seed = [_nanmean(v[last & (cols["seed"] == s)]) for s in seeds]
        out[k] = _nanmean(np.array(per_seed))
    return out


def _nanmean(x: np.ndarray, axis: int | None = None) -> Any:
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    count = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)[()]


def _fmt(v: float, spec: str) -> str:
    return "-" if not np.isfinite(v) else format(float(v), spec)


def summary_table(spec: RunSpec, cols: dict[str, np.ndarray], wall_time: float | None) -> str:
    """The Markdown summary the command prints and writes to ``summary.md``."""
    e = spec.escape
    means = last_window_means(cols, e.total_steps, e.window)
    members = members_per_seed(spec)
    first = max(e.total_steps - e.window, 0) + 1
    lines = [f"# {spec.algo} on {spec.env}", ""]
    facts = (
        f"{spec.seeds} seed{'s' if spec.seeds > 1 else ''} ({spec.first_seed}.."
        f"{spec.first_seed + spec.seeds - 1}) x {members} member{'s' if members > 1 else ''}, "
        f"{e.total_steps:,} environment steps"
    )
    if wall_time is not None:
        rate = e.total_steps * spec.seeds / max(wall_time, 1e-9)
        facts += f", {wall_time:.1f} s ({rate:,.0f} steps/s, compile included)"
    lines += [
        facts + ".",
        f"Last window (steps {first:,}-{e.total_steps:,}), mean over seeds; truth: Q of the "
        f"epsilon-greedy (epsilon = {e.truth_epsilon}) optimal policy, computed exactly.",
        "",
        "| action | coverage | equal-tailed | MSE | width | start coverage | start sq. error |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label: str, get: Callable[[str], float]) -> str:
        return (
            f"| {label} | {_fmt(get('coverage'), '.4f')} | "
            f"{_fmt(get('coverage_equal_tailed'), '.4f')} | {_fmt(get('mse'), '.3e')} | "
            f"{_fmt(get('width'), '.4f')} | {_fmt(get('start_coverage'), '.4f')} | "
            f"{_fmt(get('start_sq_error'), '.3e')} |"
        )

    for a in ACTION_NAMES:
        lines.append(row(a, lambda name, a=a: means[f"{name}_{a}"]))
    lines.append(
        row("avg", lambda name: _nanmean(np.array([means[f"{name}_{a}"] for a in ACTION_NAMES])))
    )
    cal = [
        _nanmean(np.array([means[f"calibration{round(lv * 100)}_{a}"] for a in ACTION_NAMES]))
        for lv in LEVELS
    ]
    ret = means["mean_return"]
    lines += [
        "",
        "Calibration (equal-tailed coverage at nominal "
        + " / ".join(f"{lv:.0%}" for lv in LEVELS)
        + ", avg over actions): "
        + " / ".join(_fmt(c, ".4f") for c in cal)
        + f". Mean return: {_fmt(ret, '.2f')}.",
        "",
        "coverage: the paper's (95% interval centred at the latest sample; a calibrated posterior "
        "scores about 0.834); equal-tailed: q2.5 < truth < q97.5 (calibrated: 0.95). MSE and width "
        "over legal cells; start: the start cell (only E and N are legal there).",
    ]
    return "\n".join(lines) + "\n"


def members_per_seed(spec: RunSpec) -> int:
    if spec.algo in LKTD_FAMILY:
        return spec.agent.num_chains
    if spec.algo == "bootdqn":
        return spec.agent.heads
    return 1


def ordered_draws(final: dict, seed_index: int, sample_size: int, members: int) -> np.ndarray:
    """The stored Q-grids of one seed in time order: (members, draws, cells * actions)."""
    ring = np.asarray(final["samples"][seed_index])  # (cells*A, S*m)
    valid = np.asarray(final["valid"][seed_index]).reshape(sample_size, members).all(axis=1)
    slot = int(final["slot"][seed_index])
    order = (slot + np.arange(sample_size)) % sample_size
    order = order[valid[order]]
    grids = ring.reshape(ring.shape[0], sample_size, members)[:, order]  # (cells*A, n, m)
    return np.transpose(grids, (2, 1, 0))


def thin_index(n: int, max_draws: int) -> np.ndarray:
    """Evenly strided indices into ``n`` draws, at most ``max_draws``, always keeping the last."""
    stride = max(1, math.ceil(n / max_draws))
    return np.arange(n - 1, -1, -stride)[::-1]


def _leaf_name(path: tuple) -> str:
    import jax

    return jax.tree_util.keystr(path).lstrip(".") or "leaf"


def _to_numpy(leaf: Any) -> np.ndarray:
    import jax

    if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def final_parameters(spec: RunSpec, learner_state: Any) -> tuple[list[str], np.ndarray] | None:
    """The final flat parameters: LKTD family (seeds * chains, p) as chains; others (seeds, p)."""
    import jax
    from jax.flatten_util import ravel_pytree

    if spec.algo in LKTD_FAMILY:
        pos = np.asarray(learner_state.position)  # (seeds, m, p)
        return ["chain", "param"], pos.reshape(-1, pos.shape[-1])
    if spec.algo == "kova":
        return ["seed", "param"], np.asarray(learner_state.theta)
    params = learner_state.params
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    return ["seed", "param"], np.asarray(flat)


def write_run(out: str | Path, spec: RunSpec, results: dict) -> Path:
    """Write the run folder (see the module docstring) from the harness's ``results``."""
    import jax

    from lktd_ppl import diagnostics as dg

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    e = spec.escape
    config = spec.to_dict()
    if spec.algo in LKTD_FAMILY:  # the run folder keeps its own copy of the model
        source, _, name = spec.agent.model_spec().rpartition(":")
        if Path(source).resolve() != (out / "model.py").resolve():
            shutil.copyfile(source, out / "model.py")
        config["agent"]["model"] = f"model.py:{name}"
        config["model_source"] = spec.agent.model_spec()
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    rows = metric_rows(spec, results)
    write_metrics_csv(out / "metrics.csv", rows)

    # samples.nc
    members = members_per_seed(spec)
    final = results["final"]
    truth = np.where(results["mask"], results["truth"], np.nan)
    per_seed = [ordered_draws(final, i, e.sample_size, members) for i in range(spec.seeds)]
    n = per_seed[0].shape[1]
    idx = thin_index(n, spec.max_draws)
    cells, num_actions = truth.shape
    q = np.concatenate([d[:, idx] for d in per_seed]).reshape(-1, len(idx), cells, num_actions)
    steps = e.total_steps - (n - 1 - idx) * e.train_every
    attrs = {
        "algo": spec.algo,
        "env": spec.env,
        "seeds": spec.seed_list,
        "members_per_seed": members,
        "chain_layout": "seed-major: chain = seed_index * members_per_seed + member",
        "first_draw_step": int(steps[0]) if len(steps) else 0,
        "draw_step": int(steps[1] - steps[0]) if len(steps) > 1 else 0,
        "stored_stages": int(n),
        "grid_size": int(e.size),
        "config": json.dumps(config),
    }
    tree = dg.q_samples_to_datatree(q, truth=truth, mask=results["mask"], attrs=attrs)
    learner_state = results["state"].learner
    params = final_parameters(spec, learner_state)
    if params is not None and params[1].size <= MAX_PARAMS_SAVED:
        import xarray as xr

        dims, theta = params
        tree["final_parameters"] = xr.DataTree(xr.Dataset({"theta": (dims, theta)}))
    dg.save_datatree(tree, out / "samples.nc")

    # checkpoint.npz
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(learner_state))[0]
    np.savez_compressed(out / "checkpoint.npz", **{_leaf_name(p): _to_numpy(v) for p, v in leaves})

    # summary and plots
    cols = read_metrics(out)
    (out / "summary.md").write_text(summary_table(spec, cols, results.get("wall_time")))
    title = f"{spec.algo}, {e.total_steps:,} steps, {spec.seeds} seed(s)"
    evals = np.asarray(results["eval_steps"])
    m = results["metrics"]
    win_steps, win_cov = window_average(evals, m["coverage"], e.window, e.total_steps)
    _, win_et = window_average(evals, m["coverage_equal_tailed"], e.window, e.total_steps)
    dg.plot_coverage_over_time(
        win_steps,
        _nanmean(win_cov, axis=0),
        _nanmean(win_et, axis=0),
        title=f"coverage (window means): {title}",
        path=out / "coverage_over_time.png",
    )
    returns = np.where(results["episodes"] > 0, results["mean_return"], np.nan)
    dg.plot_learning_curve(evals, returns, label=spec.algo, path=out / "learning_curve.png")
    first_seed = per_seed[0].reshape(-1, cells, num_actions)
    if first_seed.shape[0] >= 2:
        dg.plot_interval_heatmaps(
            first_seed,
            truth,
            results["mask"],
            e.size,
            title=f"95% intervals, seed {spec.first_seed}: {title}",
            path=out / "interval_heatmaps.png",
        )
    dg.plot_policy_quiver(
        np.mean(np.asarray(final["policy_frequency"]), axis=0),
        e.size,
        title=f"mean greedy-policy probability: {title}",
        path=out / "policy_quiver.png",
    )
    return out


def window_average(
    steps: np.ndarray, values: np.ndarray, window: int, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-window means of ``values`` (seeds, evals, ...) over the evaluations at ``steps``:
    (window end steps, (seeds, windows, ...)); the paper logs its metrics this way."""
    ids = (np.asarray(steps) - 1) // window
    keys = np.unique(ids)
    means = np.stack([_nanmean(values[:, ids == k], axis=1) for k in keys], axis=1)
    return np.minimum((keys + 1) * window, total), means


def load_checkpoint(folder: str | Path) -> Any:
    """The final learner state saved in ``folder/checkpoint.npz``, as the learner's pytree (every
    leaf with a leading seed axis)."""
    import jax

    folder = Path(folder)
    spec = spec_from_folder(folder)
    path = folder / "checkpoint.npz"
    if not path.is_file():
        raise RunError(f"{str(path)!r} does not exist")
    learner = make_learner(spec)
    shapes = jax.eval_shape(learner.init, jax.random.key(0))
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    with np.load(path) as data:
        leaves = [data[_leaf_name(p)] for p, _ in paths]
    return jax.tree_util.tree_unflatten(treedef, leaves)


# --------------------------------------------------------------------------------------------
# Diagnosing a run folder
# --------------------------------------------------------------------------------------------


# (header, summary column, reduction over entries, format)
_CONVERGENCE = [
    ("R-hat median", "r_hat", np.median, ".3f"),
    ("R-hat max", "r_hat", np.max, ".3f"),
    ("ESS bulk min", "ess_bulk", np.min, ".0f"),
    ("ESS bulk median", "ess_bulk", np.median, ".0f"),
    ("ESS tail min", "ess_tail", np.min, ".0f"),
    ("MCSE mean (median)", "mcse_mean", np.median, ".2e"),
]
# (header, summary column, format)
_ENTRY = [
    ("mean", "mean", ".4f"),
    ("sd", "sd", ".4f"),
    ("eti95 lo", "eti95_lb", ".4f"),
    ("eti95 hi", "eti95_ub", ".4f"),
    ("R-hat", "r_hat", ".3f"),
    ("ESS bulk", "ess_bulk", ".0f"),
    ("ESS tail", "ess_tail", ".0f"),
    ("MCSE mean", "mcse_mean", ".2e"),
]
# (header, interval_metrics key, format)
_AGAINST_TRUTH = [
    ("coverage", "coverage", ".4f"),
    ("equal-tailed", "coverage_equal_tailed", ".4f"),
    ("MSE", "mse", ".3e"),
    ("width", "width", ".4f"),
]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def diagnose(folder: str | Path, *, trace_cells: Sequence[tuple[int, int]] | None = None) -> str:
    """Read a run folder, write the diagnostic plots and tables into it, return the report.

    ``trace_cells``: the (cell, action) pairs of the trace plot and the "selected Q-values"
    table (default :func:`default_trace_cells`: start cell E and N, next to the exit E and W).
    """
    from lktd_ppl import diagnostics as dg

    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"run folder {str(folder)!r} does not exist")
    if not (folder / "samples.nc").is_file():
        raise RunError(f"{str(folder / 'samples.nc')!r} does not exist: is it a run folder?")
    spec = spec_from_folder(folder)
    tree = dg.load_datatree(folder / "samples.nc")
    q = np.asarray(tree.posterior["q"].values)  # (chain, draw, cell, action)
    truth = np.asarray(tree["constant_data"][dg.TRUTH_VAR].values)
    mask = np.asarray(tree["constant_data"][dg.MASK_VAR].values, dtype=bool)
    size = int(tree.attrs.get("grid_size", spec.escape.size))
    members = int(tree.attrs.get("members_per_seed", 1))
    first_step = int(tree.attrs.get("first_draw_step", 0))
    draw_step = int(tree.attrs.get("draw_step", 0))
    names = [str(a) for a in tree.posterior["action"].values]
    n_chain, n_draw, cells, num_actions = q.shape
    seeds = n_chain // members
    if n_draw < 4:
        raise RunError(f"{str(folder)!r} holds only {n_draw} draws per chain; too few to diagnose")
    trace_cells = list(trace_cells or default_trace_cells(size, mask))

    lines = [
        f"# Diagnostics: {spec.algo} on {spec.env} ({folder})",
        "",
        f"{n_chain} chain(s) = {seeds} seed(s) x {members} member(s), {n_draw} draws each "
        f"(environment steps {first_step:,}..{first_step + (n_draw - 1) * draw_step:,}), "
        f"{int(mask.sum())} scored (cell, action) entries.",
    ]
    if n_chain < 2:
        lines.append(
            "R-hat needs at least 2 chains: train with --set num_chains=4 (LKTD family) or "
            "--seeds 2."
        )
    if seeds > 1:
        lines.append(
            "Chains of different seeds are independent runs (different replay data): R-hat "
            "across them also measures run-to-run agreement."
        )

    # ArviZ summary of every scored entry, reduced per action
    table = dg.posterior_summary(tree, mask=mask)
    table.to_csv(folder / "diagnostics.csv")
    actions = table.index.get_level_values("action").astype(str)
    rows = []
    for label in [*names, "all"]:
        t = table if label == "all" else table[actions == label]
        if len(t):
            rows.append([label, str(len(t))] + [_fmt(f(t[c]), fm) for _, c, f, fm in _CONVERGENCE])
    lines += ["", "## Convergence over scored entries (ArviZ)", ""]
    lines += _md_table(["action", "entries", *(h for h, *_ in _CONVERGENCE)], rows)

    rows = []
    for cell, action in trace_cells:
        x, y = divmod(cell, size)
        row = table.loc[(cell, names[action])] if (cell, names[action]) in table.index else None
        values = [_fmt(row[c], fm) if row is not None else "-" for _, c, fm in _ENTRY]
        rows.append([f"({x}, {y}) {names[action]}", _fmt(truth[cell, action], ".4f"), *values])
    lines += ["", "## Selected Q-values", ""]
    lines += _md_table(["cell (x, y) action", "truth", *(h for h, *_ in _ENTRY)], rows)

    # against the truth: per seed (its members pooled, the paper's coverage centred at each
    # member's last draw), then averaged over seeds
    by_seed = q.reshape(seeds, members, n_draw, cells, num_actions)
    per_seed = [
        dg.interval_metrics(s.reshape(-1, cells, num_actions), s[:, -1], truth, mask)
        for s in by_seed
    ]
    avg = {k: np.mean([m[k] for m in per_seed], axis=0) for k in per_seed[0]}
    rows = [
        [names[a]] + [_fmt(avg[k][a], fm) for _, k, fm in _AGAINST_TRUTH]
        for a in range(num_actions)
    ]
    rows.append(["avg"] + [_fmt(_nanmean(avg[k]), fm) for _, k, fm in _AGAINST_TRUTH])
    lines += ["", "## Against the exact truth (from these draws; per seed, mean over seeds)", ""]
    lines += _md_table(["action", *(h for h, *_ in _AGAINST_TRUTH)], rows)

    weights = mask.sum(axis=0)
    cal = avg["calibration"]  # (levels, A)
    pooled = np.nansum(cal * weights, axis=-1) / max(int(weights.sum()), 1)
    rows = [
        [f"{lv:.0%}", *(_fmt(c, ".4f") for c in cal[i]), _fmt(pooled[i], ".4f")]
        for i, lv in enumerate(dg.DEFAULT_LEVELS)
    ]
    lines += ["", "## Calibration (equal-tailed coverage at nominal level)", ""]
    lines += _md_table(["nominal", *names, "all"], rows)
    first = q[:members].reshape(-1, cells, num_actions)  # the first seed's draws, pooled
    pit = dg.pit_values(first, truth, mask)
    outside = np.mean((pit < 0.025) | (pit > 0.975))
    lines += [
        "",
        f"PIT of the truth under the first seed's draws: mean {pit.mean():.3f} (0.5 if "
        f"calibrated), share below 0.025 or above 0.975: {outside:.3f} (0.05 if calibrated).",
    ]

    # plots
    written = ["calibration.png", "trace.png", "interval_heatmaps.png"]
    title = f"{spec.algo}, seed {spec.first_seed}"
    dg.plot_calibration(first, truth, mask, title=title, path=folder / "calibration.png")
    dg.plot_trace(q, trace_cells, truth, size=size, path=folder / "trace.png")
    dg.plot_interval_heatmaps(
        first, truth, mask, size, title=f"95% intervals: {title}", path=folder / written[2]
    )
    if n_chain >= 2:
        ends, rhat = rhat_over_time(q, mask)
        dg.plot_rhat_over_time(
            first_step + (ends - 1) * draw_step,
            rhat,
            title=f"{spec.algo}: max R-hat over scored entries, draws up to each step",
            path=folder / "rhat_over_time.png",
        )
        written.append("rhat_over_time.png")
        lines += ["", "Max R-hat over scored entries, draws up to each point: "]
        lines[-1] += ", ".join(f"{r:.3f}" for r in rhat) + "."
    lines += ["", f"Wrote {', '.join(written)}, diagnostics.csv (ArviZ summary) and diagnose.md."]
    report = "\n".join(lines) + "\n"
    (folder / "diagnose.md").write_text(report)
    return report


def default_trace_cells(size: int, mask: np.ndarray) -> list[tuple[int, int]]:
    """Start cell E and N, then the cells next to the exit: (size-2, size-1) E and W."""
    from lktd_ppl.envs.escape import START_CELL

    cells = [(START_CELL, 0), (START_CELL, 1)]
    near_exit = (size - 2) * size + (size - 1)
    cells += [(near_exit, 0), (near_exit, 2)]
    return [(c, a) for c, a in cells if c < mask.shape[0] and mask[c, a]]


def rhat_over_time(q: np.ndarray, mask: np.ndarray, points: int = 10) -> tuple[np.ndarray, Any]:
    """Max R-hat over the scored entries of the first ``k`` draws, at ``points`` values of k."""
    from lktd_ppl.diagnostics import max_rhat

    n = q.shape[1]
    ends = np.unique(np.linspace(max(4, n // points), n, points).astype(int))
    return ends, np.array([max_rhat(q[:, :k], mask) for k in ends])


def one_line(err: BaseException) -> str:
    """A one-line message for ``err`` (its first non-empty line)."""
    text = str(err).strip()
    first = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return first or type(err).__name__


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
