"""What a method needs from its task and its models, given its params and roles — checked before any model loads.

`runner.plan()` calls `check_needs`, so `moco validate`, `moco run` (before loading a model) and `moco serve`
(before its port opens) refuse the same configs with the same one line. A method declares its needs as a
function `(params, Facts) -> list[Need]`: built-in methods in `moco.methods.needs`, a plug-in through
`@method(..., requires=...)`.

A dev need may name a documented default (a role or a param) that makes dev data unnecessary; only `moco serve`
without a task applies it (binding the role, or setting the param, to the first model) and says so in one
line. A run with a task that has no dev split is refused instead: a published number should not rest on an
arbitrary default.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from moco.errors import ConfigError
from moco.models.base import Capabilities
from moco.models.pool import ModelHandle

Kind = Literal["dev", "scores", "logprobs", "trainable"]


@dataclass(frozen=True)
class Need:
    kind: Kind
    why: str  # completes "method X ...": "picks its summarizer by dev score"
    models: tuple[ModelHandle, ...] = ()  # logprobs / trainable: the models that must provide it
    default_role: str | None = None  # dev: this role, bound, removes the need
    default_param: str | None = None  # dev: this param, set to a pool model, removes the need
    chooses: str = ""  # dev with a default: what the first model becomes ("summarizer", "final model")


@dataclass
class Facts:
    """What a declaration may look at: the parsed params, the roles bound in the config, the pool's models."""

    params: Any
    roles: dict[str, ModelHandle]
    models: list[ModelHandle]

    def bound(self, role: str) -> bool:
        return role in self.roles

    def picks_by_dev(self, ref: Any, role: str) -> bool:
        """A model picked as `ref` if given, else the one bound to `role`, else the dev-best model."""
        return ref is None and role not in self.roles

    def model(self, ref: Any) -> ModelHandle | None:
        """A pool model by index or name (None for anything else, e.g. a model id loaded by the method)."""
        for h in self.models:
            if ref == h.index or ref == h.name:
                return h
        return None


Declaration = Callable[[Any, Facts], list[Need]]


def dev_pick(facts: Facts, ref: Any, role: str, param: str | None, what: str) -> list[Need]:
    """The common case: a model for `role` given by `param`, else the role, else the dev-best model."""
    if not facts.picks_by_dev(ref, role):
        return []
    return [Need("dev", f"picks its {what} by dev score", default_role=role, default_param=param, chooses=what)]


@dataclass
class Checked:
    params: Any
    roles: dict[str, ModelHandle]
    notes: list[str] = field(default_factory=list)


def declaration_for(info: Any) -> Declaration | None:
    if getattr(info, "requires", None) is not None:
        return info.requires
    from moco.methods.needs import BUILTIN

    return BUILTIN.get(info.name)


def check_needs(info: Any, params: Any, task: Any, models: list[ModelHandle], roles: dict[str, ModelHandle],
                capabilities: Callable[[ModelHandle], tuple[Capabilities, str]], *, served: bool = False,
                skip: bool = False) -> Checked:
    """Raise a one-line ConfigError for the first need the task or the models cannot meet. With `served` (moco
    serve without a task) a dev need with a default is met by the first model, and a note says so."""
    declare = None if skip else declaration_for(info)
    out = Checked(params, dict(roles))
    if declare is None:
        return out
    needs = declare(params, Facts(params, out.roles, models))
    if not task.dev and served:
        for n in needs:
            if n.kind == "dev" and (n.default_role or n.default_param):
                out.notes.append(_apply_default(info.name, n, out, models[0]))
        if out.notes:
            needs = declare(out.params, Facts(out.params, out.roles, models))
    for n in needs:
        _check(info.name, n, task, capabilities)
    return out


def _apply_default(method: str, n: Need, out: Checked, first: ModelHandle) -> str:
    if n.default_param and n.default_role:
        out.roles[n.default_role] = first
        how = f"set params.{n.default_param} or bind roles.{n.default_role} to choose"
    elif n.default_param:
        out.params = out.params.model_copy(update={n.default_param: first.index})
        how = f"set params.{n.default_param} to choose"
    else:
        out.roles[n.default_role] = first
        how = f"bind roles.{n.default_role} to choose"
    return (f"{method} {n.why}, and no task gives a dev split: the first model '{first.name}' is its "
            f"{n.chooses or n.default_role or n.default_param} ({how})")


def _check(method: str, n: Need, task: Any, capabilities: Callable[[ModelHandle], tuple[Capabilities, str]]) -> None:
    if n.kind == "dev":
        if not task.dev:
            raise ConfigError(f"method {method} {n.why}: task {task.name} has no dev split{_dev_hint(n, task)}")
    elif n.kind == "scores":
        if task.generation_only:
            raise ConfigError(f"method {method} {n.why}: task {task.name} is generation-only (no gold answers, "
                              "no scorer)")
    elif n.kind in ("logprobs", "trainable"):
        for h in _unique(n.models):
            caps, where = capabilities(h)
            if n.kind == "logprobs" and not caps.logprobs:
                raise ConfigError(f"method {method} {n.why}: model '{h.name}' ({where}) has no per-token "
                                  "log-probabilities (an HF or OpenAI-compatible backend has them)")
            if n.kind == "trainable" and not caps.lora:
                raise ConfigError(f"method {method} {n.why}: model '{h.name}' ({where}) cannot be trained "
                                  "(a local Hugging Face model can)")
    else:  # pragma: no cover - a declaration bug
        raise ValueError(f"unknown need {n.kind!r}")


def _dev_hint(n: Need, task: Any) -> str:
    ways = []
    if n.default_param:
        ways.append(f"set params.{n.default_param}")
    if n.default_role:
        ways.append(f"bind roles.{n.default_role}")
    if task.name == "served":
        ways.insert(0, "give `task:` with a dev split")
    return f" ({' or '.join(ways)})" if ways else ""


def _unique(models: Sequence[ModelHandle]) -> list[ModelHandle]:
    seen: dict[str, ModelHandle] = {}
    for h in models:
        seen.setdefault(h.name, h)
    return list(seen.values())
