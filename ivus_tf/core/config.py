"""Flat, typed dataclass configs loaded from YAML or dicts.

Unknown keys are an error that lists the valid ones; values are checked against the field's type
(bool, int, float, str, tuples of those, Optional[...]). No registries, no override stacks: a CLI flag simply
replaces the field (`dataclasses.replace`).

YAML is read by `parse_yaml`: safe types only, and refused with the line number are anchors and aliases (`&a`,
`*a`: a few lines of nested aliases expand to billions of values, the "billion laughs") and a key given twice in
one mapping (YAML would keep the last one silently). Error messages quote at most 80 characters of a value.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from ivus_tf.core.errors import InputError

T = TypeVar("T")
QUOTE_LIMIT = 80


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, cut to `limit` characters (an error message must stay one readable line)."""
    if isinstance(value, (list, tuple, dict)) and len(value) > limit:  # never build the repr of a huge value
        value = type(value)(list(value)[:limit]) if not isinstance(value, dict) else dict(list(value.items())[:limit])
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document `text` with safe types; `InputError` naming `source` and the line for invalid YAML,
    an anchor or alias, or a duplicate key (module docstring)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise InputError(f"{source} line {event.start_mark.line + 1}: YAML anchors and aliases (&name, "
                                 "*name) are not accepted in configs; write the values out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: the constructor says so
                    break
                if first != key_node.start_mark.line + 1:
                    raise InputError(f"{source} line {key_node.start_mark.line + 1}: key {quote(key)} appears "
                                     f"twice (first on line {first}); keep one")
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise InputError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from error


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
            raise InputError(f"{where}: expected a list, got {quote(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(args[0], item, where) for item in value)
        if len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_check_value(a, item, where) for a, item in zip(args, value))
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where}: {quote(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if type_hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {quote(value)}")
        return value
    if type_hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {quote(value)}")
        return value
    if type_hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise InputError(f"{where}: expected a number, got {quote(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {quote(value)}")
        return float(value)
    if type_hint is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {quote(value)}")
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
            raise InputError(f"{source}: unknown key {quote(key)}{hint}; valid keys: {', '.join(names)}")
        values[key] = _check_value(hints[key], value, f"{source}: {key}")
    instance = dataclasses.replace(base, **values) if base is not None else cls(**values)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate(source)
    return instance


def load_yaml(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """Load dataclass `cls` from a flat YAML file (`parse_yaml`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read config ({getattr(error, 'strerror', None) or error})") from error
    data = parse_yaml(text, str(path)) or {}
    return from_mapping(cls, data, str(path), base=base)


def to_mapping(instance: Any) -> dict:
    """Plain dict of a dataclass (tuples as lists), ready for YAML/JSON."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(instance).items()
    }
