"""Strict loading of YAML/dict configuration into frozen dataclasses.

Unknown keys and wrong types raise ``ValueError`` naming the key, so a typo in a config file fails
loudly instead of silently falling back to a default (the nanoGPT rule, without ``exec``).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar('T')


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path`` with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {path}')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f'{path}: not valid YAML: {exc}') from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping at top level, got {type(data).__name__}')
    return data


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _check_type(value, arg, key)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f'{key}: {value!r} matches none of {tp}')
    if tp is type(None):
        if value is not None:
            raise ValueError(f'{key}: expected null, got {value!r}')
        return None
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f'{key}: expected a list, got {type(value).__name__} {value!r}')
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f'{key}: expected {len(args)} items, got {len(value)}')
            return tuple(_check_type(v, a, f'{key}[{i}]') for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_check_type(v, item_tp, f'{key}[{i}]') for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f'{key}: expected a mapping, got {type(value).__name__}')
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key + '.')
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{key}: expected a number, got {type(value).__name__} {value!r}')
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{key}: expected an integer, got {type(value).__name__} {value!r}')
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f'{key}: expected true/false, got {value!r}')
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f'{key}: expected a string, got {type(value).__name__} {value!r}')
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f'{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}')
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = '') -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and type mismatches raise ``ValueError``."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f'unknown config key(s) {", ".join(prefix + k for k in unknown)} '
                         f'for {cls.__name__}; valid keys: {", ".join(sorted(fields))}')
    kwargs = {name: _check_type(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    """Plain-YAML-friendly dict of a dataclass (tuples become lists)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(obj)
