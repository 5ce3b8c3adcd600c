"""Task registry: built-in tasks, MoCo JSON files in the data directory, and plug-ins from entry points.

A plug-in package registers a task with an entry point in the group `moco.tasks` whose object is a
`TaskInfo` (or a zero-argument callable returning one).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from moco.cache import cache_dir
from moco.errors import ConfigError, did_you_mean
from moco.tasks.base import Task
from moco.tasks.moco_json import load_moco_json

BUILTIN_DIR = Path(__file__).parent / "data"

# Domain and short description of the datasets of the MoCo paper (files in MOCO_DATA_DIR).
CATALOG: dict[str, tuple[str, str]] = {
    "agieval": ("reasoning", "AGIEval English exams (SAT, LSAT, ...), 4-5 options"),
    "agieval_tiny": ("reasoning", "40-item slice of AGIEval for smoke tests"),
    "arc_challenge": ("science", "ARC-Challenge grade-school science questions"),
    "mmlu_redux": ("knowledge", "MMLU-Redux re-annotated multitask knowledge questions"),
    "gpqa_diamond": ("science", "GPQA diamond graduate-level science questions"),
    "gpqa_main": ("science", "GPQA main set"),
    "gpqa_extended": ("science", "GPQA extended set"),
    "gsm8k": ("math", "GSM8K grade-school math word problems (numeric answers)"),
    "math": ("math", "MATH competition problems (LaTeX answers)"),
    "bbh": ("reasoning", "BIG-Bench Hard tasks (short answers)"),
    "tablemwp_free_text": ("math", "TabMWP table math word problems, free-text answers"),
    "tablemwp_multiple_choice": ("math", "TabMWP table math word problems, multiple choice"),
    "theoremqa": ("math", "TheoremQA theorem-driven STEM questions"),
    "wikidyk": ("knowledge", "Wikipedia 'Did you know' facts, short answers (token F1)"),
    "popqa": ("knowledge", "PopQA long-tail entity questions, alias lists (token F1)"),
    "blend": ("culture", "BLEnD everyday cultural knowledge, multiple choice"),
    "culturebench": ("culture", "CultureBench true/false per (question, option)"),
    "culturalbench_hard": ("culture", "CulturalBench-Hard multiple choice"),
    "sciencemeter": ("science", "ScienceMeter claim support/refute judgements"),
    "sciriff": ("science", "SciRIFF scientific instruction following (short answers)"),
    "truthfulqa": ("safety", "TruthfulQA multiple choice"),
    "coconot": ("safety", "CoCoNot requests that should not be complied with (refusal)"),
    "humaneval": ("code", "HumanEval Python function completion, unit tests"),
    "mbpp": ("code", "MBPP Python programming problems, unit tests"),
    "medqa": ("medical", "MedQA USMLE-style questions"),
    "medmcqa": ("medical", "MedMCQA medical entrance exam questions"),
    "pubmedqa": ("medical", "PubMedQA yes/no/maybe over abstracts"),
    "alpacaeval": ("instruction", "AlpacaEval instructions (reward-model scored)"),
    "human_interest": ("instruction", "Human-interest open questions (reward-model scored)"),
    "human_interest_tiny": ("instruction", "small slice of human_interest"),
    "kaleidoscope": ("values", "Kaleidoscope value/right/duty support or oppose"),
    "infinite_chat_diversity": ("diversity", "Infinite-Chat open prompts scored for diversity vs references"),
}


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
    domain, desc = CATALOG.get(name, ("general", ""))
    return TaskInfo(name, lambda: load_moco_json(path, name=name, domain=domain, description=desc),
                    str(path), domain, desc)


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


def plugin_tasks() -> dict[str, TaskInfo]:
    out: dict[str, TaskInfo] = {}
    for ep in metadata.entry_points(group="moco.tasks"):
        obj = ep.load()
        info = obj() if callable(obj) and not isinstance(obj, TaskInfo) else obj
        if not isinstance(info, TaskInfo):
            raise ConfigError(f"entry point moco.tasks:{ep.name} does not give a TaskInfo")
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
    hint = did_you_mean(name, tasks)
    where = "" if data_dir(data_dir_override) else " (no data directory: set MOCO_DATA_DIR or --data-dir)"
    raise ConfigError(f"unknown task '{name}'{hint}{where}")
