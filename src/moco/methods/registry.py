"""Method registry: `@method(...)` registers a `run(ctx, params)` with its typed Params and requirements.

Built-in methods live one per file under methods/{api,text,logit,weight,client_server}/ and register on
import; `moco.methods.catalog` names each one's module so that a lookup imports only that module. A plug-in
package registers methods through the entry-point group `moco.methods`: the entry point names a module, and
importing it runs its `@method` decorators.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_origin

from pydantic import ValidationError

from moco.config import StrictModel, format_validation_error
from moco.errors import ConfigError, did_you_mean
from moco.models.base import Capabilities
from moco.registry import Registry

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
    # what it needs from the task and models by params and roles (moco.requirements; built-ins: methods/needs.py)
    requires: Callable[[Any, Any], list[Any]] | None = None

    def parse_params(self, raw: dict[str, Any]) -> MethodParams:
        try:
            return self.params.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, f"params ({self.name})")) from None

    def describe_params(self) -> list[tuple[str, str, str, str]]:
        """(name, type, default, description) for `moco list methods`."""
        rows = []
        for fname, f in self.params.model_fields.items():
            plain = get_origin(f.annotation) is None and getattr(f.annotation, "__name__", None)
            ann = plain or str(f.annotation).replace("typing.", "")  # Literal['a', 'b'], list[int] | None
            alias = f" (reference key: {f.alias})" if f.alias else ""
            default = "(required)" if f.is_required() else repr(f.default)
            rows.append((fname, ann, default, (f.description or "") + alias))
        return rows


_REGISTRY: dict[str, MethodInfo] = {}  # methods whose decorator has run
_ALIASES: dict[str, str] = {}
_LOADED = False


def _catalog() -> Registry[Any]:
    """Built-in methods by name -> module (moco.methods.catalog), plug-ins from the group `moco.methods`."""
    from moco.methods.catalog import BUILTIN

    reg: Registry[Any] = Registry("method", group="moco.methods")
    for row in BUILTIN:
        reg.add(row.name, row.target, aliases=row.aliases, row=row)
    return reg


METHODS = _catalog()


def method(name: str, *, params: type[MethodParams], level: str, summary: str, aliases: tuple[str, ...] = (),
           **requirements: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `async def run(ctx, params) -> list[Output]` as a collaboration method."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(fn):  # it awaits ctx.generate, so its calls merge with everyone's
            raise TypeError(f"method {name}: write `async def {fn.__name__}(ctx, params)` and `await ctx.generate(...)`"
                            " (see docs/adding-a-method.md)")
        info = MethodInfo(name, fn, params, level, summary, tuple(aliases), **requirements)
        _REGISTRY[name] = info
        for a in aliases:
            _ALIASES[a] = name
        fn.method_info = info  # type: ignore[attr-defined]
        return fn

    return deco


def load_builtin_modules() -> None:
    """Import every built-in method module (all decorators run); listings use the catalog instead."""
    import moco.methods as root

    for mod in pkgutil.walk_packages(root.__path__, prefix="moco.methods."):
        if not mod.name.endswith((".registry", ".base", ".catalog")):
            importlib.import_module(mod.name)


def _load_plugins() -> None:
    for name in METHODS.names():
        if METHODS.entry(name).meta.get("plugin"):
            METHODS.load(name)  # a plug-in's module: importing it runs its @method decorators


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    load_builtin_modules()
    _load_plugins()


def registered() -> dict[str, MethodInfo]:
    """The methods whose decorators have run so far (imports nothing)."""
    return dict(sorted(_REGISTRY.items()))


def all_methods() -> dict[str, MethodInfo]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def _known(name: str) -> MethodInfo | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _ALIASES:
        return _REGISTRY[_ALIASES[name]]
    return None


def get_method(name: str) -> MethodInfo:
    """A method by name or alias, importing only its own module (a plug-in's, or all plug-ins', if unknown)."""
    info = _known(name)
    if info is None and name in METHODS:
        METHODS.load(name)
        info = _known(name) or _known(METHODS.canonical(name))
    if info is None:
        _load_plugins()  # a plug-in may register a method under a name other than its entry point's
        info = _known(name)
    if info is None:
        raise ConfigError(f"unknown method '{name}'{did_you_mean(name, [*METHODS.choices(), *_REGISTRY, *_ALIASES])}")
    return info
