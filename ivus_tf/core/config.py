"""Flat, typed dataclass configs loaded from YAML or dicts.

Unknown keys are an error that lists the valid ones; values are checked against the field's type
(bool, int, float, str, tuples of those, Optional[...]). No registries, no override stacks: a CLI flag simply
replaces the field (`dataclasses.replace`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from ivus_tf.core.errors import InputError

T = TypeVar("T")


def _check_value(type_hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(type_hint)
    args = typing.get_args(type_hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _check_value(option, value, where)
            except InputError as error:
                errors.append(str(error))
        raise InputError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(args[0], item, where) for item in value)
        if len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_check_value(a, item, where) for a, item in zip(args, value))
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if type_hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {value!r}")
        return value
    if type_hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return value
    if type_hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise InputError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if type_hint is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "config", base: T | None = None) -> T:
    """Build dataclass `cls` from `data`, starting from `base` (or the defaults); unknown keys are errors."""
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{source}: unknown key {key!r}{hint}; valid keys: {', '.join(names)}")
        values[key] = _check_value(hints[key], value, f"{source}: {key}")
    instance = dataclasses.replace(base, **values) if base is not None else cls(**values)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate(source)
    return instance


def load_yaml(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """Load dataclass `cls` from a flat YAML file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot read config ({error.strerror or error})") from error
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    return from_mapping(cls, data, str(path), base=base)


def to_mapping(instance: Any) -> dict:
    """Plain dict of a dataclass (tuples as lists), ready for YAML/JSON."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(instance).items()
    }
