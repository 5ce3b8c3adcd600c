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
from moco.tasks.moco_json import load_moco_json

BUILTIN_DIR = Path(__file__).parent / "data"

@dataclass(frozen=True)
class Dataset:
    """What we know of a dataset of the MoCo paper: domain, description, and the scorer its answers need."""

    domain: str
    description: str
    scorer: str | None = None  # None: the default scorer of the file's task type
    options: tuple[tuple[str, Any], ...] = ()  # scorer options
    group_key: str | None = None  # rows sharing this meta field are scored all-or-nothing


_NUMERIC = "numeric_match"
_MC = None  # multiple choice: the task type's default scorer

DATASETS: dict[str, Dataset] = {
    "agieval": Dataset("reasoning", "AGIEval English exams (SAT, LSAT, ...), 4-5 options", _MC),
    "agieval_tiny": Dataset("reasoning", "40-item slice of AGIEval for smoke tests", _MC),
    "arc_challenge": Dataset("science", "ARC-Challenge grade-school science questions", _MC),
    "mmlu_redux": Dataset("knowledge", "MMLU-Redux re-annotated multitask knowledge questions", _MC),
    "gpqa_diamond": Dataset("science", "GPQA diamond graduate-level science questions", _MC),
    "gpqa_main": Dataset("science", "GPQA main set", _MC),
    "gpqa_extended": Dataset("science", "GPQA extended set", _MC),
    "gsm8k": Dataset("math", "GSM8K grade-school math word problems (numeric answers)", _NUMERIC),
    "math": Dataset("math", "MATH competition problems (LaTeX answers)", "math_equivalence"),
    "bbh": Dataset("reasoning", "BIG-Bench Hard tasks (short answers)", "short_answer_exact_match"),
    "tablemwp_free_text": Dataset("math", "TabMWP table math word problems, free-text answers", _NUMERIC),
    "tablemwp_multiple_choice": Dataset("math", "TabMWP table math word problems, multiple choice", _MC),
    "theoremqa": Dataset("math", "TheoremQA theorem-driven STEM questions (typed answers)", "math_equivalence",
                         (("rel_tol", 0.04),)),
    "wikidyk": Dataset("knowledge", "Wikipedia 'Did you know' facts, short answers (token F1)", "token_f1"),
    "popqa": Dataset("knowledge", "PopQA long-tail entity questions, alias lists (token F1)", "token_f1"),
    "blend": Dataset("culture", "BLEnD everyday cultural knowledge, multiple choice", _MC),
    "culturebench": Dataset("culture", "CulturalBench-Hard: True/False per (question, option), all-or-nothing per question",
                            "label_match", (("labels", ("True", "False")),), group_key="question_id"),
    "culturalbench_hard": Dataset("culture", "CulturalBench multiple choice", _MC),
    "sciencemeter": Dataset("science", "ScienceMeter claim support/refute judgements", _MC),
    "sciriff": Dataset("science", "SciRIFF citation-intent classification (6 labels)", "label_match",
                       (("labels", ("Background", "Uses", "CompareOrContrast", "Motivation", "Extends", "FutureWork")),)),
    "truthfulqa": Dataset("safety", "TruthfulQA multiple choice", _MC),
    "coconot": Dataset("safety", "CoCoNot requests that should not be complied with (refusal judge)", "refusal_judge"),
    "humaneval": Dataset("code", "HumanEval Python function completion, unit tests", "code_execution"),
    "mbpp": Dataset("code", "MBPP Python programming problems, unit tests", "code_execution"),
    "medqa": Dataset("medical", "MedQA USMLE-style questions", _MC),
    "medmcqa": Dataset("medical", "MedMCQA medical entrance exam questions", _MC),
    "pubmedqa": Dataset("medical", "PubMedQA yes/no/maybe over abstracts", "label_match",
                        (("labels", ("yes", "no", "maybe")),)),
    "alpacaeval": Dataset("instruction", "Alpaca instructions (reward-model scored)", "reward_model_score"),
    "human_interest": Dataset("instruction", "Human-interest open questions (reward-model scored)", "reward_model_score"),
    "human_interest_tiny": Dataset("instruction", "small slice of human_interest", "reward_model_score"),
    "kaleidoscope": Dataset("values", "Kaleidoscope value/right/duty support or oppose", _MC),
    "infinite_chat_diversity": Dataset("diversity", "Infinite-Chat open prompts scored for diversity vs references",
                                       "embedding_diversity"),
}

# Domain and short description per dataset (kept for callers of the first version).
CATALOG: dict[str, tuple[str, str]] = {k: (d.domain, d.description) for k, d in DATASETS.items()}


def dataset_scorer(name: str):
    """The scorer choice of a known dataset (None: use its task type's default)."""
    from moco.scoring.registry import ScorerChoice

    d = DATASETS.get(name)
    if d is None or (d.scorer is None and d.group_key is None):
        return None
    return ScorerChoice(d.scorer or "multiple_choice", dict(d.options), d.group_key)


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
