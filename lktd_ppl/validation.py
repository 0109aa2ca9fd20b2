"""Allowed values of every setting, in one table (:data:`RANGES`), checked on the host before
anything is compiled.

:data:`RANGES` maps (config class name, field) to a :class:`Rule`; a class inherits the entries of
its bases (``ControlConfig`` those of ``ReplayProtocol``) unless it has its own.  :func:`problems`
lists what is wrong with a config (nested configs included), :func:`check` raises the first as a
:class:`~lktd_ppl.settings.RunError` of one line naming the field, the value and the allowed range
(``sampler.alpha must be in (0, 1), got 1.5``).  :func:`check_spec` adds the checks across fields
and against the model file (its discount, its number of actions), read from an abstract trace of
the model (:mod:`lktd_ppl.model_facts`: nothing is compiled).

Imports no JAX at import time (the registry's config classes are looked up by name).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lktd_ppl.settings import RunError, field_types

if TYPE_CHECKING:
    from lktd_ppl.model_facts import ModelFacts

__all__ = [
    "RANGES",
    "Choice",
    "Each",
    "Interval",
    "Rule",
    "Text",
    "check",
    "check_spec",
    "problems",
    "rule_for",
]


# -- rules -----------------------------------------------------------------------------------------


class Rule:
    """An allowed set of values: ``ok(value)`` and ``describe()`` (the words after "must be")."""

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def _host_values(value: Any) -> list[float] | None:
    """The numbers of ``value`` (a number or a host/device array of a sweep's grid); None if it is
    not numeric (a traced value inside a vmap also gives None: checked before vmapping)."""
    if _is_number(value):
        return [float(value)]
    if hasattr(value, "__array__") and not isinstance(value, str | bytes):
        import numpy as np

        try:
            arr = np.asarray(value)
        except Exception:  # a tracer: its grid was checked on the host
            return None
        if arr.dtype.kind in "iuf":
            return [float(x) for x in arr.ravel()]
    return None


@dataclasses.dataclass(frozen=True)
class Interval(Rule):
    """A number in [lo, hi] (an end open where ``lo_open`` / ``hi_open``); ``integer``: whole
    numbers only; infinite values only where ``allow_inf`` (NaN never)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    allow_inf: bool = False

    def ok(self, value: Any) -> bool:
        if self.integer and not _is_integer(value):
            return False
        values = _host_values(value)
        if values is None:
            return not self.integer and _traced(value)
        return all(self._ok(x) for x in values)

    def _ok(self, x: float) -> bool:
        if math.isnan(x) or (math.isinf(x) and not self.allow_inf):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def describe(self) -> str:
        kind = "integer" if self.integer else ("number" if self.allow_inf else "finite number")
        if not math.isinf(self.hi):
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"in {left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"
        if self.lo == 0:
            words = f"a {'positive' if self.lo_open else 'non-negative'} {kind}"
        else:
            words = f"{'an' if self.integer else 'a'} {kind} {'>' if self.lo_open else '>='} "
            words += _fmt(self.lo)
        return words + (" (inf allowed)" if self.allow_inf else "")


def _traced(value: Any) -> bool:
    return "Tracer" in type(value).__name__


@dataclasses.dataclass(frozen=True)
class Choice(Rule):
    """One of ``values`` (and, with ``number``, a number that rule allows; e.g. init_sd's)."""

    values: tuple[Any, ...]
    number: Interval | None = None

    def ok(self, value: Any) -> bool:
        if any(value is v or (type(value) is type(v) and value == v) for v in self.values):
            return True
        return self.number is not None and _is_number(value) and self.number.ok(value)

    def describe(self) -> str:
        names = [("none" if v is None else repr(v)) for v in self.values]
        if self.number is not None:
            return f"{self.number.describe()} or {' or '.join(names)}"
        return "one of " + ", ".join(names)


@dataclasses.dataclass(frozen=True)
class Each(Rule):
    """A tuple whose every item satisfies ``item`` (``min_len`` items at least)."""

    item: Interval
    min_len: int = 0

    def ok(self, value: Any) -> bool:
        if not isinstance(value, tuple | list) or len(value) < self.min_len:
            return False
        return all(self.item.ok(v) for v in value)

    def describe(self) -> str:
        size = f"at least {self.min_len} " if self.min_len else ""
        return f"{size}comma-separated values, each {self.item.describe()}"


@dataclasses.dataclass(frozen=True)
class Text(Rule):
    """Any value of type ``kind`` (text, a switch, or a structure its class checks itself);
    ``note`` describes it."""

    note: str = "any value"
    kind: type = str

    def ok(self, value: Any) -> bool:
        return isinstance(value, self.kind)

    def describe(self) -> str:
        return self.note


BOOL = Text("true or false", bool)


def _positive(integer: bool = False) -> Interval:
    return Interval(0, lo_open=True, integer=integer)


COUNT = Interval(1, integer=True)  # an integer >= 1
POSITIVE = _positive()
NON_NEGATIVE = Interval(0)
UNIT_OPEN = Interval(0, 1, lo_open=True, hi_open=True)  # (0, 1)
PROBABILITY = Interval(0, 1)  # [0, 1]
DISCOUNT = Interval(0, 1, lo_open=True)  # (0, 1]
DECAY = Interval(0, 1, hi_open=True)  # [0, 1)
INIT_SD = Choice(("torch", None), NON_NEGATIVE)
WIDTHS = Each(COUNT)
GRAD_NORM = Choice((None,), POSITIVE)

# the shared settings of every network baseline (obs_dim and num_actions come from the environment
# on a control task; on the escape room they are its 2 and 4)
_NETWORK = {
    "obs_dim": COUNT,
    "num_actions": Interval(2, integer=True),
    "hidden": WIDTHS,
    "gamma": DISCOUNT,
    "target_every": COUNT,
    "double_q": BOOL,
    "init_sd": INIT_SD,
}

RANGES: dict[tuple[str, str], Rule] = {
    # the protocol every task shares (agents/protocol.py ReplayProtocol)
    **{
        ("ReplayProtocol", k): r
        for k, r in {
            "total_steps": COUNT,
            "max_episode_steps": COUNT,
            "gamma": DISCOUNT,
            "buffer_size": COUNT,
            "train_start": COUNT,
            "train_every": COUNT,
            "batch_size": COUNT,
            "eps_start": PROBABILITY,
            "eps_end": PROBABILITY,
            "eps_fraction": Interval(0, 1, lo_open=True),
            "q_bound": BOOL,  # the divergence guard's |Q| bound (lktd_ppl.divergence)
            "q_bound_reward": Choice((None,), POSITIVE),  # its R; none: the largest |reward|
        }.items()
    },
    # the escape room (agents/harness.py EscapeConfig)
    **{
        ("EscapeConfig", k): r
        for k, r in {
            "size": Interval(2, integer=True),
            "reward_noise_sd": NON_NEGATIVE,
            "truth_epsilon": PROBABILITY,
            "burn_in_fraction": DECAY,
            "sample_size": COUNT,
            "window": COUNT,
            "evals_per_window": COUNT,
        }.items()
    },
    # control tasks (agents/control.py ControlConfig; GymnasiumConfig inherits these)
    **{
        ("ControlConfig", k): r
        for k, r in {
            "env_id": Text("a gymnax or Gymnasium id (see --env)"),
            "eval_every": COUNT,
            "eval_episodes": COUNT,
            "best_eval_episodes": COUNT,
            "num_probes": COUNT,
            "gradient_steps": COUNT,
            "max_episode_steps": Interval(0, integer=True),  # 0: the environment's own limit
        }.items()
    },
    # the LKTD family's sampler (filter.py SamplerConfig)
    **{
        ("SamplerConfig", k): r
        for k, r in {
            "pseudo_population": POSITIVE,
            "step_size": POSITIVE,
            "alpha": UNIT_OPEN,  # the variance split: alpha and 1 - alpha are both variances
            "friction": NON_NEGATIVE,
            "temperature": NON_NEGATIVE,
            "precondition_max": Interval(1),
            "precondition_decay": PROBABILITY,
            "kappa": COUNT,
            "compat": BOOL,
        }.items()
    },
    # the LKTD family's agent (agents/lktd.py LKTDAgentConfig)
    **{
        ("LKTDAgentConfig", k): r
        for k, r in {
            "model": Text("path/to/file.py:function or NAME:function"),
            "method": Choice(("lktd", "sgld", "sghmc")),
            "num_chains": COUNT,
            "init_sd": NON_NEGATIVE,
            "shared_init": BOOL,
            "own_minibatches": BOOL,
            "step_size_decay": NON_NEGATIVE,
            "step_size_decay_stages": POSITIVE,
            "step_size_drops": Text(
                "(stage, factor) pairs, stages non-negative and increasing, factors positive",
                tuple,
            ),
            "chain_batching": Choice(("auto", "map", "vmap")),
            "target_every": Interval(0, integer=True),  # 0: no target copy
            "chain_devices": COUNT,
        }.items()
    },
    **{("DQNConfig", k): r for k, r in _NETWORK.items()},
    ("DQNConfig", "learning_rate"): POSITIVE,
    ("DQNConfig", "max_grad_norm"): GRAD_NORM,
    ("DQNConfig", "loss"): Choice(("mse", "huber")),
    **{("BootDQNConfig", k): r for k, r in _NETWORK.items()},
    **{
        ("BootDQNConfig", k): r
        for k, r in {
            "head_hidden": WIDTHS,
            "heads": COUNT,
            "learning_rate": POSITIVE,
            "max_grad_norm": GRAD_NORM,
            "core_grad_scale": GRAD_NORM,
            "mask_prob": Interval(0, 1, lo_open=True),
            "mask_per_update": BOOL,
            "resample_every": Interval(0, integer=True),  # 0: per episode
        }.items()
    },
    **{("QRDQNConfig", k): r for k, r in _NETWORK.items()},
    **{
        ("QRDQNConfig", k): r
        for k, r in {
            "num_quantiles": COUNT,
            "kappa": NON_NEGATIVE,  # 0: the pinball loss
            "learning_rate": POSITIVE,
            "max_grad_norm": GRAD_NORM,
        }.items()
    },
    **{("KOVAConfig", k): r for k, r in _NETWORK.items()},
    **{
        ("KOVAConfig", k): r
        for k, r in {
            "eta": DECAY,
            "obs_noise": POSITIVE,
            "init_cov": POSITIVE,
            "lr": POSITIVE,
            "compat": BOOL,
            "memory_limit_bytes": Choice((None,), COUNT),
        }.items()
    },
    **{("LMCDQNConfig", k): r for k, r in _NETWORK.items()},
    **{
        ("LMCDQNConfig", k): r
        for k, r in {
            "step_size": POSITIVE,
            "bias_factor": NON_NEGATIVE,
            "inverse_temperature": Interval(0, lo_open=True, allow_inf=True),  # inf: no noise
            "updates_per_stage": COUNT,
            "beta1": DECAY,
            "beta2": DECAY,
            "lam": POSITIVE,
        }.items()
    },
    # the run itself (config.RunSpec's counts)
    ("RunSpec", "seeds"): COUNT,
    ("RunSpec", "first_seed"): Interval(0, integer=True),
    ("RunSpec", "max_draws"): Interval(2, integer=True),
}


def rule_for(cls: type, name: str) -> Rule | None:
    """The rule of field ``name`` of ``cls``: its own entry, or its nearest base's."""
    for base in cls.__mro__:
        rule = RANGES.get((base.__name__, name))
        if rule is not None:
            return rule
    return None


def _nested(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def problems(config: Any, prefix: str = "") -> list[str]:
    """One line per out-of-range field of ``config`` (nested configs as ``prefix`` + path)."""
    out = []
    for name, tp in field_types(type(config)).items():
        value = getattr(config, name)
        if _nested(tp):
            out += problems(value, f"{prefix}{name}.")
            continue
        rule = rule_for(type(config), name)
        if rule is None:
            out.append(f"{prefix}{name} has no allowed range in lktd_ppl/validation.py RANGES")
        elif not rule.ok(value):
            out.append(f"{prefix}{name} must be {rule.describe()}, got {_show(value)}")
    return out


def _show(value: Any) -> str:
    values = _host_values(value)
    if values is not None and not _is_number(value):  # a grid: the first bad value
        return f"{_fmt_value(values)} (in a grid of {len(values)})"
    return repr(value)


def _fmt_value(values: list[float]) -> str:
    bad = [x for x in values if math.isnan(x) or math.isinf(x)] or values
    return repr(bad[0])


def check(config: Any, prefix: str = "", error: type[ValueError] = RunError) -> None:
    """Raise ``error`` with the first problem of ``config`` (see :func:`problems`)."""
    found = problems(config, prefix)
    if found:
        raise error(found[0])


def check_value(name: str, value: Any, rule: Rule, error: type[ValueError] = RunError) -> None:
    """Raise ``error`` if ``value`` of the setting ``name`` breaks ``rule``."""
    if not rule.ok(value):
        raise error(f"{name} must be {rule.describe()}, got {_show(value)}")


# -- across fields, and against the model file --------------------------------------------------


def protocol_problems(protocol: Any, name: str) -> list[str]:
    """Checks across the fields of a protocol (``name``: ``escape`` or ``control``)."""
    out = []
    p = protocol
    if p.buffer_size < p.batch_size:
        out.append(
            f"{name}.buffer_size ({p.buffer_size}) must be at least {name}.batch_size "
            f"({p.batch_size})"
        )
    if p.train_start < p.batch_size:
        out.append(
            f"{name}.train_start ({p.train_start}) must be at least {name}.batch_size "
            f"({p.batch_size})"
        )
    if p.eps_end > p.eps_start:
        out.append(f"{name}.eps_end ({p.eps_end}) must be at most {name}.eps_start ({p.eps_start})")
    return out


def check_spec(spec: Any, model: bool = True) -> ModelFacts | None:
    """Every check of a run, before anything compiles: each field's range (agent, protocol, the
    run's counts), the protocol across fields and, for the LKTD family (``model``), the model
    file against the environment.  A :class:`RunError` with the first problem; returns what the
    model's trace told (None for the other algorithms)."""
    name = "escape" if spec.control is None else "control"
    found = problems(spec.protocol, f"{name}.")
    found += problems(spec.agent)
    for field in ("seeds", "first_seed", "max_draws"):
        rule = RANGES[("RunSpec", field)]
        if not rule.ok(getattr(spec, field)):
            found.append(f"{field} must be {rule.describe()}, got {getattr(spec, field)!r}")
    if not found:
        found += protocol_problems(spec.protocol, name)
    if found:
        raise RunError(found[0])
    if not (model and spec.algorithm.samples_model):
        return None
    from lktd_ppl.model_facts import model_facts, model_problems
    from lktd_ppl.ssm import ModelError

    obs_dim, num_actions = dims(spec)
    try:
        target = bool(getattr(spec.agent, "target_every", 0))
        facts = model_facts(spec.agent.model, obs_dim, num_actions, target=target)
    except ModelError as e:
        raise RunError(str(e)) from None
    found = model_problems(facts, spec.agent.model, spec.protocol, name, num_actions)
    if found:
        raise RunError(found[0])
    return facts


def dims(spec: Any) -> tuple[int, int]:
    """(obs_dim, num_actions) of a run's environment (the escape room's 2 and 4)."""
    if spec.control is None:
        return 2, 4
    return int(spec.control.obs_dim), int(spec.control.num_actions)


def registry_classes() -> Sequence[type]:
    """Every config class the registry and the protocols use (nested ones included)."""
    from lktd_ppl import registry
    from lktd_ppl.agents.control import ControlConfig
    from lktd_ppl.agents.harness import EscapeConfig
    from lktd_ppl.agents.host_loop import GymnasiumConfig

    out: list[type] = []

    def add(cls: type) -> None:
        if cls in out:
            return
        out.append(cls)
        for tp in field_types(cls).values():
            if _nested(tp):
                add(tp)

    for alg in registry.ALGORITHMS.values():
        add(alg.config_class)
    for cls in (EscapeConfig, ControlConfig, GymnasiumConfig):
        add(cls)
    return out
