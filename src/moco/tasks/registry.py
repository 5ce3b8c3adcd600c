"""Task registry: built-in tasks, MoCo JSON files in the data directory, and plug-ins from entry points.

A plug-in package registers a task with an entry point in the group `moco.tasks` whose object is a
`TaskInfo` (or a zero-argument callable returning one).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moco.cache import cache_dir
from moco.errors import ConfigError, MocoError, did_you_mean
from moco.registry import Registry
from moco.tasks.base import GENERATION_TYPES, Task
from moco.tasks.datasets import CATALOG, DATASETS, Dataset  # noqa: F401 (CATALOG: re-exported)
from moco.tasks.moco_json import load_moco_json

BUILTIN_DIR = Path(__file__).parent / "data"


@dataclass
class TaskInfo:
    name: str
    loader: Callable[[], Task]
    source: str
    domain: str = "general"
    description: str = ""
    task_type: str | None = None  # known without loading (None: read from the file)


def data_dir(override: str | None = None) -> Path | None:
    """--data-dir / task.data_dir, else MOCO_DATA_DIR, else the fetched-data cache if it exists."""
    for cand in (override, os.environ.get("MOCO_DATA_DIR")):
        if cand:
            p = Path(cand).expanduser()
            if not p.is_dir():
                raise ConfigError(f"data directory not found: {p}")
            return p
    fetched = cache_dir() / "data"
    return fetched if fetched.is_dir() else None


def _json_task(path: Path, name: str) -> TaskInfo:
    d = DATASETS.get(name, Dataset("general", ""))
    return TaskInfo(name, lambda: load_moco_json(path, name=name, domain=d.domain, description=d.description,
                                                 group_key=d.group_key),
                    str(path), d.domain, d.description)


def builtin_tasks() -> dict[str, TaskInfo]:
    out = {}
    for p in sorted(BUILTIN_DIR.glob("*.json")):
        with open(p) as f:
            head = json.load(f)
        name = head.get("name", p.stem)
        out[name] = TaskInfo(
            name,
            (lambda p=p, head=head, name=name: load_moco_json(p, name=name, domain=head.get("domain", "general"),
                                                               description=head.get("description", ""))),
            f"built-in ({p.name})",
            head.get("domain", "general"),
            head.get("description", ""),
            head.get("task_type"),
        )
    return out


PLUGINS: Registry[Any] = Registry("task plug-in", group="moco.tasks")


def plugin_tasks() -> dict[str, TaskInfo]:
    out: dict[str, TaskInfo] = {}
    for name in PLUGINS.names():
        obj = PLUGINS.load(name)
        info = obj() if callable(obj) and not isinstance(obj, TaskInfo) else obj
        if not isinstance(info, TaskInfo):
            raise ConfigError(f"entry point moco.tasks:{name} does not give a TaskInfo")
        out[info.name] = info
    return out


def available_tasks(data_dir_override: str | None = None) -> dict[str, TaskInfo]:
    tasks = builtin_tasks()
    d = data_dir(data_dir_override)
    if d is not None:
        for p in sorted(d.glob("*.json")):
            tasks.setdefault(p.stem, _json_task(p, p.stem))
    tasks.update(plugin_tasks())
    return tasks


def resolve_task(name: str, data_dir_override: str | None = None) -> TaskInfo:
    tasks = available_tasks(data_dir_override)
    if name in tasks:
        return tasks[name]
    p = Path(name)
    if p.suffix == ".json" and p.exists():
        return _json_task(p, p.stem)
    from moco.tasks import fetch

    if name in fetch.fetchable():  # a paper dataset no data directory has: fetch it from its source once
        try:
            return _json_task(fetch.fetch_dataset(name), name)
        except MocoError as e:
            raise ConfigError(f"task '{name}' is in no data directory, and fetching it failed: {e}") from None
    hint = did_you_mean(name, tasks)
    where = "" if data_dir(data_dir_override) else " (no data directory: set MOCO_DATA_DIR or --data-dir)"
    raise ConfigError(f"unknown task '{name}'{hint}{where}")


def load_task(settings, data_dir_override: str | None = None) -> Task:
    """The task a config's `task:` section describes: your own file (`path`), or a registered name / JSON file."""
    from moco.tasks.checks import require_gold
    from moco.tasks.user_data import is_user_file, load_user_data

    path = settings.path or (settings.name if is_user_file(settings.name) else None)
    if path:
        name = settings.name if settings.path else Path(path).stem
        task = load_user_data(path, name=name, task_type=settings.task_type, fields=settings.fields,
                              dev_path=settings.dev_path)
    else:
        task = resolve_task(settings.name, data_dir_override or settings.data_dir).loader()
        if settings.task_type:
            task.task_type = settings.task_type
    if task.task_type in GENERATION_TYPES:
        task.generation_only = True
    require_gold(task)  # a task_type override can make a task objective whose rows have no gold
    if settings.dev_limit is not None:
        task.dev = task.dev[: settings.dev_limit]
    if settings.test_limit is not None:
        task.test = task.test[: settings.test_limit]
    return task
