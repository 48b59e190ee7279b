"""Model registry: families register a builder; variants are YAML files in ``models/configs/``.

A family builder is ``builder(cfg) -> nn.Module`` whose first parameter is annotated with the family's
frozen config dataclass. A variant file ``models/configs/<name>.yaml`` holds ``family`` and ``args``
(the config fields). :func:`create_model` lays the caller's non-``None`` overrides on top of ``args`` and
builds the config strictly (``av_snn_ros.config.from_dict``): an unknown key or a wrong type raises
``ValueError`` naming it.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from ..config import from_dict, load_yaml
from ..paths import models_dir

CONFIG_SUBDIR = 'configs'
# Modules whose import registers the built-in families.
_FAMILY_MODULES = ('av_snn_ros.models.misnet', 'av_snn_ros.models.baselines', 'av_snn_ros.models.scmrl',
                   'av_snn_ros.models.cnn')

_FAMILIES: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {}


def register_family(name: str, config_cls: type | None = None) -> Callable:
    """Decorator registering ``builder(cfg) -> nn.Module`` as family ``name``.

    The config dataclass is ``config_cls`` or the annotation of the builder's first parameter.
    """
    def decorator(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        cls = config_cls
        if cls is None:
            params = list(inspect.signature(builder).parameters)
            hints = typing.get_type_hints(builder)
            cls = hints.get(params[0]) if params else None
        if cls is None or not dataclasses.is_dataclass(cls):
            raise TypeError(f'family {name!r}: annotate the builder\'s first parameter with its config dataclass')
        if name in _FAMILIES and _FAMILIES[name][1] is not builder:
            raise ValueError(f'model family {name!r} is already registered')
        _FAMILIES[name] = (cls, builder)
        return builder
    return decorator


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def config_dir() -> Path:
    """Folder with the variant YAML files."""
    return models_dir() / CONFIG_SUBDIR


def list_models() -> list[str]:
    """Names of the registered variants (the YAML files in :func:`config_dir`), sorted."""
    folder = config_dir()
    return sorted(p.stem for p in folder.glob('*.yaml')) if folder.is_dir() else []


def list_families() -> list[str]:
    _load_families()
    return sorted(_FAMILIES)


def variant_spec(name: str) -> tuple[str, dict]:
    """``(family, args)`` of variant ``name`` as written in its YAML file."""
    if not isinstance(name, str) or name not in list_models():
        raise ValueError(f'unknown model {name!r}; registered models: {", ".join(list_models())}')
    path = config_dir() / f'{name}.yaml'
    data = load_yaml(path)
    unknown = sorted(set(data) - {'family', 'args', 'description'})
    if unknown or 'family' not in data:
        raise ValueError(f'{path}: a variant needs "family" and optional "args"/"description"; '
                         f'unknown key(s): {", ".join(unknown) or "none"}')
    args = data.get('args') or {}
    if not isinstance(args, dict):
        raise ValueError(f'{path}: "args" must be a mapping')
    return str(data['family']), dict(args)


def model_config(name: str, **overrides: Any) -> Any:
    """The strict config dataclass of variant ``name`` with non-``None`` ``overrides`` applied."""
    family, args = variant_spec(name)
    _load_families()
    if family not in _FAMILIES:
        raise ValueError(f'model {name!r} names unknown family {family!r}; known: {", ".join(sorted(_FAMILIES))}')
    cls, _ = _FAMILIES[family]
    args.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return from_dict(cls, args)
    except TypeError as exc:   # a bad value caught by the dataclass itself
        raise ValueError(f'model {name!r}: {exc}') from exc


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build variant ``name``; overrides (e.g. ``num_classes=10``) replace its YAML ``args``.

    The model gets attributes ``model_name`` and ``config`` (the resolved dataclass).
    """
    cfg = model_config(name, **overrides)
    family, _ = variant_spec(name)
    model = _FAMILIES[family][1](cfg)
    model.model_name = name
    model.config = cfg
    return model

