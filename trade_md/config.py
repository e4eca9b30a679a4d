"""Strict dataclass configurations with YAML load/save.

An unknown or misspelled key is an error that names the key and suggests the
closest valid one (the research code's reweighting baseline silently did
nothing because of one misspelled key).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Mapping, Type, TypeVar

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
    """Build dataclass ``cls`` from a mapping, recursively, rejecting unknown keys.

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
        raise ConfigError(f"configuration section {where or cls.__name__!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(str(key), list(fields), where))
        ftype = hints.get(key)
        if dataclasses.is_dataclass(ftype) and isinstance(value, Mapping):
            value = from_dict(ftype, value, where=f"{where}{key}.")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid configuration {where or cls.__name__}: {err}") from err


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
