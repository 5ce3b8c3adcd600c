"""Method registry: `@method(...)` registers a `run(ctx, params)` with its typed Params and requirements.

Built-in methods live one per file under methods/{api,text,logit,weight,client_server}/ and register on
import. A plug-in package registers methods through the entry-point group `moco.methods`: the entry point
names a module, and importing it runs its `@method` decorators.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from pydantic import ValidationError

from moco.config import StrictModel, format_validation_error
from moco.errors import ConfigError, did_you_mean
from moco.models.base import Capabilities

LEVELS = ("baseline", "api", "text", "logit", "weight", "client_server")


class MethodParams(StrictModel):
    """Base of every method's hyperparameters: unknown keys are rejected with a suggestion."""


@dataclass
class MethodInfo:
    name: str
    run: Callable[..., Any]
    params: type[MethodParams]
    level: str
    summary: str
    aliases: tuple[str, ...] = ()
    min_models: int = 1
    max_models: int | None = None
    objective_task_only: bool = False
    needs: Capabilities = field(default_factory=lambda: Capabilities(chat=True))
    same_tokenizer: bool = False
    same_architecture: bool = False
    trainable: bool = False
    roles: dict[str, str] = field(default_factory=dict)  # role -> what it does (and its default)
    paper: str = ""
    # method-specific checks that need no loaded model: (params, pool) -> lines for `moco validate`;
    # raises ConfigError when the combination is impossible
    validate: Callable[[Any, Any], list[str]] | None = None

    def parse_params(self, raw: dict[str, Any]) -> MethodParams:
        try:
            return self.params.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, f"params ({self.name})")) from None

    def describe_params(self) -> list[tuple[str, str, str, str]]:
        """(name, type, default, description) for `moco list methods`."""
        rows = []
        for fname, f in self.params.model_fields.items():
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
            alias = f" (reference key: {f.alias})" if f.alias else ""
            default = "(required)" if f.is_required() else repr(f.default)
            rows.append((fname, ann, default, (f.description or "") + alias))
        return rows


_REGISTRY: dict[str, MethodInfo] = {}
_ALIASES: dict[str, str] = {}
_LOADED = False


def method(name: str, *, params: type[MethodParams], level: str, summary: str, aliases: tuple[str, ...] = (),
           **requirements: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `run(ctx, params) -> list[Output]` as a collaboration method."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        info = MethodInfo(name, fn, params, level, summary, tuple(aliases), **requirements)
        _REGISTRY[name] = info
        for a in aliases:
            _ALIASES[a] = name
        fn.method_info = info  # type: ignore[attr-defined]
        return fn

    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import moco.methods as root

    for mod in pkgutil.walk_packages(root.__path__, prefix="moco.methods."):
        if not mod.name.endswith((".registry", ".base")):
            importlib.import_module(mod.name)
    for ep in metadata.entry_points(group="moco.methods"):
        try:
            ep.load()
        except Exception as e:  # a broken plug-in must not break the whole CLI
            raise ConfigError(f"method plug-in '{ep.name}' ({ep.value}) failed to load: {e}") from None


def all_methods() -> dict[str, MethodInfo]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> MethodInfo:
    _load_all()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _ALIASES:
        return _REGISTRY[_ALIASES[name]]
    raise ConfigError(f"unknown method '{name}'{did_you_mean(name, [*_REGISTRY, *_ALIASES])}")
