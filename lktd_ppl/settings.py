"""Settings as frozen dataclasses: the types of their fields, values read from text or JSON and
coerced to those types, nested configs flattened to dotted keys and built back (the machinery of
:mod:`lktd_ppl.config`; imports no JAX).
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import types
import typing
from typing import Any


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


def _leaf_keys(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> type of every settable leaf of ``cls`` (nested configs flattened)."""
    out = {}
    for name, tp in field_types(cls).items():
        if _nested_config(tp):
            out.update(_leaf_keys(tp, f"{prefix}{name}."))
        else:
            out[prefix + name] = tp
    return out


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
