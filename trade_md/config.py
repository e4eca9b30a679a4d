"""Strict dataclass configurations with YAML load/save.

An unknown or misspelled key is an error that names the key and suggests the
closest valid one (the research code's reweighting baseline silently did
nothing because of one misspelled key).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Type, TypeVar

import numpy as np
import yaml

from ._io import atomic_write_text

__all__ = ["ConfigError", "from_dict", "to_dict", "load_yaml", "save_yaml"]

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


def _unknown_key_message(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown configuration key {where}{key!r}{hint} (valid keys: {', '.join(sorted(valid))})"


def from_dict(cls: Type[C], data: Mapping[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from a mapping, recursively, rejecting unknown keys and wrong types.

    Every value is checked against its field's type hint before the dataclass
    validates it (``int``, ``float``, ``bool``, ``str``, ``Optional[...]``,
    ``tuple[...]``, ``dict`` and nested dataclasses), so a wrong type names
    the key: ``optim.lr must be a number, got 'fast'``.  Numbers given as
    strings (PyYAML reads ``1e-3`` as a string) are converted; ints are
    converted to float for float fields and lists to tuples for tuple fields.

    Parameters
    ----------
    cls : dataclass type
    data : mapping of field name to value; nested dataclass fields take mappings.
    where : prefix for error messages (e.g. ``"train."``).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        section = where.rstrip(".") or cls.__name__
        raise ConfigError(f"configuration section {section!r} must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(str(key), list(fields), where))
        kwargs[key] = _checked(value, hints.get(key, Any), f"{where}{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        if str(err).startswith(tuple(f"{where}{name}" for name in fields)):  # names its key already
            raise ConfigError(str(err)) from err
        section = f"section {where.rstrip('.')!r}" if where else cls.__name__
        raise ConfigError(f"invalid configuration {section}: {err}") from err


_UNIONS = (typing.Union, types.UnionType)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _describe(hint: Any) -> str:
    """``hint`` in words for error messages ("a number", "a list of 2 numbers" ...)."""
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if hint in (tuple, list) or origin in (tuple, list):
        inner = [a for a in args if a is not Ellipsis]
        if not inner:
            return "a list"
        words = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
        what = words.get(inner[0], "values")
        if origin is tuple and Ellipsis not in args:
            return f"a list of {len(args)} {what}"
        return f"a list of {what}"
    if hint is dict or origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping of keys"
    return getattr(hint, "__name__", str(hint))


def _checked(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to the field type ``hint``; ConfigError naming ``key`` if it is not one."""
    def wrong() -> ConfigError:
        return ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")

    if hint is Any or isinstance(hint, TypeVar):
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in _UNIONS:
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _checked(value, arm, key)
            except ConfigError:
                continue
        raise wrong()
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping) or value is None:
            return from_dict(hint, value, where=f"{key}.")
        raise wrong()
    if hint is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise wrong()
    if hint in (int, float):
        number = value
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            number = float(value)
        if isinstance(number, (bool, np.bool_)) or not isinstance(number, numbers.Real):
            raise wrong()
        if hint is float:
            return float(number)
        if isinstance(number, numbers.Integral):
            return int(number)
        if math.isfinite(number) and float(number).is_integer():
            return int(number)
        raise wrong()
    if hint is str:
        if isinstance(value, str):
            return value
        raise wrong()
    if hint in (tuple, list) or origin in (tuple, list):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, np.ndarray)):
            raise wrong()
        items = list(value)
        if origin is tuple and args and Ellipsis not in args:
            if len(items) != len(args):
                raise ConfigError(f"{key} must be {_describe(hint)}, got {len(items)} values: {value!r}")
            items = [_checked(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args))]
        elif args:
            items = [_checked(v, args[0], f"{key}[{i}]") for i, v in enumerate(items)]
        return items if (hint is list or origin is list) else tuple(items)
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise wrong()
        return dict(value)
    return value


def to_dict(obj: Any) -> dict:
    """Convert a (nested) dataclass to plain Python types for YAML/JSON."""
    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return convert(obj)


def load_yaml(cls: Type[C], path: str | Path) -> C:
    """Load dataclass ``cls`` from a YAML file (strict keys)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    return from_dict(cls, data or {})


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass to YAML atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
