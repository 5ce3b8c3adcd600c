"""A lazy registry: names mapped to `module:attr` targets imported on first use, plug-ins from an entry-point
group, aliases, and did-you-mean errors. Methods, scorers, tasks and backends use it, so `moco validate` and
`moco list` import only what they show (a scripted config never imports torch)."""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

from moco.errors import ConfigError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered name: where its object lives and what is known of it without importing it."""

    name: str
    target: str  # "package.module:attr"
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


def import_target(target: str) -> Any:
    """'package.module:attr' -> the attribute (a target without ':attr' is the module itself)."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names -> lazily imported objects. `group` is the entry-point group whose plug-ins join the registry
    (an entry point's name is the registered name, its value the target); they are listed by name without
    being imported. A target is resolved at every `load` (a dictionary lookup once its module is imported),
    so a test that replaces the attribute on its module is seen."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._imported: set[str] = set()
        self._plugins_scanned = False

    def add(self, name: str, target: str, *, aliases: tuple[str, ...] = (), **meta: Any) -> None:
        self._entries[name] = Entry(name, target, tuple(aliases), meta)
        for a in aliases:
            self._aliases[a] = name

    def remove(self, name: str) -> None:
        """Forget a name and its aliases (a test that registered a plug-in of its own)."""
        e = self._entries.pop(name)
        for a in e.aliases:
            self._aliases.pop(a, None)
        self._imported.discard(name)

    def _scan_plugins(self) -> None:
        if self._plugins_scanned or not self.group:
            return
        self._plugins_scanned = True
        for ep in metadata.entry_points(group=self.group):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, (), {"plugin": True})

    def names(self) -> list[str]:
        self._scan_plugins()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        self._scan_plugins()
        return name in self._entries or name in self._aliases

    def choices(self) -> list[str]:
        """Every name and alias (for suggestions)."""
        self._scan_plugins()
        return [*self._entries, *self._aliases]

    def canonical(self, name: str) -> str:
        """The registered name for a name or alias; a ConfigError with a suggestion otherwise."""
        self._scan_plugins()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise ConfigError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.choices())}")

    def entry(self, name: str) -> Entry:
        return self._entries[self.canonical(name)]

    def load(self, name: str) -> T:
        """The object behind a name, its module imported on first use; a plug-in that fails to import is a
        one-line error (a built-in one is a bug and raises as it is)."""
        key = self.canonical(name)
        e = self._entries[key]
        try:
            obj: T = import_target(e.target)
        except Exception as exc:
            if e.meta.get("plugin"):
                raise ConfigError(f"{self.kind} plug-in '{key}' ({e.target}) failed to load: {exc}") from None
            raise
        self._imported.add(key)
        return obj

    def loaded(self) -> list[str]:
        """The names imported so far (what a listing or a validation actually pulled in)."""
        return sorted(self._imported)
