"""The model registry: build a model from a plain config dict, and get that dict back from a model.

A checkpoint stores ``config = {"name": "<registered name>", **constructor keyword arguments}`` so
that :func:`build_model` can rebuild the network before loading its weights. How a model gets its
config: :func:`register_model` wraps the class's ``__init__`` so that each new instance records
the arguments it was built with (positional ones converted to keywords, defaults filled in).
Nothing else is changed, and the model author writes no ``config`` method that could drift out of
date.

The values must be plain JSON types (None, bool, int, float, str, lists/tuples and dicts of them):
they travel inside checkpoints loaded with ``torch.load(weights_only=True)`` and into JSON
manifests.

Model modules in this package register themselves on import; :func:`build_model` imports them on
demand, so ``build_model({"name": "spec_unet", ...})`` works without importing the module first::

    from labkit.models import register_model

    @register_model("tiny_mlp")
    class TinyMLP(nn.Module):
        def __init__(self, width: int = 16):
            ...

    model = TinyMLP(width=32)
    model_config(model)              # {"name": "tiny_mlp", "width": 32}
    build_model({"name": "tiny_mlp", "width": 32})
"""
from __future__ import annotations

import copy
import functools
import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from labkit.errors import LabkitError

__all__ = ["available_models", "build_model", "model_config", "register_model"]

_REGISTRY: dict[str, type[nn.Module]] = {}
_CONFIG_ATTRIBUTE = "_labkit_config"

M = TypeVar("M", bound=type)


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register an ``nn.Module`` subclass under ``name`` for :func:`build_model`.

    Every instance created afterwards remembers ``{"name": name, **its constructor arguments}``,
    which :func:`model_config` returns. Constructors must not take ``*args`` (the config stores
    keywords only). Registering the same class again (re-running a notebook cell) replaces the
    entry; another class under a taken name raises :class:`~labkit.errors.LabkitError`.
    """
    if not isinstance(name, str) or not name:
        raise LabkitError(f"register_model: the name must be a non-empty string, got {name!r}")

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise LabkitError(
                f"register_model({name!r}): {cls!r} is not a torch.nn.Module subclass")
        previous = _REGISTRY.get(name)
        if previous is not None and (previous.__module__, previous.__qualname__) != (
                cls.__module__, cls.__qualname__):
            raise LabkitError(
                f"register_model({name!r}): the name is taken by "
                f"{previous.__module__}.{previous.__qualname__}; choose another name for "
                f"{cls.__module__}.{cls.__qualname__}")
        signature = inspect.signature(cls.__init__)
        # nn.Module's own __init__ takes *args; a model that does not override it takes nothing
        if cls.__init__ is not nn.Module.__init__ and any(
                p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
            raise LabkitError(
                f"register_model({name!r}): {cls.__qualname__}.__init__ takes *args, which a "
                "config of keyword arguments cannot rebuild; give the arguments names")

        original_init = cls.__init__

        @functools.wraps(original_init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            # Only the class actually being built records its config: a registered parent's
            # __init__ called through super() must not overwrite the subclass's name.
            if type(self) is cls:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                config: dict[str, Any] = {"name": name}
                for key, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[key].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        config.update(value)
                    elif kind is inspect.Parameter.VAR_POSITIONAL:
                        continue  # only nn.Module's own __init__, which accepts no values
                    else:
                        config[key] = value
                # a copy, so that a model editing a list it was given does not change its config
                config = {k: copy.deepcopy(v) if isinstance(v, (list, dict)) else v
                          for k, v in config.items()}
                object.__setattr__(self, _CONFIG_ATTRIBUTE, config)

        cls.__init__ = __init__
        cls.registered_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import_model_modules() -> dict[str, str]:
    """Import every module of this package (they register their models); return import failures."""
    failures: dict[str, str] = {}
    for info in pkgutil.iter_modules(__path__):
        module = f"{__name__}.{info.name}"
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 (a broken module must not hide the others)
            failures[module] = f"{type(exc).__name__}: {exc}"
    return failures


def available_models() -> list[str]:
    """The sorted names :func:`build_model` accepts (imports this package's model modules first)."""
    for module, error in _import_model_modules().items():
        warnings.warn(f"labkit.models: could not import {module} ({error})", stacklevel=2)
    return sorted(_REGISTRY)


def _model_class(name: str) -> type[nn.Module]:
    if name not in _REGISTRY:
        failures = _import_model_modules()
        if name not in _REGISTRY:
            hint = "".join(f"\n  {m} failed to import: {e}" for m, e in failures.items())
            raise LabkitError(
                f"unknown model name {name!r}; available models: {sorted(_REGISTRY) or 'none'}. "
                "A model defined in a notebook must be defined (with @register_model) before it is "
                f"built or loaded.{hint}")
    return _REGISTRY[name]


def _plain(value: Any, where: str, allow_tensors: bool = False) -> Any:
    """A copy of ``value`` made of exact built-in types (and tensors when allowed).

    Subclasses of str/int/float (``torch.__version__``, NumPy scalars) become the built-in type,
    because ``torch.load(weights_only=True)`` refuses any other class. Raises LabkitError naming
    ``where`` for anything else.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic) and np.ndim(value) == 0:
        return _plain(value.item(), where)
    if isinstance(value, bool):
        return bool(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        items = [_plain(item, f"{where}[{i}]", allow_tensors) for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        copied = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise LabkitError(f"{where}: key {key!r} is not a string")
            copied[str(key)] = _plain(item, f"{where}[{key!r}]", allow_tensors)
        return copied
    if allow_tensors and isinstance(value, torch.Tensor):
        return value
    raise LabkitError(
        f"{where} = {value!r} ({type(value).__name__}) is not a plain value; configs and "
        "manifests accept None, bool, int, float, str and lists/dicts of them (so checkpoints "
        "load with torch.load(weights_only=True))")


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build the registered model ``config["name"]`` with the other entries as keyword arguments.

    Raises :class:`~labkit.errors.LabkitError` for an unknown name (listing the available ones) or
    arguments the constructor does not accept.
    """
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise LabkitError(
            f"build_model: expected a dict with a 'name' entry, e.g. {{'name': 'spec_unet', ...}}, "
            f"got {config!r}")
    kwargs = dict(config)
    cls = _model_class(kwargs.pop("name"))
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise LabkitError(
            f"build_model: {config['name']!r} ({cls.__qualname__}) does not accept {kwargs}: {exc}"
        ) from exc
    return cls(**kwargs)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config that rebuilds ``model`` with :func:`build_model`: ``{"name": ..., **kwargs}``.

    Raises :class:`~labkit.errors.LabkitError` when the model's class is not registered or an
    argument is not a plain value.
    """
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper holds the real model
    config = getattr(model, _CONFIG_ATTRIBUTE, None)
    if config is None:
        raise LabkitError(
            f"{type(model).__qualname__} is not a registered model, so it has no config to rebuild "
            "it from; decorate its class with @labkit.models.register_model('<name>')")
    return _plain(config, f"config of model {config['name']!r}")
